"""open-iscsi's node database on disk (facts §4.5), read and written compatibly.

Layout under the root (default /etc/iscsi, or $ISCSIKIT_DB_ROOT):

    nodes/<target>/<addr>,<port>,<tpgt>/<iface>      node record (dirs 0700, files 0600)
    nodes/<target>/<addr>,<port>                     legacy record when tpgt is unknown (-1)
    static/<target>,<addr>,<port>,<tpgt>,<iface>     symlink to the portal dir (`-o new`)
    send_targets/<addr>,<port>/st_config             sendtargets discovery record
    isns/<addr>,<port>/isns_config                   iSNS discovery record
    ifaces/<name>                                    iface record (default/iser are built in)
    iscsid.conf, initiatorname.iscsi

Every write goes to a temp file that is fsync'ed and renamed, under an
exclusive fcntl lock taken with a timeout; unlike iscsiadm (which proceeds
unlocked after 30 s, issue #95) a lock we cannot get is an error. Records are
written 0600 because they may hold CHAP secrets.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections import namedtuple
from collections.abc import Iterator

from . import records as R
from .errors import IscsiError

DEFAULT_ROOT = "/etc/iscsi"
ENV_ROOT = "ISCSIKIT_DB_ROOT"
LOCK_NAME = ".iscsikit.lock"
LOCK_TIMEOUT = 30.0
DEFAULT_PORT = 3260
UNKNOWN_TPGT = -1


class DBError(IscsiError):
    """A database operation that failed, with iscsiadm's exit code for it (IDBM, 6, by default)."""

    def __init__(self, message: str, code: int = 6) -> None:
        super().__init__(code, message)


class LockTimeout(DBError):
    pass


# namedtuple and plain classes, not dataclasses or typing.NamedTuple: importing
# dataclasses (it pulls in inspect, ast, tokenize) cost the CLI a sixth of its
# start-up in the lab guest, and typing another few percent.
class NodeId(namedtuple("NodeId", "target address port tpgt iface")):
    """A record's identity: target (str), address (str), port (int), tpgt (int), iface (str)."""
    __slots__ = ()

    @property
    def portal_dir(self) -> str:
        return f"{self.address},{self.port},{self.tpgt}"

    @property
    def legacy(self) -> bool:
        return self.tpgt == UNKNOWN_TPGT


class Record:
    """A record's values keyed by the record key names of records.py."""

    def __init__(self, fields: tuple[R.Field, ...], values: dict[str, str]):
        self.fields, self.values = fields, values

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and vars(other) == vars(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"

    def __getitem__(self, key: str) -> str:
        return self.values[key]

    def lines(self, *, for_file: bool = False, show_secrets: bool = False) -> list[str]:
        return R.render(self.fields, self.values, for_file=for_file, show_secrets=show_secrets)


class Node(Record):
    def __init__(self, fields: tuple[R.Field, ...], values: dict[str, str], id: NodeId):
        super().__init__(fields, values)
        self.id = id


def format_portal(address: str, port: int) -> str:
    """iscsiadm's ip:port: dotted addresses bare, anything else in brackets."""
    return f"{address}:{port}" if "." in address else f"[{address}]:{port}"


def parse_portal(text: str) -> tuple[str, int | None, int | None]:
    """`ip[:port][,tpgt]`, IPv6 as `[addr]:port`; returns (address, port|None, tpgt|None)."""
    tpgt = None
    if "," in text:
        text, _, tp = text.rpartition(",")
        tpgt = R.atoi(tp)
    port = None
    if text.startswith("["):
        addr, _, rest = text[1:].partition("]")
        if rest.startswith(":"):
            port = R.atoi(rest[1:])
        return addr, port, tpgt
    if text.count(":") == 1:
        addr, _, p = text.partition(":")
        return addr, R.atoi(p), tpgt
    return text, port, tpgt


def parse_iscsid_conf(text: str) -> dict[str, str]:
    return R.parse_lines(text)


class NodeDB:
    def __init__(self, root: str | os.PathLike | None = None, lock_timeout: float = LOCK_TIMEOUT):
        self.root = os.fspath(root or os.environ.get(ENV_ROOT) or DEFAULT_ROOT)
        self.lock_timeout = lock_timeout
        self._lock_depth = 0
        self._lock_fd: int | None = None
        self._conf: dict[str, str] | None = None

    # -- paths ----------------------------------------------------------------
    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    # -- locking --------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the database's exclusive lock (re-entrant within this object)."""
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        os.makedirs(self.root, mode=0o755, exist_ok=True)
        lock_path = self.path(LOCK_NAME)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + self.lock_timeout
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as e:
                    if e.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    if time.monotonic() >= deadline:
                        raise LockTimeout(
                            f"could not lock the node database {lock_path} within "
                            f"{self.lock_timeout:g} s (another iscsiadm/iscsikit-adm holds it)") from None
                    time.sleep(0.01)
        except BaseException:
            os.close(fd)
            raise
        self._lock_fd, self._lock_depth = fd, 1
        try:
            yield
        finally:
            self._lock_depth = 0
            self._lock_fd = None
            os.close(fd)  # closing drops the flock

    def _require_lock(self) -> None:
        if not self._lock_depth:
            raise RuntimeError("node database write outside NodeDB.locked()")

    # -- file primitives ------------------------------------------------------
    def _mkdirs(self, path: str) -> None:
        # os.makedirs gives only the leaf its mode; every dir below the root is 0700
        rel = os.path.relpath(path, self.root)
        current = self.root
        os.makedirs(current, mode=0o755, exist_ok=True)
        for part in ([] if rel == "." else rel.split(os.sep)):
            current = os.path.join(current, part)
            try:
                os.mkdir(current, 0o700)
            except FileExistsError:
                pass

    def _write_atomic(self, path: str, text: str, mode: int = 0o600) -> None:
        self._require_lock()
        directory = os.path.dirname(path)
        self._mkdirs(directory)
        import tempfile   # here: listing and login only read, and the import is a tenth of a CLI start
        fd, tmp = tempfile.mkstemp(prefix=".tmp.", dir=directory)  # created 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fchmod(f.fileno(), mode)
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    @staticmethod
    def _read(path: str) -> str:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return f.read()

    @staticmethod
    def _listdir(path: str) -> list[str]:
        # Unsorted on purpose: iscsiadm walks records in readdir order for its
        # operations, and os.listdir returns that same order.
        try:
            return [n for n in os.listdir(path) if not n.startswith(".")]
        except FileNotFoundError:
            return []

    def _rmdir_if_empty(self, path: str) -> None:
        with contextlib.suppress(OSError):
            os.rmdir(path)

    # -- iscsid.conf / initiator name ------------------------------------------
    def iscsid_conf(self) -> dict[str, str]:
        if self._conf is None:
            try:
                self._conf = parse_iscsid_conf(self._read(self.path("iscsid.conf")))
            except FileNotFoundError:
                self._conf = {}
        return self._conf

    def initiator_name(self) -> str | None:
        try:
            text = self._read(self.path("initiatorname.iscsi"))
        except FileNotFoundError:
            return None
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() == "InitiatorName":
                return value.strip() or None
        return None

    def seeded_defaults(self, fields: tuple[R.Field, ...]) -> dict[str, str]:
        """Code defaults overlaid with iscsid.conf, as iscsiadm does when iscsid answers."""
        values = R.defaults(fields)
        conf = self.iscsid_conf()
        for f in fields:
            if f.seeded and f.key in conf:
                with contextlib.suppress(R.RecordError):
                    values[f.key] = R.check_value(f, conf[f.key])[0]
        return values

    # -- ifaces ---------------------------------------------------------------
    def iface_names(self) -> list[str]:
        return sorted(n for n in self._listdir(self.path("ifaces")) if n not in R.BUILTIN_IFACES)

    def iface_exists(self, name: str) -> bool:
        return name in R.BUILTIN_IFACES or os.path.isfile(self.path("ifaces", name))

    def read_iface(self, name: str) -> Record:
        values = R.defaults(R.IFACE_FIELDS)
        if name in R.BUILTIN_IFACES:
            values.update(R.BUILTIN_IFACES[name])
            return Record(R.IFACE_FIELDS, values)
        path = self.path("ifaces", name)
        try:
            text = self._read(path)
        except OSError as e:
            raise DBError(f"iSCSI ERROR: Failed to open {path} using read mode: "
                          f"{e.errno} {os.strerror(e.errno or 0)}", 6) from None
        values.update({k: v for k, v in R.parse_lines(text).items() if k in R.IFACE_BY_KEY})
        values["iface.iscsi_ifacename"] = name
        return Record(R.IFACE_FIELDS, values)

    def write_iface(self, rec: Record) -> None:
        name = rec["iface.iscsi_ifacename"]
        if name in R.BUILTIN_IFACES:
            raise DBError(f"iface {name} is a special interface and is not stored in "
                          f"{self.path('ifaces')}.", 7)
        with self.locked():
            self._write_atomic(self.path("ifaces", name), "\n".join(rec.lines(for_file=True)) + "\n")

    def new_iface(self, name: str) -> Record:
        values = R.defaults(R.IFACE_FIELDS)
        values.update({"iface.iscsi_ifacename": name, "iface.transport_name": "tcp"})
        rec = Record(R.IFACE_FIELDS, values)
        self.write_iface(rec)
        return rec

    def delete_iface(self, name: str) -> None:
        if name in R.BUILTIN_IFACES:
            raise DBError(f"iface {name} is a special interface and cannot be deleted.", 7)
        with self.locked():
            try:
                os.unlink(self.path("ifaces", name))
            except FileNotFoundError:
                raise DBError(f"Could not delete iface {name}", 6) from None

    # -- nodes ----------------------------------------------------------------
    def node_ids(self) -> list[NodeId]:
        """Every node record, in iscsiadm's readdir walk order."""
        out: list[NodeId] = []
        nodes = self.path("nodes")
        for target in self._listdir(nodes):
            tdir = os.path.join(nodes, target)
            if not os.path.isdir(tdir):
                continue
            for portal in self._listdir(tdir):
                pdir = os.path.join(tdir, portal)
                parts = portal.rsplit(",", 2)
                if os.path.isdir(pdir) and len(parts) == 3:
                    for iface in self._listdir(pdir):
                        out.append(NodeId(target, parts[0], R.atoi(parts[1]), R.atoi(parts[2]), iface))
                elif os.path.isfile(pdir):
                    addr, _, port = portal.rpartition(",")
                    if addr:
                        iface = self._legacy_iface(pdir)
                        out.append(NodeId(target, addr, R.atoi(port), UNKNOWN_TPGT, iface))
        return out

    def _legacy_iface(self, path: str) -> str:
        try:
            values = R.parse_lines(self._read(path))
        except OSError:
            return R.DEFAULT_IFACE
        return values.get("iface.iscsi_ifacename") or R.DEFAULT_IFACE

    def node_path(self, nid: NodeId) -> str:
        if nid.legacy:
            return self.path("nodes", nid.target, f"{nid.address},{nid.port}")
        return self.path("nodes", nid.target, nid.portal_dir, nid.iface)

    def find_nodes(self, target: str | None = None, address: str | None = None,
                   port: int | None = None, iface: str | None = None) -> list[NodeId]:
        """Records matching iscsiadm's -T/-p/-I selectors (a -p tpgt never narrows)."""
        if address is not None and port is None:
            port = DEFAULT_PORT
        return [n for n in self.node_ids()
                if (target is None or n.target == target)
                and (address is None or n.address == address)
                and (port is None or n.port == port)
                and (iface is None or n.iface == iface)]

    def read_node(self, nid: NodeId) -> Node:
        values = R.defaults(R.NODE_FIELDS)
        iface = self.read_iface(nid.iface) if self.iface_exists(nid.iface) else None
        if iface is not None:
            values.update(iface.values)
        try:
            stored = R.parse_lines(self._read(self.node_path(nid)))
        except OSError as e:
            raise DBError(f"could not read node record {self.node_path(nid)}: {e.strerror}") from None
        values.update({k: v for k, v in stored.items() if k in R.FIELD_BY_KEY})
        values.update({"node.name": nid.target, "node.tpgt": str(nid.tpgt),
                       "node.conn[0].address": nid.address, "node.conn[0].port": str(nid.port)})
        return Node(R.NODE_FIELDS, values, nid)

    def new_node_values(self, nid: NodeId, iface: Record | None = None,
                        discovery_type: str = "static") -> dict[str, str]:
        values = self.seeded_defaults(R.NODE_FIELDS)
        iface = iface or self.read_iface(nid.iface)
        values.update(iface.values)
        values.update({"node.name": nid.target, "node.tpgt": str(nid.tpgt),
                       "node.conn[0].address": nid.address, "node.conn[0].port": str(nid.port),
                       "node.discovery_type": discovery_type})
        return values

    def write_node(self, node: Node, static_link: bool = False) -> None:
        nid = node.id
        text = "\n".join(node.lines(for_file=True)) + "\n"
        with self.locked():
            tdir = self.path("nodes", nid.target)
            self._mkdirs(tdir)
            legacy_file = os.path.join(tdir, f"{nid.address},{nid.port}")
            if not nid.legacy and os.path.isfile(legacy_file) and not os.path.islink(legacy_file):
                # iscsiadm upgrades a tpgt-less record once the tpgt is known
                os.unlink(legacy_file)
            self._write_atomic(self.node_path(nid), text)
            if static_link and not nid.legacy:
                self._link(self.path("static"),
                           f"{nid.target},{nid.address},{nid.port},{nid.tpgt},{nid.iface}",
                           self.path("nodes", nid.target, nid.portal_dir))

    def _link(self, directory: str, name: str, dest: str) -> None:
        self._mkdirs(directory)
        link = os.path.join(directory, name)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(link)
        os.symlink(dest, link)

    def create_node(self, nid: NodeId) -> Node:
        node = Node(R.NODE_FIELDS, self.new_node_values(nid), nid)
        self.write_node(node, static_link=True)
        return node

    def update_node(self, nid: NodeId, pairs: list[tuple[str, str]]) -> list[str]:
        """Apply -n/-v pairs under the lock; returns warning lines. Refusals raise RecordError."""
        with self.locked():
            node = self.read_node(nid)
            warnings = apply_pairs(node.values, R.FIELD_BY_KEY, pairs)
            self.write_node(node)
        return warnings

    def delete_node(self, nid: NodeId) -> None:
        with self.locked():
            path = self.node_path(nid)
            try:
                os.unlink(path)
            except FileNotFoundError:
                raise DBError(f"Could not stat {path} to delete node", 6) from None
            link_name = f"{nid.target},{nid.address},{nid.port},{nid.tpgt},{nid.iface}"
            for d in [self.path("static")] + [self.path(k, s) for k in ("send_targets", "isns")
                                              for s in self._listdir(self.path(k))]:
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(d, link_name))
            if not nid.legacy:
                self._rmdir_if_empty(os.path.dirname(path))
            self._rmdir_if_empty(self.path("nodes", nid.target))

    # -- discovery records ------------------------------------------------------
    _DISC_DIRS = {"sendtargets": ("send_targets", "st_config"), "isns": ("isns", "isns_config")}

    def discovery_ids(self, dtype: str) -> list[tuple[str, int]]:
        base, fname = self._DISC_DIRS[dtype]
        out = []
        for name in self._listdir(self.path(base)):
            addr, _, port = name.rpartition(",")
            if addr and os.path.isfile(self.path(base, name, fname)):
                out.append((addr, R.atoi(port)))
        return out

    def discovery_path(self, dtype: str, address: str, port: int) -> str:
        base, fname = self._DISC_DIRS[dtype]
        return self.path(base, f"{address},{port}", fname)

    def read_discovery(self, dtype: str, address: str, port: int) -> Record | None:
        fields = R.DISCOVERY_FIELDS[dtype]
        try:
            stored = R.parse_lines(self._read(self.discovery_path(dtype, address, port)))
        except FileNotFoundError:
            return None
        values = R.defaults(fields)
        values.update({k: v for k, v in stored.items() if k in {f.key for f in fields}})
        values.update({"discovery.type": dtype, "discovery.sendtargets.address": address,
                       "discovery.sendtargets.port": str(port)})
        return Record(fields, values)

    def write_discovery(self, rec: Record) -> None:
        dtype = rec["discovery.type"]
        path = self.discovery_path(dtype, rec["discovery.sendtargets.address"],
                                   R.atoi(rec["discovery.sendtargets.port"]))
        with self.locked():
            self._write_atomic(path, "\n".join(rec.lines(for_file=True)) + "\n")

    def create_discovery(self, dtype: str, address: str, port: int) -> Record:
        fields = R.DISCOVERY_FIELDS[dtype]
        values = self.seeded_defaults(fields)
        values.update({"discovery.type": dtype, "discovery.sendtargets.address": address,
                       "discovery.sendtargets.port": str(port)})
        rec = Record(fields, values)
        self.write_discovery(rec)
        return rec

    def update_discovery(self, dtype: str, address: str, port: int,
                         pairs: list[tuple[str, str]]) -> list[str]:
        with self.locked():
            rec = self.read_discovery(dtype, address, port)
            if rec is None:
                raise DBError(f"Discovery record [{address},{port}] not found.", 6)
            warnings = apply_pairs(rec.values, {f.key: f for f in rec.fields}, pairs)
            self.write_discovery(rec)
        return warnings

    def link_discovered(self, dtype: str, address: str, port: int, nid: NodeId) -> None:
        """Record that discovery at address:port found node `nid` (iscsiadm's per-portal symlink)."""
        base, _ = self._DISC_DIRS[dtype]
        with self.locked():
            self._link(self.path(base, f"{address},{port}"),
                       f"{nid.target},{nid.address},{nid.port},{nid.tpgt},{nid.iface}",
                       self.path("nodes", nid.target, nid.portal_dir))

    def delete_discovery(self, dtype: str, address: str, port: int) -> None:
        with self.locked():
            path = self.discovery_path(dtype, address, port)
            if not os.path.isfile(path):
                raise DBError(f"Discovery record [{address},{port}] not found.", 6)
            directory = os.path.dirname(path)
            # the portal dir also links the nodes this discovery found: they go with it
            for name in self._listdir(directory):
                parts = name.rsplit(",", 4)
                if name == os.path.basename(path) or len(parts) != 5:
                    continue
                nid = NodeId(parts[0], parts[1], R.atoi(parts[2]), R.atoi(parts[3]), parts[4])
                with contextlib.suppress(DBError):
                    self.delete_node(nid)
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(directory, name))
            os.unlink(path)
            self._rmdir_if_empty(directory)


def apply_pairs(values: dict[str, str], table: dict[str, R.Field],
                pairs: list[tuple[str, str]]) -> list[str]:
    """Check every pair first so a refused pair leaves the record untouched."""
    staged, warnings = {}, []
    for key, value in pairs:
        field = table.get(key)
        if field is None:
            raise R.RecordError([f"Cannot modify {key}. Invalid param name."])
        if field.update is not R.Update.YES:
            raise R.RecordError([f"Cannot modify {key}. {field.update.value}"],
                                summary=field.update is not R.Update.IFACE)
        stored, warn = R.check_value(field, value)
        staged[key] = stored
        warnings.extend(warn)
    values.update(staged)
    return warnings

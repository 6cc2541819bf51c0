"""`iscsikit-adm` (also installed as `iscsiadm`): open-iscsi 2.1.8's command line.

Programs such as os-brick, CSI drivers, vdsm, libvirt and Proxmox run
iscsiadm and branch on its exact stdout lines, stderr lines and exit codes
(interop-facts §2.9), so this module copies them as Debian's 2.1.8 binary
prints them, down to getopt_long's messages and unique long-option prefixes.

Shape: a getopt_long emulation, a per-mode table of accepted letters, and a
dispatch table of handlers. Database modes run here against the node DB;
the rows that reach the daemon or the kernel (`DAEMON_OPS`: login, logout,
rescan, stats, session, discovery, kill) live in adm_session.py and are
imported only when a command needs them.

Imports stay light: the CLI also runs in a slow emulated guest.
"""

from __future__ import annotations

import importlib
import os
import sys

from collections.abc import Callable, Iterator

from ..proto.exitcodes import MESSAGES, ExitCode


class _Lazy:
    """A module imported on first use: `-m session` and the parser never need the record table,
    and every import costs (in the lab guest each one is a round of 9p reads)."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str):
        module = importlib.import_module(self._name)
        self.__dict__.update(module.__dict__)
        return getattr(module, attr)


ndb = _Lazy("iscsikit.initiator.nodedb")
R = _Lazy("iscsikit.initiator.records")

PROG = "iscsiadm"

# -- getopt_long emulation -------------------------------------------------------
SHORT_WITH_ARG = set("mapbcCPTHiIUkLdrnvotxA")
SHORT_NO_ARG = set("RlDVhsSuW")
# (long name, takes argument, letter): iscsiadm's table order, which glibc uses
# when it lists the candidates of an ambiguous prefix
LONG_OPTIONS: tuple[tuple[str, bool, str], ...] = (
    ("mode", True, "m"), ("portal", True, "p"), ("targetname", True, "T"),
    ("interface", True, "I"), ("op", True, "o"), ("type", True, "t"), ("name", True, "n"),
    ("value", True, "v"), ("host", True, "H"), ("sid", True, "r"), ("rescan", False, "R"),
    ("print", True, "P"), ("discover", False, "D"), ("login", False, "l"),
    ("loginall", True, "L"), ("logout", False, "u"), ("logoutall", True, "U"),
    ("stats", False, "s"), ("killiscsid", True, "k"), ("debug", True, "d"),
    ("show", False, "S"), ("index", True, "x"), ("interval", True, "i"),
    ("flashnode_idx", True, "x"), ("portal_type", True, "A"), ("help", False, "h"),
    ("version", False, "V"), ("submode", True, "C"), ("ip", True, "a"),
    ("packetsize", True, "b"), ("count", True, "c"), ("no_wait", False, "W"),
    # iscsikit's own: machine-readable listings (not in open-iscsi)
    ("json", False, "J"),
)

# letters each mode accepts (facts §4.1); --json is ours and allowed everywhere
MODE_LETTERS: dict[str, str] = {
    "discovery": "DSIPdmntplovJ",
    "discoverydb": "DSIPdmntplovJ",
    "node": "RsPIdmlSonvupTULWJ",
    "session": "PiRdrmusonSvJ",
    "host": "CHdmPotnvxAJ",
    "iface": "HIdnvmPoCabciJ",
    "fw": "dmlWnvJ",
}


class Opt:
    __slots__ = ("letter", "arg", "error", "optopt")

    def __init__(self, letter: str, arg: str | None = None, error: str | None = None, optopt: str = "\0"):
        self.letter = letter      # '?' for a getopt error
        self.arg = arg
        self.error = error        # getopt's own message (without the program prefix)
        self.optopt = optopt

    def __eq__(self, other) -> bool:
        return isinstance(other, Opt) and all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    def __repr__(self) -> str:
        return f"Opt({', '.join(f'{k}={getattr(self, k)!r}' for k in self.__slots__)})"


def getopt(argv: list[str]) -> list[Opt]:
    """Options in argv order, as glibc getopt_long reports them (non-options are skipped)."""
    out: list[Opt] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        i += 1
        if a == "--":
            break
        if a.startswith("--"):
            body = a[2:]
            name, eq, value = body.partition("=")
            exact = [o for o in LONG_OPTIONS if o[0] == name]
            cands = exact or [o for o in LONG_OPTIONS if o[0].startswith(name)]
            if len({(o[1], o[2]) for o in cands}) > 1:
                names = " ".join(f"'--{o[0]}'" for o in cands)
                out.append(Opt("?", error=f"option '--{name}' is ambiguous; possibilities: {names}"))
                continue
            if not cands:
                out.append(Opt("?", error=f"unrecognized option '{a}'"))
                continue
            lname, has_arg, letter = cands[0]
            if has_arg:
                if not eq:
                    if i >= len(argv):
                        out.append(Opt("?", error=f"option '--{lname}' requires an argument",
                                       optopt=letter))
                        continue
                    value = argv[i]
                    i += 1
                out.append(Opt(letter, value))
            elif eq:
                out.append(Opt("?", error=f"option '--{lname}' doesn't allow an argument",
                               optopt=letter))
            else:
                out.append(Opt(letter))
            continue
        if not a.startswith("-") or a == "-":
            continue  # glibc permutes operands to the end; iscsiadm ignores them
        j = 1
        while j < len(a):
            ch = a[j]
            j += 1
            if ch in SHORT_NO_ARG:
                out.append(Opt(ch))
            elif ch in SHORT_WITH_ARG:
                if j < len(a):
                    out.append(Opt(ch, a[j:]))
                elif i < len(argv):
                    out.append(Opt(ch, argv[i]))
                    i += 1
                else:
                    out.append(Opt("?", error=f"option requires an argument -- '{ch}'", optopt=ch))
                break  # the rest of this word was the argument
            else:
                out.append(Opt("?", error=f"invalid option -- '{ch}'", optopt=ch))
    return out


# -- operations ----------------------------------------------------------------------
OPS = {"new": 1, "delete": 2, "update": 4, "show": 8, "nonpersistent": 16,
       "apply": 32, "applyall": 64, "login": 128, "logout": 256}


class Exit(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = int(code)


class Ctx:
    """Everything parsed from argv, plus where output goes (tests pass their own streams).

    A plain class, not a dataclass: importing dataclasses costs more than this whole parser.
    The node database is opened on first use; `-m session` never touches it.
    """
    mode: str | None = None
    target: str | None = None
    portal: str | None = None
    op: int = 0
    dtype: str | None = None
    login: bool = False
    logout: bool = False
    loginall: str | None = None
    logoutall: str | None = None
    rescan: bool = False
    stats: bool = False
    discover: bool = False
    sid: str | None = None
    print_level: int | None = None
    show_secrets: bool = False
    json: bool = False
    host: str | None = None
    submode: str | None = None
    killiscsid: str | None = None
    no_wait: bool = False

    def __init__(self, argv0: str, out, err, db: "ndb.NodeDB | None" = None, env=None,
                 err_tty: bool | None = None, **options) -> None:
        self.argv0, self.out, self.err = argv0, out, err
        self._db = db
        # the command's environment: os.environ, or its client's when it runs in the daemon
        self.env = os.environ if env is None else env
        # stderr is a terminal (the -L progress line); the client says so when forwarded
        self.err_tty = (err is sys.stderr and err.isatty()) if err_tty is None else err_tty
        self.ifaces: list[str] = []
        self.names: list[str] = []
        self.values: list[str] = []
        self._records: dict = {}
        for k, v in options.items():
            setattr(self, k, v)

    def record(self, nid: "ndb.NodeId") -> "ndb.Node":
        """A node record, read once per command: `-L all` filters on it, then logs in with it."""
        rec = self._records.get(nid)
        if rec is None:
            rec = self._records[nid] = self.db.read_node(nid)
        return rec

    @property
    def db(self) -> "ndb.NodeDB":
        if self._db is None:
            self._db = ndb.NodeDB(self.env.get(ndb.ENV_ROOT))
        return self._db

    def say(self, line: str = "") -> None:
        self.out.write(line + "\n")

    def error(self, line: str) -> None:
        self.err.write(f"{PROG}: {line}\n")

    def raw_error(self, line: str) -> None:
        self.err.write(line + "\n")

    def fail(self, line: str, code: int = ExitCode.INVAL) -> Exit:
        self.error(line)
        return Exit(code)

    def pairs(self) -> list[tuple[str, str]]:
        return list(zip(self.names, self.values))

    def dump_json(self, obj) -> None:
        import json
        self.out.write(json.dumps(obj, indent=2) + "\n")

    def portal_parts(self) -> tuple[str | None, int | None, int | None]:
        if self.portal is None:
            return None, None, None
        return ndb.parse_portal(self.portal)


def _store(ctx: Ctx, o: Opt) -> None:
    a = o.arg
    if o.letter == "T":
        ctx.target = a
    elif o.letter == "p":
        ctx.portal = a
    elif o.letter == "I":
        ctx.ifaces.append(a)
    elif o.letter == "o":
        if a not in OPS:
            raise ctx.fail(f"can not recognize operation: '{a}'")
        ctx.op |= OPS[a]
    elif o.letter == "t":
        ctx.dtype = a
    elif o.letter == "n":
        ctx.names.append(a)
    elif o.letter == "v":
        ctx.values.append(a)
    elif o.letter == "l":
        ctx.login = True
    elif o.letter == "u":
        ctx.logout = True
    elif o.letter == "L":
        ctx.loginall = a
    elif o.letter == "U":
        ctx.logoutall = a
    elif o.letter == "R":
        ctx.rescan = True
    elif o.letter == "s":
        ctx.stats = True
    elif o.letter == "D":
        ctx.discover = True
    elif o.letter == "r":
        ctx.sid = a
    elif o.letter == "P":
        ctx.print_level = R.atoi(a)
    elif o.letter == "S":
        ctx.show_secrets = True
    elif o.letter == "J":
        ctx.json = True
    elif o.letter == "H":
        ctx.host = a
    elif o.letter == "C":
        ctx.submode = a
    elif o.letter == "k":
        ctx.killiscsid = a
    elif o.letter == "W":
        ctx.no_wait = True


# -- the daemon's rows ----------------------------------------------------------------
def daemon_down(ctx: Ctx) -> int:
    """iscsiadm's answer when the mgmt socket refuses the connection."""
    ctx.error("can not connect to iSCSI daemon (111)!")
    return ExitCode.ISCSID_NOTCONN


def kill_daemon(ctx: Ctx) -> int:
    code = daemon_down(ctx)
    ctx.error(f"initiator reported error ({int(code)} - {MESSAGES[ExitCode(code)]})")
    ctx.error("Could not stop iscsid. Trying sending iscsid SIGTERM or SIGKILL signals manually")
    return 0


# The rows the daemon wiring replaces (style.md: mgmt_ipc_functions, one row per request).
def _live(name: str) -> Callable:
    """The row that reaches the daemon or the kernel, imported when first used (light start-up)."""
    def row(*args):
        from . import adm_session
        return getattr(adm_session, name)(*args)
    row.__name__ = name
    return row


DAEMON_OPS: dict[str, Callable] = {
    "node.login": _live("node_login"),
    "node.logout": _live("node_logout"),
    "node.rescan": _live("node_rescan"),
    "node.stats": _live("node_stats"),
    "session": _live("session_mode"),
    "discovery": _live("discovery_run"),
    "kill": kill_daemon,
}


def _no(ctx: Ctx, message: str) -> int:
    ctx.error(message)
    return ExitCode.NO_OBJS_FOUND


# -- node mode ------------------------------------------------------------------------
def _node_line(nid: ndb.NodeId) -> str:
    # iscsiadm prints the tpgt unsigned in this listing: -1 shows as 4294967295
    return f"{ndb.format_portal(nid.address, nid.port)},{nid.tpgt & 0xFFFFFFFF} {nid.target}"


def _node_tree(ctx: Ctx, ids: list[ndb.NodeId]) -> None:
    last_target, last_portal = None, None
    for nid in ids:
        if nid.target != last_target:
            ctx.say(f"Target: {nid.target}")
            last_target, last_portal = nid.target, None
        portal = (nid.address, nid.port, nid.tpgt)
        if portal != last_portal:
            ctx.say(f"\tPortal: {ndb.format_portal(nid.address, nid.port)},{nid.tpgt}")
            last_portal = portal
        ctx.say(f"\t\tIface Name: {nid.iface}")


def _node_json(nid: ndb.NodeId) -> dict:
    return {"target": nid.target, "address": nid.address, "port": nid.port,
            "tpgt": nid.tpgt, "iface": nid.iface}


def _sorted(ids: list[ndb.NodeId]) -> list[ndb.NodeId]:
    return sorted(ids, key=lambda n: (n.target.encode(), n.address.encode(), n.port, n.tpgt,
                                      n.iface.encode()))


def _check_iface_names(ctx: Ctx) -> None:
    for name in ctx.ifaces:
        if not ctx.db.iface_exists(name):
            raise ctx.fail(f"Could not read iface info for {name}.", ExitCode.NOMEM)


def mode_node(ctx: Ctx) -> int:
    if ctx.print_level is not None and ctx.print_level not in (0, 1):
        raise ctx.fail(f"Invalid info level {ctx.print_level}. Try 0 or 1.")
    address, port, tpgt = ctx.portal_parts()
    _check_iface_names(ctx)
    iface = ctx.ifaces[0] if ctx.ifaces else None
    selected = bool(ctx.target or ctx.portal or ctx.ifaces)

    def matching() -> list[ndb.NodeId]:
        return ctx.db.find_nodes(ctx.target, address, port, iface)

    if ctx.login or ctx.loginall is not None:
        # -L reads the records lazily: each login is sent while the next record is read
        nodes = matching() if ctx.login else _loginall_nodes(ctx, ctx.loginall, unreadable=True)
        return DAEMON_OPS["node.login"](ctx, nodes)
    if ctx.logout or ctx.logoutall is not None:
        # -U manual/automatic/onboot logs out only the sessions of records with that startup
        # value (iscsikit-login.service's stop must leave manual sessions alone); -U all, all
        nodes = matching() if ctx.logout or ctx.logoutall == "all" else list(_loginall_nodes(ctx, ctx.logoutall))
        return DAEMON_OPS["node.logout"](ctx, nodes)
    if ctx.rescan:
        return DAEMON_OPS["node.rescan"](ctx, matching())
    if ctx.stats:
        return DAEMON_OPS["node.stats"](ctx, matching())

    op = ctx.op
    if op not in (0, OPS["new"], OPS["delete"], OPS["update"], OPS["show"]):
        raise ctx.fail("operation is not supported.")
    if op == 0 and not selected:
        ids = _sorted(ctx.db.node_ids())
        if not ids:
            return _no(ctx, "No records found")
        if ctx.json:
            ctx.dump_json([_node_json(n) for n in ids])
        elif ctx.print_level == 1:
            _node_tree(ctx, ids)
        else:
            for nid in ids:
                ctx.say(_node_line(nid))
        return 0
    if op in (0, OPS["show"]):
        ids = _sorted(matching())
        if not ids:
            return _no(ctx, "No records found")
        nodes = [ctx.db.read_node(n) for n in ids]
        if ctx.json:
            ctx.dump_json([R.as_json(n.fields, n.values, ctx.show_secrets) for n in nodes])
        else:
            for node in nodes:
                for line in node.lines(show_secrets=ctx.show_secrets):
                    ctx.say(line)
        return 0
    if op == OPS["new"]:
        return _node_new(ctx, address, port, tpgt)
    if op == OPS["update"]:
        pairs = ctx.pairs()
        if not pairs:
            raise ctx.fail("update requires name and value")
        ids = matching()
        if not ids:
            return _no(ctx, "No records found")
        rc = 0
        for nid in ids:
            try:
                for warning in ctx.db.update_node(nid, pairs):
                    ctx.error(warning)
            except R.RecordError as e:
                for line in e.lines:
                    ctx.error(line)
                if not e.summary:
                    return e.code
                rc = rc or e.code
        if rc:
            ctx.error(f"Could not execute operation on all records: {MESSAGES[ExitCode(rc)]}")
        return rc
    ids = matching()
    if not ids:
        return _no(ctx, "No records found")
    from .adm_session import session_portals
    live = session_portals(ctx.env)
    rc = 0
    for nid in ids:
        if (nid.target, nid.address, nid.port) in live:
            # refused, as iscsiadm does (its man page promises a logout, its code refuses)
            ctx.error(f"This command will remove the record [iface: {nid.iface}, target: {nid.target}, "
                      f"portal: {nid.address},{nid.port}], but a session is using it. Logout session then "
                      "rerun command to remove record.")
            rc = rc or ExitCode.SESS_EXISTS
            continue
        ctx.db.delete_node(nid)
    if rc:
        ctx.error(f"Could not execute operation on all records: {MESSAGES[ExitCode(rc)]}")
    return rc


def _loginall_nodes(ctx: Ctx, which: str, unreadable: bool = False) -> Iterator[ndb.NodeId]:
    """The records whose node.startup `which` selects, read as the caller iterates.

    `unreadable`: also yield a record that cannot be read (gone since it was listed),
    for a caller that reads it again and reports it; otherwise the read error stops all."""
    wanted = {"all": ("manual", "automatic"), "manual": ("manual",),
              "automatic": ("automatic",), "onboot": ("onboot",)}.get(which)
    if wanted is None:
        raise ctx.fail(f"Invalid loginall option {which}.")

    def selected(nid: ndb.NodeId) -> bool:
        try:
            return ctx.record(nid)["node.startup"] in wanted
        except ndb.DBError:
            if unreadable:
                return True
            raise
    return (n for n in ctx.db.node_ids() if selected(n))


def _node_new(ctx: Ctx, address, port, tpgt) -> int:
    # iscsiadm 2.1.8 asks iscsid about the transport's host while it sets up the new
    # record's iface, when the transport is loaded, and says so when iscsid is down (the
    # guest's differential transcript; on a host without iscsi_tcp it is silent); it adds
    # the record all the same
    from .adm_session import daemon_reachable
    transports = os.path.join(ctx.env.get("ISCSIKIT_SYSFS_ROOT", "/sys"), "class", "iscsi_transport", "tcp")
    if os.path.isdir(transports) and not daemon_reachable(ctx):
        ctx.error("can not connect to iSCSI daemon (111)!")
    ifaces = ctx.ifaces or [R.DEFAULT_IFACE]
    if ctx.target and address is not None:
        wanted = [(ctx.target, address, port if port is not None else ndb.DEFAULT_PORT,
                   tpgt if tpgt is not None else ndb.UNKNOWN_TPGT)]
    else:
        # without both -T and -p, iscsiadm re-creates every matching record
        wanted = [(n.target, n.address, n.port, n.tpgt)
                  for n in ctx.db.find_nodes(ctx.target, address, port)]
        if not wanted:
            ctx.error("Error while adding record: ")
            return 0
    for target, addr, prt, tp in wanted:
        for name in ifaces:
            node = ctx.db.create_node(ndb.NodeId(target, addr, prt, tp, name))
            v = node.values
            ctx.say(f"New iSCSI node [{v['iface.transport_name']}:[hw={v['iface.hwaddress']},"
                    f"ip={v['iface.ipaddress']},net_if={v['iface.net_ifacename']},"
                    f"iscsi_if={name}] {addr},{prt},{tp} {target}] added")
    return 0


# -- iface mode -----------------------------------------------------------------------
def _iface_line(rec: ndb.Record) -> str:
    v = {k: (x or R.EMPTY) for k, x in rec.values.items()}
    return (f"{rec['iface.iscsi_ifacename']} {v['iface.transport_name']},{v['iface.hwaddress']},"
            f"{v['iface.ipaddress']},{v['iface.net_ifacename']},{v['iface.initiatorname']}")


def mode_iface(ctx: Ctx) -> int:
    db, op = ctx.db, ctx.op
    name = ctx.ifaces[0] if ctx.ifaces else None
    if op in (0, OPS["show"]) and name is None:
        names = db.iface_names() + list(R.BUILTIN_IFACES)
        recs = [db.read_iface(n) for n in names]
        if ctx.json:
            ctx.dump_json([R.as_json(r.fields, r.values) for r in recs])
        elif ctx.print_level == 1:
            nodes = _sorted(db.node_ids())
            if nodes:  # iscsiadm prints nothing at all when no node record exists
                for r in recs:
                    name = r["iface.iscsi_ifacename"]
                    ctx.say(f"Iface: {name}")
                    last = None
                    for nid in (n for n in nodes if n.iface == name):
                        if nid.target != last:
                            ctx.say(f"\tTarget: {nid.target}")
                            last = nid.target
                        ctx.say(f"\t\tPortal: {ndb.format_portal(nid.address, nid.port)},{nid.tpgt}")
        else:
            for r in recs:
                ctx.say(_iface_line(r))
        return 0
    if op in (0, OPS["show"]):
        try:
            rec = db.read_iface(name)
        except ndb.DBError as e:
            ctx.raw_error(f"{e} # idbm.c:_idbm_recs_read():834")
            return e.code
        if ctx.json:
            ctx.dump_json(R.as_json(rec.fields, rec.values))
        else:
            for line in rec.lines():
                ctx.say(line)
        return 0
    if op == OPS["new"]:
        if name is None:
            raise ctx.fail("iface new requires iface name.")
        if name in R.BUILTIN_IFACES:
            ctx.error(f"iface {name} is a special interface and is not stored in {db.path('ifaces')}.")
            raise ctx.fail(f"Could not create new interface {name}.")
        db.new_iface(name)
        ctx.say(f"{name} updated.")
        ctx.say(f"New interface {name} added")
        return 0
    if op == OPS["delete"]:
        if name is None:
            raise ctx.fail("iface delete requires iface name.")
        if name in R.BUILTIN_IFACES:
            ctx.error(f"iface {name} is a special interface and cannot be deleted.")
            raise ctx.fail(f"Could not delete iface {name}: {MESSAGES[ExitCode.INVAL]}")
        if not db.iface_exists(name):
            ctx.error(f"Could not read iface info for {name}.")
            raise ctx.fail(f"Could not delete iface {name}: {MESSAGES[ExitCode.INVAL]}")
        with db.locked():
            # deleting an iface unbinds it: the node records that use it go too
            for nid in db.find_nodes(iface=name):
                db.delete_node(nid)
            db.delete_iface(name)
        ctx.say(f"{name} unbound and deleted.")
        return 0
    if op == OPS["update"]:
        pairs = ctx.pairs()
        if not pairs or name is None:
            raise ctx.fail("Update requires name, value, and iface.")
        if not db.iface_exists(name):
            raise ctx.fail(f"Could not read iface info for {name}.")
        if name in R.BUILTIN_IFACES:
            raise ctx.fail(f"iface {name} is a special interface and cannot be modified.")
        table = {f.key: f for f in R.IFACE_FIELDS if f.key != "iface.iscsi_ifacename"}
        with db.locked():
            rec = db.read_iface(name)
            try:
                warnings = ndb.apply_pairs(rec.values, table, pairs)
            except R.RecordError as e:
                for line in e.lines:
                    ctx.error(line)
                return e.code
            db.write_iface(rec)
        for w in warnings:
            ctx.error(w)
        ctx.say(f"{name} updated.")
        return 0
    return ExitCode.INVAL


# -- discovery / discoverydb ----------------------------------------------------------
DISCOVERY_TYPES = {"sendtargets": "sendtargets", "st": "sendtargets", "isns": "isns"}
_LISTED_TYPES = (("sendtargets", "SENDTARGETS"), ("isns", "iSNS"))


def _discovery_listing(ctx: Ctx) -> int:
    db = ctx.db
    if ctx.json:
        ctx.dump_json([{"address": a, "port": p, "type": t}
                       for t, _ in _LISTED_TYPES for a, p in db.discovery_ids(t)])
        return 0
    if ctx.print_level == 1:
        for dtype, title in _LISTED_TYPES:
            ctx.say(f"{title}:")
            ids = db.discovery_ids(dtype)
            if not ids:
                ctx.say("No targets found.")
            for a, p in ids:
                ctx.say(f"DiscoveryAddress: {a},{p}")
        ctx.say("STATIC:")
        static = [n for n in _sorted(db.node_ids())
                  if db.read_node(n)["node.discovery_type"] == "static"]
        if static:
            _node_tree(ctx, static)
        else:
            ctx.say("No targets found.")
        ctx.say("FIRMWARE:")  # iBFT boot records: none that iscsikit reads yet
        ctx.say("No targets found.")
        return 0
    found = False
    for dtype, _ in _LISTED_TYPES:
        for a, p in db.discovery_ids(dtype):
            ctx.say(f"{ndb.format_portal(a, p)} via {dtype}")
            found = True
    if not found:
        return ExitCode.NO_OBJS_FOUND  # silently, as iscsiadm does
    return 0


def mode_discovery(ctx: Ctx) -> int:
    if ctx.dtype is None and ctx.portal is None:
        return _discovery_listing(ctx)
    dtype = DISCOVERY_TYPES.get(ctx.dtype or "")
    if dtype is None:
        raise ctx.fail("Invalid command. Possibly missing discovery --type.")
    address, port, _ = ctx.portal_parts()
    if address is None:
        raise ctx.fail("Please specify portal as <ipaddr>[:<ipport>]")
    return DAEMON_OPS["discovery"](ctx, dtype, address, port or ndb.DEFAULT_PORT)


def mode_discoverydb(ctx: Ctx) -> int:
    op = ctx.op
    if ctx.dtype is None and ctx.portal is None and op in (0, OPS["show"]) and not ctx.discover:
        return _discovery_listing(ctx)
    if ctx.dtype is None and ctx.portal is None:
        raise ctx.fail("Invalid operation. Operation not supported.")
    dtype = DISCOVERY_TYPES.get(ctx.dtype or "")
    if dtype is None:
        raise ctx.fail("Invalid command. Possibly missing discovery --type.")
    address, port, _ = ctx.portal_parts()
    if address is None:
        raise ctx.fail("Please specify portal as <ipaddr>[:<ipport>]")
    port = port or ndb.DEFAULT_PORT
    db = ctx.db
    if ctx.discover:
        return DAEMON_OPS["discovery"](ctx, dtype, address, port)
    if op in (0, OPS["show"]):
        rec = db.read_discovery(dtype, address, port)
        if rec is None:
            raise ctx.fail(f"Discovery record [{address},{port}] not found.", ExitCode.IDBM)
        if ctx.json:
            ctx.dump_json(R.as_json(rec.fields, rec.values, ctx.show_secrets))
        else:
            for line in rec.lines(show_secrets=ctx.show_secrets):
                ctx.say(line)
        return 0
    if op == OPS["new"]:
        db.create_discovery(dtype, address, port)
        ctx.say(f"New discovery record for [{address},{port}] added.")
        return 0
    if op == OPS["delete"]:
        db.delete_discovery(dtype, address, port)
        return 0
    if op == OPS["update"]:
        pairs = ctx.pairs()
        if not pairs:
            raise ctx.fail("update requires name and value")
        try:
            warnings = db.update_discovery(dtype, address, port, pairs)
        except R.RecordError as e:
            for line in e.lines:
                ctx.error(line)
            return e.code
        for w in warnings:
            ctx.error(w)
        return 0
    raise ctx.fail("Invalid operation. Operation not supported.")


def mode_host(ctx: Ctx) -> int:
    base = os.path.join(ctx.env.get("ISCSIKIT_SYSFS_ROOT", "/sys"), "class", "iscsi_host")
    if not (os.path.isdir(base) and os.listdir(base)):
        return _no(ctx, "No iSCSI hosts.")
    return daemon_down(ctx)


def mode_fw(ctx: Ctx) -> int:
    ctx.error("Could not get list of targets from firmware. (err 21)")
    return ExitCode.NO_OBJS_FOUND


MODES: dict[str, Callable[[Ctx], int]] = {
    "node": mode_node,
    "iface": mode_iface,
    "discovery": mode_discovery,
    "discoverydb": mode_discoverydb,
    "session": lambda ctx: DAEMON_OPS["session"](ctx),
    "host": mode_host,
    "fw": mode_fw,
}

USAGE = """\
iscsiadm -m discoverydb [-hV] [-d debug_level] [-P printlevel] [-t type -p ip:port -I ifaceN ... [-Dl]] | [[-p ip:port -t type] [-o operation] [-n name] [-v value] [-lD]] 
iscsiadm -m discovery [-hV] [-d debug_level] [-P printlevel] [-t type -p ip:port -I ifaceN ... [-l]] | [[-p ip:port] [-l | -D]] [-W]
iscsiadm -m node [-hV] [-d debug_level] [-P printlevel] [-L all,manual,automatic,onboot] [-W] [-U all,manual,automatic,onboot] [-S] [[-T targetname -p ip:port -I ifaceN] [-l | -u | -R | -s]] [[-o operation ] [-n name] [-v value]]
iscsiadm -m session [-hV] [-d debug_level] [-P printlevel] [-r sessionid | sysfsdir [-R | -u | -s] [-o operation] [-n name] [-v value]]
iscsiadm -m iface [-hV] [-d debug_level] [-P printlevel] [-I ifacename | -H hostno|MAC] [[-o operation ] [-n name] [-v value]] [-C ping [-a ip] [-b packetsize] [-c count] [-i interval]]
iscsiadm -m fw [-d debug_level] [-l] [-W] [[-n name] [-v value]]
iscsiadm -m host [-P printlevel] [-H hostno|MAC] [[-C chap [-x chap_tbl_idx]] | [-C flashnode [-A portal_type] [-x flashnode_idx]] | [-C stats]] [[-o operation] [-n name] [-v value]] 
iscsiadm -k priority
"""


def run(argv: list[str], out=None, err=None, db: ndb.NodeDB | None = None,
        argv0: str | None = None, env=None, err_tty: bool | None = None) -> int:
    """Run one iscsiadm command line; returns the exit code (never raises for user errors)."""
    out = out or sys.stdout
    err = err or sys.stderr
    ctx = Ctx(argv0=argv0 or (sys.argv[0] if sys.argv else PROG), out=out, err=err, db=db,
              env=env, err_tty=err_tty)
    try:
        return int(_run(ctx, argv))
    except Exit as e:
        return e.code
    except R.RecordError as e:
        for line in e.lines:
            ctx.error(line)
        return e.code
    except ndb.DBError as e:
        ctx.error(str(e))
        return e.code


def _run(ctx: Ctx, argv: list[str]) -> int:
    opts = getopt(argv)

    def getopt_error(o: Opt) -> None:
        ctx.raw_error(f"{ctx.argv0}: {o.error}")

    # iscsiadm finds the mode first (the first -m), printing getopt's complaints about
    # whatever precedes it, then walks every option again checking it against the mode.
    mode = None
    for o in opts:
        if o.letter == "?":
            getopt_error(o)
        elif o.letter == "m":
            mode = o.arg
            break
    if mode is None:
        for o in opts:
            if o.letter == "?":
                raise ctx.fail(f"unrecognized character '{o.optopt}'")
            if o.letter == "V":
                ctx.say(f"{PROG} version {R.VERSION}")
                return 0
            if o.letter == "h":
                ctx.out.write(USAGE)
                return 0
            _store(ctx, o)
        if ctx.killiscsid is not None:
            return DAEMON_OPS["kill"](ctx)
        ctx.raw_error(f"Try `{PROG} --help' for more information.")
        return ExitCode.INVAL
    letters = MODE_LETTERS.get(mode)
    for o in opts:
        if o.letter == "?":
            getopt_error(o)
        if letters is not None and o.letter not in letters:
            raise ctx.fail(f"{mode} mode: option '-{o.letter}' is not allowed/supported")
        if o.letter != "m":
            _store(ctx, o)
    ctx.mode = mode
    handler = MODES.get(mode)
    if handler is None:
        raise ctx.fail("mode -1 is not yet supported")
    return handler(ctx)


def main(argv: list[str] | None = None) -> int:
    # the forwarding iscsiadm (userspace/iscsiadm-forward) execs this with the daemon down,
    # naming what it was called as: messages say that name, as iscsiadm's say argv[0]
    argv0 = os.environ.pop("ISCSIKIT_ARGV0", None)
    rc = run(sys.argv[1:] if argv is None else argv, argv0=argv0)
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        pass
    return rc


if __name__ == "__main__":
    sys.exit(main())

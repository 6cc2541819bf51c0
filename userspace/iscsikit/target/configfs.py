"""Direct configfs reads and writes for the bulk paths where rtslib is quadratic.

This is the one module that spells LIO's configfs paths by hand.  It exists
because rtslib's bulk paths cost O(n^2) object constructions (lio-facts.md
§5.2): restore looks up each LUN's storage object by scanning all of them,
each mapped LUN its TPG LUN by scanning the TPG, each storage object builds a
new RTSRoot, and dump() scans the TPG once per mapped LUN.  Here:

- snapshot() walks the tree once and returns the model (model.py), reading
  each file at most once;
- storage objects, TPG LUNs and mapped LUNs are made and removed with the
  mkdir/write/symlink sequence rtslib itself uses (lio-facts.md §1.2-1.3),
  given the indexes the caller already knows, so each costs O(1).

Targets, TPGs, portals, ACLs and their attributes go through rtslib's
objects (apply.py): those constructors are O(1) already.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import threading

from . import fabrics
from .errors import TargetError
from .model import (
    HBA_PREFIX, PLUGIN_OF_PREFIX, Chap, Config, Discovery, LUN, MappedLUN, NodeACL, Portal, StorageObject,
    Target, TPG,
)

ROOT = "/sys/kernel/config/target"
# ALUA group files rtslib dumps (all integers), besides name and tg_pt_gp_id
ALUA_RW = ("alua_access_state", "alua_access_status", "alua_write_metadata", "alua_access_type", "preferred",
           "nonop_delay_msecs", "trans_delay_msecs", "implicit_trans_secs", "alua_support_offline",
           "alua_support_standby", "alua_support_transitioning", "alua_support_active_nonoptimized",
           "alua_support_unavailable", "alua_support_active_optimized")
_ALUA_WORDS = {
    "alua_access_status": ["None", "Altered by Explicit STPG", "Altered by Implicit ALUA"],
    "alua_access_type": ["None", "Implicit", "Explicit", "Implicit and Explicit"],
}
_AUTH_FILES = (("userid", "userid"), ("password", "password"),
               ("mutual_userid", "userid_mutual"), ("mutual_password", "password_mutual"))


def new_serial() -> str:
    """A random (version 4) UUID as text, the unit serial rtslib gives a new storage object.
    Made here from os.urandom: `import uuid` cost a one-shot command ~0.1 s in the lab guest."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40         # version 4 (RFC 4122 section 4.4)
    b[8] = (b[8] & 0x3F) | 0x80         # the RFC 4122 variant
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _alias() -> str:
    """A LUN or mapped LUN link name: 10 hex digits, as rtslib's uuid4().hex[:10]."""
    return os.urandom(5).hex()


def read(path: str) -> str:
    """A configfs attribute's value, stripped.  os.open/os.read rather than open(): the io
    stack adds an fstat, an ioctl and a text decoder per file, and `ls /iscsi` at 1000 targets
    reads 12,000 files (~0.5 ms each that way in the lab guest).  configfs shows at most a
    page per attribute, so the first read normally returns all of it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.read(fd, 65536)
        if len(data) == 65536:
            parts = [data]
            while data:
                data = os.read(fd, 65536)
                parts.append(data)
            data = b"".join(parts)
    finally:
        os.close(fd)
    return data.decode().strip()


def write(path: str, text: str) -> None:
    """One write() call: configfs parses each write as a whole."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError as e:
        raise TargetError(f"cannot open {path}: {e.strerror}") from None
    try:
        os.write(fd, text.encode())
    except OSError as e:
        raise TargetError(f"the kernel refused {text.strip()!r} for {path}: {e.strerror}") from None
    finally:
        os.close(fd)


def mkdir(d: str, what: str) -> None:
    """One configfs object made; the kernel's refusal as a one-line error naming it."""
    try:
        os.mkdir(d)
    except OSError as e:
        raise TargetError(f"cannot create {what}: {e.strerror}") from None


def rmdir(d: str) -> None:
    _rmdir(d)


def _rw_files(d: str) -> dict:
    """Files the owner may read and write, with values; rtslib's dump() keeps exactly these."""
    out = {}
    try:
        entries = os.scandir(d)
    except FileNotFoundError:
        return out
    with entries:
        for e in entries:
            try:
                mode = e.stat(follow_symlinks=False).st_mode
            except OSError:
                continue
            if stat.S_ISREG(mode) and mode & stat.S_IWUSR and mode & stat.S_IRUSR:
                try:
                    out[e.name] = read(e.path)
                except OSError:
                    continue      # e.g. write-only in practice (rtslib #145)
    return out


def _scandir(d: str) -> list:
    with os.scandir(d) as it:
        return list(it)


def _named_files(d: str, names) -> dict:
    """Only the files `names` lists (those that exist): a restore compares no others."""
    out = {}
    for n in names:
        try:
            out[n] = read(f"{d}/{n}")
        except OSError:
            continue
    return out


def _files(d: str, want) -> dict:
    """All read-write files of d (want is None), or only the named ones."""
    return _rw_files(d) if want is None else _named_files(d, want)


def _ints(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        try:
            out[k] = int(v)
        except ValueError:
            out[k] = v
    return out


def _info(text: str, key: str) -> str | None:
    # anchored at a word start: "Size: " must not match inside "SectorSize: "
    m = re.search(rf"(?:^| ){re.escape(key)}: ([^: ]+)", " ".join(text.split()))
    return m.group(1) if m else None


def _auth(d: str) -> Chap:
    chap = Chap()
    for fld, fname in _AUTH_FILES:
        try:
            v = read(f"{d}/{fname}")
        except OSError:
            v = ""
        setattr(chap, fld, "" if v == "NULL" else v)
    return chap


# ---- reading ------------------------------------------------------------------

def _read_so(hba: str, prefix: str, index: int, name: str, attributes: bool,
             want=None, alua: bool = True, light: bool | str = False) -> StorageObject:
    d = f"{hba}/{name}"
    plugin = PLUGIN_OF_PREFIX[prefix]
    so = StorageObject(plugin=plugin, name=name, hba_index=index)
    if light == "dev":
        # a listing of targets shows only the file or device a LUN exports (listing.lun_summary)
        if plugin in ("fileio", "block", "pscsi"):
            try:
                so.dev = read(f"{d}/udev_path") or None
            except OSError:
                so.dev = None
            if so.dev is None and plugin == "fileio":
                so.dev = _info(read(f"{d}/info"), "File")
        return so
    info = read(f"{d}/info")
    so.status = (_info(info, "Status") or "").lower()
    configured = True
    if plugin != "pscsi" and not light:
        try:
            configured = read(f"{d}/enable") == "1"
        except OSError:
            pass
    if attributes:
        if want is not None and plugin in ("fileio", "block"):
            want = set(want) | {"emulate_write_cache"}      # write_back is read from it
        so.attributes = _ints(_files(f"{d}/attrib", want))
    elif plugin in ("fileio", "block"):
        so.attributes = {"emulate_write_cache": int(read(f"{d}/attrib/emulate_write_cache"))}
    if configured and plugin != "pscsi" and not light:
        so.wwn = read(f"{d}/wwn/vpd_unit_serial").partition(":")[2].strip() or None
    try:
        udev = read(f"{d}/udev_path")
    except OSError:
        udev = ""
    if plugin == "fileio":
        so.dev = udev or _info(info, "File")
        so.is_block_dev = (so.dev or "").startswith("/dev/")
        size = _info(info, "Size")
        so.size = int(size) if size and size.isdigit() else None
        so.write_back = bool(int(so.attributes.get("emulate_write_cache", 0)))
        so.aio = _info(info, "Async") == "1"
    elif plugin == "block":
        so.dev = udev
        so.readonly = _info(info, "readonly") == "1"
        excl = _info(info, "exclusive")
        so.exclusive = excl is None or excl == "1"
        so.write_back = bool(int(so.attributes.get("emulate_write_cache", 0)))
    elif plugin == "ramdisk":
        pages = _info(info, "PAGES/PAGE_SIZE")
        if pages and "*" in pages:
            n, page = pages.split("*", 1)
            so.size = int(n) * int(page)
        so.nullio = _info(info, "nullio") == "1"
    elif plugin == "user":
        size = _info(info, "Size")
        so.size = int(size) if size and size.isdigit() else None
        cfg = _info(info, "Config")
        so.config = None if cfg in (None, "NULL") else cfg
        hw = _info(info, "HwMaxSectors")
        so.hw_max_sectors = int(hw) if hw and hw.isdigit() else None
        ctl = []
        for key, label in (("max_data_area_mb", "MaxDataAreaMB"), ("data_pages_per_blk", "DataPagesPerBlk")):
            v = _info(info, label)
            if v not in (None, "NULL"):
                ctl.append(f"{key}={v}")
        so.control = ",".join(ctl) or None
    else:
        so.dev = udev
    if attributes and plugin != "pscsi" and (alua or _runs_alua_groups(f"{d}/alua")):
        so.alua_tpgs = _read_alua(f"{d}/alua")
    return so


def _runs_alua_groups(d: str) -> bool:
    """Whether the object has a group besides default_tg_pt_gp (one directory listing): a
    restore deletes such a group when its file lacks it (plan.py), and a rollback that makes
    the object again makes its groups too."""
    try:
        return any(name != "default_tg_pt_gp" for name in os.listdir(d))
    except OSError:
        return False


def _names_alua_groups(so: StorageObject | None) -> bool:
    """Whether a restore's file names ALUA groups of its own for `so`: then the running
    object's groups are read (plan.py compares them); targetcli files list default_tg_pt_gp
    for every object, whose values a restore leaves as they are, so a file that names only
    it costs one listing (_runs_alua_groups)."""
    return so is not None and any(g.get("name") not in (None, "default_tg_pt_gp") for g in so.alua_tpgs)


def _read_alua(d: str) -> list:
    groups = []
    try:
        names = sorted(os.listdir(d))
    except OSError:
        return groups
    for name in names:
        g = {"name": name}
        try:
            g["tg_pt_gp_id"] = int(read(f"{d}/{name}/tg_pt_gp_id"))
            for p in ALUA_RW:
                v = read(f"{d}/{name}/{p}")
                # two files print words; saveconfig stores their index (as rtslib)
                g[p] = _ALUA_WORDS[p].index(v) if p in _ALUA_WORDS else int(v)
        except (OSError, ValueError):
            continue
        groups.append(g)
    return groups


def _so_path_from_link(link_target: str) -> str | None:
    """'../../core/fileio_0/d1' -> '/backstores/fileio/d1'."""
    parts = link_target.rstrip("/").split("/")
    if len(parts) < 2:
        return None
    prefix = parts[-2].rsplit("_", 1)[0]
    plugin = PLUGIN_OF_PREFIX.get(prefix)
    return f"/backstores/{plugin}/{parts[-1]}" if plugin else None


def _symlink(d: str) -> tuple[str, str] | None:
    with os.scandir(d) as it:
        for e in it:
            if e.is_symlink():
                return e.name, os.readlink(e.path)
    return None


# A portal's transport flags, and the module that must be in the kernel for one to be 1:
# writing 1 to np/IP:PORT/iser (or cxgbit) loads it by request_module() and the portal
# then holds a reference to it (drivers/target/iscsi/iscsi_target_configfs.c,
# lio_target_np_driver_store), so without the module the file can only say 0.
PORTAL_FLAGS = (("iser", "iser", "ib_isert"), ("offload", "cxgbit", "cxgbit"))
SYS_MODULE = "/sys/module"


def _builtin_modules() -> set | None:
    """Modules built into the running kernel (they have no /sys/module dir unless they
    take parameters); None when the list cannot be read."""
    try:
        with open(f"/lib/modules/{os.uname().release}/modules.builtin") as f:
            return {os.path.basename(line.strip())[:-3].replace("-", "_") for line in f}
    except OSError:
        return None


def portal_flags() -> tuple:
    """The (attribute, file) pairs a portal's directory can have at 1 in this kernel now:
    the others are 0 without a read (an `ls` of 1000 targets reads 2000 files fewer).
    Asked once per snapshot, never kept: a module may be loaded between two commands."""
    builtin: set | None | bool = False        # not read yet
    out = []
    for attr, fname, module in PORTAL_FLAGS:
        if not os.path.isdir(f"{SYS_MODULE}/{module}"):
            if builtin is False:
                builtin = _builtin_modules()
            if builtin is not None and module not in builtin:
                continue                           # (an unreadable list: read the file)
        out.append((attr, fname))
    return tuple(out)


def _read_tpg(d: str, tag: int, attributes: bool, wanted: TPG | None = None,
              fab: fabrics.Fabric = fabrics.FABRICS["iscsi"], light: bool | str = False,
              so_hbas: dict | None = None, flags: tuple = tuple(f[:2] for f in PORTAL_FLAGS)) -> TPG:
    tpg = TPG(tag=tag)
    try:
        tpg.enable = read(f"{d}/enable") == "1"
    except OSError:
        tpg.enable = True       # a fabric without the file is always enabled (as rtslib)
    if fab.has("nexus"):
        try:
            tpg.nexus = read(f"{d}/nexus") or None
        except OSError:
            tpg.nexus = None
    if attributes:
        tpg.attributes = _ints(_files(f"{d}/attrib", None if wanted is None else wanted.attributes))
        tpg.parameters = _files(f"{d}/param", None if wanted is None else wanted.parameters)
    else:
        for name in ("authentication", "generate_node_acls"):
            try:
                tpg.attributes[name] = int(read(f"{d}/attrib/{name}"))
            except (OSError, ValueError):
                pass
    if fab.has("auth") and not light:
        tpg.chap = _auth(f"{d}/auth")
    for name in os.listdir(f"{d}/lun"):
        if not name.startswith("lun_"):
            continue
        ld = f"{d}/lun/{name}"
        link = _symlink(ld)
        if link is None:
            continue        # half-made LUN; nothing exports through it
        so_path = _so_path_from_link(link[1])
        if so_path is None:
            continue
        if so_hbas is not None:
            parts = link[1].rstrip("/").split("/")
            so_hbas[(PLUGIN_OF_PREFIX[parts[-2].rsplit("_", 1)[0]], parts[-1])] = parts[-2]
        lun = LUN(index=int(name[4:]), storage_object=so_path, alias=link[0])
        try:
            first = read(f"{ld}/alua_tg_pt_gp").splitlines()
            lun.alua_tg_pt_gp_name = first[0].split(":", 1)[1].strip() if first else None
        except (OSError, IndexError):
            lun.alua_tg_pt_gp_name = None
        tpg.luns[lun.index] = lun
    for name in os.listdir(f"{d}/np") if fab.has("nps") else ():
        ip, _, port = name.rpartition(":")
        p = Portal(ip_address=ip, port=int(port))
        for attr, fname in flags:
            try:
                setattr(p, attr, read(f"{d}/np/{name}/{fname}") == "1")
            except OSError:
                pass
        tpg.portals[p.key] = p
    for node_dir in os.listdir(f"{d}/acls") if fab.has("acls") else ():
        ad = f"{d}/acls/{node_dir}"
        node = fab.from_dir(node_dir)
        acl = NodeACL(node_wwn=node, chap=_auth(f"{ad}/auth") if fab.has("auth") and not light else Chap())
        if attributes:
            wacl = wanted.node_acls.get(node) if wanted is not None else None
            full = wanted is None or wacl is None
            acl.attributes = _ints(_files(f"{ad}/attrib", None if full else wacl.attributes))
        try:
            acl.tag = read(f"{ad}/tag") or None
        except OSError:
            pass
        try:
            acl.tcq_depth = None if light else int(read(f"{ad}/cmdsn_depth"))
        except (OSError, ValueError):
            pass
        for mname in os.listdir(ad):
            if not mname.startswith("lun_"):
                continue
            md = f"{ad}/{mname}"
            link = _symlink(md)
            if link is None:
                continue
            m = MappedLUN(index=int(mname[4:]), tpg_lun=int(link[1].rstrip("/").rsplit("lun_", 1)[1]),
                          alias=link[0])
            m.write_protect = read(f"{md}/write_protect") == "1"
            acl.mapped_luns[m.index] = m
        tpg.node_acls[node] = acl
    return tpg


def snapshot(root: str = ROOT, attributes: bool = True, so_attributes: bool | None = None,
             wanted: Config | None = None, targets: set | None = None, sos: set | None = None,
             light: bool | str = False) -> Config:
    """The running LIO configuration, in one walk.

    attributes=False skips the attribute and parameter files (about 60 per
    storage object and TPG) for listings that do not show them;
    so_attributes=False skips only the storage objects' ones (30 each).

    wanted (a restore's desired Config): for an object that is also in
    `wanted`, read only the attributes and parameters it names, since the
    plan compares no others, and read an object's ALUA groups only when the
    file names one or the object runs one besides default_tg_pt_gp (one
    listing: _runs_alua_groups); objects `wanted` lacks are read whole, as
    their rollback needs.  A no-op
    restore of 1000 LUNs read ~56 files per object before this.

    targets / sos (a shell command's scope, Manager.edit): read only these
    iSCSI targets (no other fabric) and these storage objects, plus the
    storage objects the targets read export.  A command that changes one of
    1000 targets then reads one, not 1000 (the one-target-per-volume shape of
    OpenStack Cinder, bench/bench_target_cinder.py).

    light=True (a listing, listing.py): also skip what `ls` never shows (CHAP
    files, cmdsn_depth, unit serials): about half the reads, and each open of
    a configfs file costs ~0.5 ms in the lab guest.  light="dev" (a listing
    of targets only): of each storage object, read only its file or device.
    """
    if so_attributes is None:
        so_attributes = attributes
    cfg = Config()
    core = f"{root}/core"
    if not os.path.isdir(core):
        return cfg
    so_hbas: dict | None = {} if sos is not None else None      # (plugin, name) -> HBA, from LUN links
    flags = portal_flags()
    for fab in fabrics.FABRICS.values():
        fd = f"{root}/{fab.dir}"
        if not os.path.isdir(fd) or (targets is not None and fab.name != "iscsi"):
            continue
        # scandir's entry types come from configfs's readdir: no stat per target
        names = sorted(e.name for e in _scandir(fd) if e.is_dir()) if targets is None else \
            sorted(n for n in targets if os.path.isdir(f"{fd}/{n}"))
        for name in names:
            td = f"{fd}/{name}"
            if name in fabrics.NOT_TARGETS:
                continue
            wwn = fab.from_dir(name)
            t = Target(wwn=wwn, fabric=fab.name)
            if wanted is None:
                wt = None
            elif fab.name == "iscsi":
                wt = wanted.targets.get(wwn)
            else:
                wt = wanted.fabric_targets.get((fab.name, wwn))
            if attributes:
                t.attributes = _ints(_files(f"{td}/attrib", None if wt is None else wt.attributes))
                t.parameters = _files(f"{td}/param", None if wt is None else wt.parameters)
            for tname in os.listdir(td):
                if tname.startswith("tpgt_"):
                    tag = int(tname[5:])
                    t.tpgs[tag] = _read_tpg(f"{td}/{tname}", tag, attributes,
                                            wt.tpgs.get(tag) if wt is not None else None, fab, light,
                                            so_hbas, flags)
            if fab.name == "iscsi":
                cfg.targets[wwn] = t
            else:
                cfg.fabric_targets[(fab.name, wwn)] = t
        if fab.has("discovery_auth"):
            da = f"{fd}/discovery_auth"
            if os.path.isdir(da):
                try:
                    enabled = read(f"{da}/enforce_discovery_auth") == "1"
                except OSError:
                    enabled = False
                cfg.discovery = Discovery(enable=enabled, chap=_auth(da))
    if sos is None:
        for hba in sorted(os.listdir(core)):
            prefix, _, idx = hba.rpartition("_")
            if prefix not in PLUGIN_OF_PREFIX or not idx.isdigit():
                continue
            hd = f"{core}/{hba}"
            for name in [e.name for e in _scandir(hd) if e.is_dir()]:
                wso = wanted.storage_objects.get((PLUGIN_OF_PREFIX[prefix], name)) if wanted else None
                so = _read_so(hd, prefix, int(idx), name, so_attributes,
                              want=None if wso is None else wso.attributes, alua=wanted is None or _names_alua_groups(wso), light=light)
                cfg.storage_objects[so.key] = so
        return cfg
    # A scope: the storage objects named, and those the targets read export.  A LUN's
    # link names its HBA (so_hbas); a named one is looked for in its plugin's HBAs,
    # newest first (a command usually names the object the one before it made).
    found = dict(so_hbas)
    rest = [k for k in sos if k not in found and k[0] in HBA_PREFIX]
    if rest:
        hbas: dict[str, list] = {}
        for hba in os.listdir(core):
            prefix, _, idx = hba.rpartition("_")
            if prefix in PLUGIN_OF_PREFIX and idx.isdigit():
                hbas.setdefault(prefix, []).append((int(idx), hba))
        for plugin, name in rest:
            for _, hba in sorted(hbas.get(HBA_PREFIX[plugin], ()), reverse=True):
                if os.path.isdir(f"{core}/{hba}/{name}"):
                    found[(plugin, name)] = hba
                    break
    for (plugin, name), hba in found.items():
        prefix, _, idx = hba.rpartition("_")
        wso = wanted.storage_objects.get((plugin, name)) if wanted else None
        so = _read_so(f"{core}/{hba}", prefix, int(idx), name, so_attributes,
                      want=None if wso is None else wso.attributes, alua=wanted is None or _names_alua_groups(wso), light=light)
        cfg.storage_objects[so.key] = so
    return cfg


# ---- writing ----------------------------------------------------------------------

def so_all_attributes(root: str, so: StorageObject) -> dict:
    """Every read-write attribute of a storage object, as a full snapshot holds them."""
    return _ints(_rw_files(f"{so_dir(root, so)}/attrib"))


def hba_dir(root: str, so: StorageObject) -> str:
    return f"{root}/core/{HBA_PREFIX[so.plugin]}_{so.hba_index}"


def so_dir(root: str, so: StorageObject) -> str:
    return f"{hba_dir(root, so)}/{so.name}"


def _new_hba(root: str, prefix: str, start: int) -> int:
    """Claim an HBA index by mkdir: it fails on an existing one, so two writers never share."""
    i = start
    while True:
        try:
            os.mkdir(f"{root}/core/{prefix}_{i}")
            return i
        except FileExistsError:
            i += 1
        except OSError as e:
            raise TargetError(f"cannot create {root}/core/{prefix}_{i}: {e.strerror}") from None


def _control(plugin: str, so: StorageObject) -> list[str]:
    """The control writes rtslib makes for each backend (lio-facts.md §1.3)."""
    if plugin == "fileio":
        cmds = [f"fd_dev_name={so.dev}" if so.is_block_dev else f"fd_dev_name={so.dev},fd_dev_size={so.size}"]
        if so.write_back:
            cmds.append("fd_buffered_io=1")
        if so.aio:
            cmds.append("fd_async_io=1")
        return cmds
    if plugin == "block":
        cmds = [f"udev_path={so.dev}", f"readonly={int(so.readonly)}"]
        if not so.exclusive:
            cmds.append("exclusive=0")
        return cmds
    if plugin == "ramdisk":
        pages = max(1, round(so.size / os.sysconf("SC_PAGE_SIZE")))
        return [f"rd_pages={pages}"] + (["rd_nullio=1"] if so.nullio else [])
    if plugin == "user":
        cmds = [f"dev_config={so.config}", f"dev_size={so.size}"]
        if so.hw_max_sectors is not None:
            cmds.append(f"hw_max_sectors={so.hw_max_sectors}")
        if so.control:
            cmds.append(so.control)
        return cmds
    raise TargetError(f"{so.path}: backstore {plugin} is made through rtslib, not here")


class Writer:
    """Makes and removes storage objects, TPG LUNs and mapped LUNs in O(1) each."""

    def __init__(self, root: str = ROOT):
        self.root = root
        self._next_hba: dict[str, int] = {}
        self._dbroot: str | None = None
        # apply.py creates storage objects from several threads; the claim
        # itself is an atomic mkdir, the lock only keeps the hint moving forward.
        self._hba_lock = threading.Lock()

    def _dbroot_dir(self) -> str:
        if self._dbroot is None:
            try:
                self._dbroot = read(f"{self.root}/dbroot")
            except OSError:
                self._dbroot = "/var/target"
        return self._dbroot

    def create_so(self, so: StorageObject) -> None:
        prefix = HBA_PREFIX[so.plugin]
        with self._hba_lock:
            if prefix not in self._next_hba:
                # past the highest index in use: one listdir, not one failed mkdir per HBA
                # (1000 of them at 1000 volumes, ~0.3 s in the lab guest)
                used = [int(i) for p, _, i in (h.rpartition("_") for h in os.listdir(f"{self.root}/core"))
                        if p == prefix and i.isdigit()]
                self._next_hba[prefix] = max(used, default=-1) + 1
            index = _new_hba(self.root, prefix, self._next_hba[prefix])
            self._next_hba[prefix] = index + 1
        so.hba_index = index
        d = so_dir(self.root, so)
        try:
            try:
                os.mkdir(d)
            except OSError as e:
                raise TargetError(f"cannot create {so.path}: {e.strerror}") from None
            if so.plugin == "fileio" and so.write_back:
                write(f"{d}/attrib/emulate_write_cache", "1")
            for cmd in _control(so.plugin, so):
                write(f"{d}/control", cmd)
            if so.plugin in ("fileio", "block"):
                write(f"{d}/udev_path", so.dev)
            write(f"{d}/enable", "1")
            if not so.wwn:
                so.wwn = new_serial()
            write(f"{d}/wwn/vpd_unit_serial", f"{so.wwn}\n")
            self._replay_aptpl(d, so.wwn)
            self.set_so_attributes(so, so.attributes)
            self._create_alua_groups(d, so.alua_tpgs)
        except BaseException:
            self.delete_so(so)
            raise

    def _replay_aptpl(self, d: str, wwn: str) -> None:
        """LIO persists APTPL reservations under dbroot; they go back in at creation (as rtslib)."""
        try:
            lines = read(f"{self._dbroot_dir()}/pr/aptpl_{wwn}").split()
        except OSError:
            return
        if not lines or not lines[0].startswith("PR_REG_START:"):
            return
        current: list[str] = []
        for line in lines:
            if line.startswith("PR_REG_START:"):
                current = []
            elif line.startswith("PR_REG_END:"):
                write(f"{d}/pr/res_aptpl_metadata", ",".join(current))
            else:
                current.append(line.strip())

    @staticmethod
    def _create_alua_groups(d: str, groups: list) -> None:
        """Non-default ALUA target port groups; the id goes first, the kernel keys the group by it."""
        for g in groups:
            name = g.get("name")
            if not name or name == "default_tg_pt_gp":
                continue
            try:
                os.mkdir(f"{d}/alua/{name}")
            except OSError as e:
                raise TargetError(f"cannot create ALUA group {name}: {e.strerror}") from None
            write(f"{d}/alua/{name}/tg_pt_gp_id", str(g["tg_pt_gp_id"]))
            for p in ALUA_RW:
                if p in g and g[p] is not None:
                    cur = read(f"{d}/alua/{name}/{p}")
                    if p in _ALUA_WORDS:
                        cur = str(_ALUA_WORDS[p].index(cur))
                    if cur != str(int(g[p])):
                        write(f"{d}/alua/{name}/{p}", str(int(g[p])))

    def so_attributes(self, so: StorageObject, names) -> dict:
        """The named attributes' current values, as text."""
        return _named_files(f"{so_dir(self.root, so)}/attrib", names)

    def set_so_attributes(self, so: StorageObject, values: dict) -> dict:
        """Write the values that differ; return the previous ones (for undo)."""
        d = so_dir(self.root, so)
        old = self.so_attributes(so, values)
        missing = [n for n in values if n not in old]
        if missing:
            raise TargetError(f"{so.path}: this kernel has no attribute {missing[0]}")
        # block_size first: the kernel derives other limits from it
        for n in sorted(values, key=lambda n: n != "block_size"):
            if str(values[n]) != old[n]:
                write(f"{d}/attrib/{n}", str(values[n]))
        return {n: old[n] for n in values if str(values[n]) != old[n]}

    def delete_so(self, so: StorageObject) -> None:
        d = so_dir(self.root, so)
        if os.path.isdir(f"{d}/alua"):
            for g in os.listdir(f"{d}/alua"):
                if g != "default_tg_pt_gp":
                    _rmdir(f"{d}/alua/{g}")
        if os.path.isdir(d):
            _rmdir(d)
        if os.path.isdir(hba_dir(self.root, so)):
            _rmdir(hba_dir(self.root, so))

    # ---- TPG LUNs and mapped LUNs ----

    def tpg_dir(self, wwn: str, tag: int, fabric: str = "iscsi") -> str:
        fab = fabrics.FABRICS[fabric]
        return f"{self.root}/{fab.dir}/{fab.to_dir(wwn)}/tpgt_{tag}"

    def acl_dir(self, wwn: str, tag: int, node: str, fabric: str = "iscsi") -> str:
        return f"{self.tpg_dir(wwn, tag, fabric)}/acls/{fabrics.FABRICS[fabric].to_dir(node)}"

    def create_lun(self, wwn: str, tag: int, lun: LUN, so: StorageObject, fabric: str = "iscsi") -> None:
        d = f"{self.tpg_dir(wwn, tag, fabric)}/lun/lun_{lun.index}"
        if so.hba_index is None:
            raise TargetError(f"{so.path} is not in configfs")
        try:
            os.mkdir(d)
        except OSError as e:
            raise TargetError(f"cannot create lun{lun.index} in {wwn} tpg{tag}: {e.strerror}") from None
        try:
            alias = lun.alias or _alias()
            os.symlink(so_dir(self.root, so), f"{d}/{alias}")
            lun.alias = alias
            gp = lun.alua_tg_pt_gp_name
            if gp and gp != "default_tg_pt_gp" and os.path.exists(f"{d}/alua_tg_pt_gp"):
                write(f"{d}/alua_tg_pt_gp", gp)
        except OSError as e:
            _rmdir(d)
            raise TargetError(f"cannot export {so.path} as lun{lun.index}: {e.strerror}") from None
        except BaseException:
            self.delete_lun(wwn, tag, lun, fabric)
            raise

    def delete_lun(self, wwn: str, tag: int, lun: LUN, fabric: str = "iscsi") -> None:
        d = f"{self.tpg_dir(wwn, tag, fabric)}/lun/lun_{lun.index}"
        _unlink_links(d)
        _rmdir(d)

    def create_mapped_lun(self, wwn: str, tag: int, node: str, m: MappedLUN, fabric: str = "iscsi") -> None:
        tpg = self.tpg_dir(wwn, tag, fabric)
        d = f"{self.acl_dir(wwn, tag, node, fabric)}/lun_{m.index}"
        if not os.path.isdir(f"{tpg}/lun/lun_{m.tpg_lun}"):
            raise TargetError(f"{wwn} tpg{tag}: TPG LUN {m.tpg_lun} does not exist")
        try:
            os.mkdir(d)
        except OSError as e:
            raise TargetError(f"cannot create mapped_lun{m.index} for {node}: {e.strerror}") from None
        try:
            alias = m.alias or _alias()
            os.symlink(f"{tpg}/lun/lun_{m.tpg_lun}", f"{d}/{alias}")
            m.alias = alias
            write(f"{d}/write_protect", "1" if m.write_protect else "0")
        except OSError as e:
            self.delete_mapped_lun(wwn, tag, node, m, fabric)
            raise TargetError(f"cannot map lun{m.tpg_lun} for {node}: {e.strerror}") from None
        except BaseException:
            self.delete_mapped_lun(wwn, tag, node, m, fabric)
            raise

    def set_write_protect(self, wwn: str, tag: int, node: str, index: int, value: bool,
                          fabric: str = "iscsi") -> bool:
        path = f"{self.acl_dir(wwn, tag, node, fabric)}/lun_{index}/write_protect"
        old = read(path) == "1"
        write(path, "1" if value else "0")
        return old

    def delete_mapped_lun(self, wwn: str, tag: int, node: str, m: MappedLUN, fabric: str = "iscsi") -> None:
        d = f"{self.acl_dir(wwn, tag, node, fabric)}/lun_{m.index}"
        if os.path.isdir(d):
            _unlink_links(d)
            _rmdir(d)


def _unlink_links(d: str) -> None:
    try:
        with os.scandir(d) as it:
            for e in it:
                if e.is_symlink():
                    os.unlink(e.path)
    except FileNotFoundError:
        pass


def _rmdir(d: str) -> None:
    try:
        os.rmdir(d)
    except FileNotFoundError:
        pass
    except OSError as e:
        what = "it is in use" if e.errno in (errno.EBUSY, errno.ENOTEMPTY) else e.strerror
        raise TargetError(f"cannot remove {d}: {what}") from None

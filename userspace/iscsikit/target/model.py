"""The LIO configuration as plain data, shaped like the configfs tree.

One class per configfs directory kind, as rtslib has (StorageObject, Target,
TPG, LUN, NetworkPortal, NodeACL, MappedLUN), but with no I/O: the same
objects describe the running state (configfs.snapshot), a saveconfig.json
file (saveconfig.py), an imported IET/tgt file, and the shell's edits.
Children are held in dicts keyed the way the kernel keys them, so every
lookup the planner does is O(1) (rtslib's scans are what make targetctl
quadratic, lio-facts.md §5.2).

Config.check() holds the rules that span objects (a LUN's storage object
exists, a mapped LUN's TPG LUN exists, portals do not collide); the rules for
single values are in validate.py.
"""

from __future__ import annotations

import copy

from . import fabrics, validate
from .errors import ValidationError
from .record import dataclass, field

PLUGINS = ("fileio", "block", "ramdisk", "user", "pscsi")
# configfs HBA directory prefix per plugin (core/<prefix>_<N>/<name>)
HBA_PREFIX = {"fileio": "fileio", "block": "iblock", "ramdisk": "rd_mcp", "user": "user", "pscsi": "pscsi"}
PLUGIN_OF_PREFIX = {v: k for k, v in HBA_PREFIX.items()}
# saveconfig spellings rtslib also accepts on restore
PLUGIN_ALIASES = {"iblock": "block", "rd_mcp": "ramdisk"}


@dataclass
class Chap:
    userid: str = ""
    password: str = ""
    mutual_userid: str = ""
    mutual_password: str = ""

    def is_set(self) -> bool:
        return bool(self.userid or self.password or self.mutual_userid or self.mutual_password)

    def check(self, where: str) -> None:
        for name in validate.CHAP_FIELDS:
            setattr(self, name, validate.chap_value(getattr(self, name), f"{where} CHAP {name}"))
        validate.chap_set(self.userid, self.password, self.mutual_userid, self.mutual_password, where)


@dataclass
class StorageObject:
    plugin: str
    name: str
    dev: str | None = None              # fileio, block, pscsi
    size: int | None = None             # fileio (file), ramdisk, user
    wwn: str | None = None              # T10 unit serial; None = keep/generate
    write_back: bool = False            # fileio: fd_buffered_io + emulate_write_cache
    aio: bool = False                   # fileio
    readonly: bool = False              # block
    exclusive: bool = True              # block (rtslib 2.2.4 key)
    nullio: bool = False                # ramdisk
    config: str | None = None           # user: "<handler>/<cfgstring>"
    hw_max_sectors: int | None = None   # user
    control: str | None = None          # user: extra "k=v,k=v" control string
    attributes: dict = field(default_factory=dict)
    alua_tpgs: list = field(default_factory=list)
    # what the running kernel said; never compared or saved
    hba_index: int | None = field(default=None, compare=False)
    status: str | None = field(default=None, compare=False)
    is_block_dev: bool = field(default=False, compare=False)

    @property
    def key(self) -> tuple[str, str]:
        return (self.plugin, self.name)

    @property
    def path(self) -> str:
        return f"/backstores/{self.plugin}/{self.name}"

    def creation(self) -> dict:
        """The fields fixed when the kernel object is made; a change means delete and recreate."""
        p = self.plugin
        if p == "fileio":
            d = {"dev": self.dev, "write_back": self.write_back, "aio": self.aio}
            if not (self.dev or "").startswith("/dev/"):
                d["size"] = self.size
        elif p == "block":
            d = {"dev": self.dev, "readonly": self.readonly, "exclusive": self.exclusive}
        elif p == "ramdisk":
            d = {"size": self.size, "nullio": self.nullio}
        elif p == "user":
            d = {"config": self.config, "size": self.size}
        else:
            d = {"dev": self.dev}
        # The kernel refuses a block size change while the device is exported.
        if "block_size" in self.attributes:
            d["block_size"] = int(self.attributes["block_size"])
        return d

    def check(self) -> None:
        where = f"storage object {self.plugin}/{self.name}"
        if self.plugin not in PLUGINS:
            raise ValidationError(f"{where}: unknown backstore {self.plugin!r} (one of {', '.join(PLUGINS)})")
        validate.so_name(self.name)
        if self.wwn is not None:
            validate.unit_serial(self.wwn)
        if self.plugin in ("fileio", "block", "pscsi"):
            if not self.dev:
                raise ValidationError(f"{where}: needs a device or file path")
            if self.plugin != "pscsi":
                validate.path(self.dev, f"{where} path")
        if self.plugin == "fileio" and not self.dev.startswith("/dev/") and self.size is None:
            raise ValidationError(f"{where}: a file needs a size")
        if self.plugin in ("ramdisk", "user"):
            if self.size is None:
                raise ValidationError(f"{where}: needs a size")
        if self.size is not None:
            self.size = validate.size(self.size, f"{where} size")
        if self.plugin == "user":
            if not self.config:
                raise ValidationError(f"{where}: needs a config string '<handler>/<config>'")
            validate.tcmu_config(self.config)
            if self.hw_max_sectors is not None:
                self.hw_max_sectors = validate.integer(self.hw_max_sectors, 1, 1 << 20, f"{where} hw_max_sectors")
        self.attributes = {k: validate.so_attribute(k, v, where) for k, v in self.attributes.items()}


@dataclass
class LUN:
    index: int
    storage_object: str                 # "/backstores/<plugin>/<name>"
    alias: str | None = None            # symlink name; generated when None
    alua_tg_pt_gp_name: str | None = "default_tg_pt_gp"

    @property
    def so_key(self) -> tuple[str, str]:
        parts = self.storage_object.strip("/").split("/")
        if len(parts) != 3 or parts[0] != "backstores":
            raise ValidationError(f"LUN {self.index}: storage object {self.storage_object!r} "
                                  f"is not /backstores/<plugin>/<name>")
        plugin = PLUGIN_ALIASES.get(parts[1], parts[1])
        return (plugin, parts[2])


@dataclass
class Portal:
    ip_address: str
    port: int = 3260
    iser: bool = False
    offload: bool = False

    @property
    def key(self) -> tuple:
        return validate.portal_key(self.ip_address, self.port)

    @property
    def dirname(self) -> str:
        return f"{self.ip_address}:{self.port}"


@dataclass
class MappedLUN:
    index: int
    tpg_lun: int
    write_protect: bool = False
    alias: str | None = None


@dataclass
class NodeACL:
    node_wwn: str
    attributes: dict = field(default_factory=dict)
    mapped_luns: dict = field(default_factory=dict)     # index -> MappedLUN
    tag: str | None = None
    chap: Chap = field(default_factory=Chap)
    tcq_depth: int | None = None


@dataclass
class TPG:
    tag: int
    enable: bool = True
    attributes: dict = field(default_factory=dict)
    parameters: dict = field(default_factory=dict)
    luns: dict = field(default_factory=dict)            # index -> LUN
    portals: dict = field(default_factory=dict)         # portal_key -> Portal
    node_acls: dict = field(default_factory=dict)       # node_wwn -> NodeACL
    chap: Chap = field(default_factory=Chap)
    # loopback/vhost/usb_gadget/xen: the I_T nexus initiator WWN; rtslib neither saves nor
    # compares it and makes a new one with each TPG, so neither do we
    nexus: str | None = field(default=None, compare=False)


@dataclass
class Target:
    wwn: str
    fabric: str = "iscsi"
    tpgs: dict = field(default_factory=dict)            # tag -> TPG
    attributes: dict = field(default_factory=dict)
    parameters: dict = field(default_factory=dict)


@dataclass
class Discovery:
    enable: bool = False
    chap: Chap = field(default_factory=Chap)


@dataclass
class Config:
    storage_objects: dict = field(default_factory=dict)  # (plugin, name) -> StorageObject
    targets: dict = field(default_factory=dict)          # wwn -> Target (iSCSI)
    discovery: Discovery = field(default_factory=Discovery)
    # every other fabric's targets (loopback, vhost, FC, SRP ...): (fabric, wwn) -> Target.
    # Kept apart so the iSCSI code keys by wwn alone; plan.py and saveconfig.py walk both.
    fabric_targets: dict = field(default_factory=dict)

    def all_targets(self) -> dict:
        """(fabric, wwn) -> Target over every fabric, iSCSI first."""
        out = {("iscsi", w): t for w, t in self.targets.items()}
        out.update(self.fabric_targets)
        return out

    def copy(self) -> "Config":
        return copy.deepcopy(self)

    def so_by_path(self, path: str) -> StorageObject | None:
        parts = path.strip("/").split("/")
        if len(parts) != 3:
            return None
        return self.storage_objects.get((PLUGIN_ALIASES.get(parts[1], parts[1]), parts[2]))

    def luns_using(self, key: tuple[str, str]):
        """(Target, TPG, LUN) for each TPG LUN of any fabric exporting the storage object."""
        for t in self.all_targets().values():
            for tpg in t.tpgs.values():
                for lun in tpg.luns.values():
                    if lun.so_key == key:
                        yield t, tpg, lun

    def drop_so(self, key: tuple[str, str]) -> None:
        """Remove a storage object with every LUN that exports it and the mapped LUNs on those
        (what rtslib's StorageObject.delete() does, in any fabric)."""
        for _, tpg, lun in list(self.luns_using(key)):
            del tpg.luns[lun.index]
            for acl in tpg.node_acls.values():
                for m in [m for m in acl.mapped_luns.values() if m.tpg_lun == lun.index]:
                    del acl.mapped_luns[m.index]
        self.storage_objects.pop(key, None)

    def check(self) -> None:
        """Rules across objects; raises ValidationError naming the first broken one."""
        devs: dict[str, str] = {}
        for so in self.storage_objects.values():
            so.check()
            if so.plugin in ("fileio", "block") and so.dev:
                other = devs.setdefault(so.dev, so.path)
                if other != so.path:
                    raise ValidationError(f"{so.path} and {other} both use {so.dev}")
        self.discovery.chap.check("discovery auth")
        if self.discovery.enable and not self.discovery.chap.userid:
            raise ValidationError("discovery auth is enabled but has no CHAP userid/password")
        self._check_fabric_targets()
        for t in self.targets.values():
            where_t = f"target {t.wwn}"
            if t.fabric != "iscsi":
                raise ValidationError(f"{where_t}: fabric {t.fabric!r} is not managed here (iscsi only)")
            validate.wwn(t.wwn, "target name")
            bound: dict = {}
            for tpg in t.tpgs.values():
                where = f"{where_t} tpg{tpg.tag}"
                validate.tpg_tag(tpg.tag)
                tpg.attributes = {k: validate.tpg_attribute(k, v, where) for k, v in tpg.attributes.items()}
                tpg.parameters = {k: validate.tpg_parameter(k, v, where) for k, v in tpg.parameters.items()}
                tpg.chap.check(where)
                for lun in tpg.luns.values():
                    validate.lun_index(lun.index, f"{where} LUN index")
                    if lun.so_key not in self.storage_objects:
                        raise ValidationError(f"{where} lun{lun.index}: storage object "
                                              f"{lun.storage_object} does not exist")
                    if lun.alias is not None:
                        validate.alias(lun.alias)
                self._check_portals(tpg, where, bound)
                for acl in tpg.node_acls.values():
                    where_a = f"{where} acl {acl.node_wwn}"
                    validate.wwn(acl.node_wwn, "initiator name")
                    acl.attributes = {k: validate.acl_attribute(k, v, where_a) for k, v in acl.attributes.items()}
                    acl.chap.check(where_a)
                    if acl.tcq_depth is not None:
                        acl.tcq_depth = validate.integer(acl.tcq_depth, 1, 512, f"{where_a} cmdsn_depth")
                    for m in acl.mapped_luns.values():
                        validate.lun_index(m.index, f"{where_a} mapped LUN index")
                        if m.tpg_lun not in tpg.luns:
                            raise ValidationError(f"{where_a} mapped_lun{m.index}: TPG LUN {m.tpg_lun} does not exist")
                        if m.alias is not None:
                            validate.alias(m.alias)

    def _check_fabric_targets(self) -> None:
        """The rules for loopback, vhost, FC ... targets: what the fabric has (fabrics.py)."""
        for (fname, wwn), t in self.fabric_targets.items():
            fab = fabrics.get(fname)
            where_t = f"{fname} target {wwn}"
            if fname == "iscsi" or t.fabric != fname or t.wwn != wwn:
                raise ValidationError(f"{where_t}: filed under the wrong fabric")
            fabrics.check_wwn(fab, wwn, where_t)
            if len(t.tpgs) > 1 and not fab.has("tpgts"):
                raise ValidationError(f"{where_t}: fabric {fname} has one TPG per target")
            for tpg in t.tpgs.values():
                where = f"{where_t} tpg{tpg.tag}"
                validate.tpg_tag(tpg.tag)
                if tpg.portals and not fab.has("nps"):
                    raise ValidationError(f"{where}: fabric {fname} has no network portals")
                if tpg.node_acls and not fab.has("acls"):
                    raise ValidationError(f"{where}: fabric {fname} has no ACLs")
                if tpg.chap.is_set() and not fab.has("auth"):
                    raise ValidationError(f"{where}: fabric {fname} has no CHAP")
                for lun in tpg.luns.values():
                    validate.lun_index(lun.index, f"{where} LUN index")
                    if lun.so_key not in self.storage_objects:
                        raise ValidationError(f"{where} lun{lun.index}: storage object "
                                              f"{lun.storage_object} does not exist")
                    if lun.alias is not None:
                        validate.alias(lun.alias)
                for acl in tpg.node_acls.values():
                    where_a = f"{where} acl {acl.node_wwn}"
                    fabrics.check_wwn(fab, acl.node_wwn, where_a)
                    for m in acl.mapped_luns.values():
                        validate.lun_index(m.index, f"{where_a} mapped LUN index")
                        if m.tpg_lun not in tpg.luns:
                            raise ValidationError(f"{where_a} mapped_lun{m.index}: TPG LUN {m.tpg_lun} does not exist")

    @staticmethod
    def _check_portals(tpg: TPG, where: str, bound: dict) -> None:
        for p in tpg.portals.values():
            validate.portal_ip(p.ip_address)
            validate.portal_port(p.port)
            addr, port = p.key
            # The kernel refuses one ip:port on two TPGs of the same target (EEXIST).
            other = bound.setdefault((addr, port), tpg.tag)
            if other != tpg.tag:
                raise ValidationError(f"{where}: portal {p.dirname} is already on tpg{other} of this target")
        # Linux refuses a specific bind on a port a wildcard socket already listens on
        # (targetcli-fb #46), so the kernel would fail halfway through.
        for p in tpg.portals.values():
            addr, port = p.key
            if addr.is_unspecified:
                for q in tpg.portals.values():
                    qa, qp = q.key
                    if qp == port and not qa.is_unspecified and (addr.version == 6 or qa.version == 4):
                        raise ValidationError(f"{where}: portal {q.dirname} collides with wildcard "
                                              f"portal {p.dirname}; delete one of them")

"""LIO's fabric modules as data: one row per fabric, as rtslib's fabric.py has one class each.

Every fabric's targets live under /sys/kernel/config/target/<dir>/<wwn>/tpgt_<T>
with the same lun/, acls/, np/, attrib/, param/ and auth/ groups (the kernel
makes them for every fabric: drivers/target/target_core_fabric_configfs.c);
what differs is which of them the fabric fills (rtslib's `features`), which
WWN forms it accepts and how it spells them in configfs, and the kernel
module behind it.  configfs.snapshot reads every row here, so a save keeps
loopback, vhost, FC or SRP targets that iscsikit did not make.

`makes` says which fabrics a restore may create and delete: those whose
targets are plain mkdirs with no hardware behind them, proven in the lab
guest (iSCSI, tcm_loop, vhost-scsi).  The targets of the other fabrics name
physical ports (an FC HBA's WWPN, an InfiniBand GID): iscsikit saves them and
recreates them from a file when the port is there, but never deletes one, so
a restore or clear can not lose what it could not put back.

Sources: rtslib-fb 2.2.4 rtslib/fabric.py (names, features, wwn_types,
to_fabric_wwn/from_fabric_wwn, kernel_module); the kernel's module names
(vhost-scsi is drivers/vhost/scsi.c, built as vhost_scsi.ko: rtslib's
"tcm_vhost" is its pre-3.x name).
"""

from __future__ import annotations

from .errors import ValidationError


class Fabric:
    """One fabric module (a plain class: the dataclasses import alone costs a one-shot
    command ~0.2 s in the lab guest, record.py)."""
    __slots__ = ("name", "dir", "features", "wwn_types", "modules", "wwn_form", "makes")

    def __init__(self, name: str, dir: str, features: frozenset, wwn_types: tuple, modules: tuple,
                 wwn_form: str = "same", makes: bool = False):
        self.name = name                # the saveconfig "fabric" value (rtslib's FabricModule name)
        self.dir = dir                  # the configfs directory under target/
        self.features = features        # rtslib's feature names: nps, acls, auth, tpgts, nexus, discovery_auth
        self.wwn_types = wwn_types
        self.modules = modules          # kernel modules to try, in order
        self.wwn_form = wwn_form        # how configfs spells the WWN: same | colon | strip_eui | ib_0x
        self.makes = makes              # a restore may create and delete its targets

    def __repr__(self) -> str:
        return f"Fabric({self.name!r})"

    def has(self, feature: str) -> bool:
        return feature in self.features

    def to_dir(self, wwn: str) -> str:
        """The configfs directory name of a normalised WWN (rtslib's to_fabric_wwn)."""
        if self.wwn_form == "colon":
            hexs = wwn[4:]
            return ":".join(hexs[i:i + 2] for i in range(0, len(hexs), 2))
        if self.wwn_form == "strip_eui":
            return wwn[4:]
        if self.wwn_form == "ib_0x":
            return "0x" + wwn[3:]
        return wwn

    def from_dir(self, name: str) -> str:
        """The normalised WWN of a configfs directory (rtslib's from_fabric_wwn)."""
        if self.wwn_form == "colon":
            return "naa." + name.replace(":", "")
        if self.wwn_form == "strip_eui":
            return "eui." + name
        if self.wwn_form == "ib_0x":
            return "ib." + name[2:]
        return name


def _f(name, dir=None, features=(), wwn_types=("free",), modules=None, wwn_form="same", makes=False):
    return Fabric(name, dir or name, frozenset(features), tuple(wwn_types),
                  tuple(modules or (f"{name}_target_mod",)), wwn_form, makes)


# rtslib's order (its fabric_modules dict), usb_gadget included: rtslib hides it
# from listings, but a target there is still configuration a save must keep.
FABRICS = {f.name: f for f in (
    _f("srpt", features=("acls",), wwn_types=("ib",), modules=("ib_srpt",), wwn_form="ib_0x"),
    _f("iscsi", features=("discovery_auth", "acls", "auth", "nps", "tpgts"), wwn_types=("iqn", "naa", "eui"),
       modules=("iscsi_target_mod",), makes=True),
    _f("loopback", features=("nexus",), wwn_types=("naa",), modules=("tcm_loop",), makes=True),
    _f("qla2xxx", features=("acls",), wwn_types=("naa",), modules=("tcm_qla2xxx",), wwn_form="colon"),
    _f("efct", features=("acls",), wwn_types=("naa",), modules=("efct",), wwn_form="colon"),
    _f("sbp", wwn_types=("eui",), modules=("sbp_target",), wwn_form="strip_eui"),
    _f("tcm_fc", dir="fc", features=("acls",), wwn_types=("naa",), modules=("tcm_fc",), wwn_form="colon"),
    _f("usb_gadget", features=("nexus",), wwn_types=("naa",), modules=("usb_f_tcm", "tcm_usb_gadget")),
    _f("vhost", features=("nexus", "acls", "tpgts"), wwn_types=("naa",), modules=("vhost_scsi", "tcm_vhost"),
       makes=True),
    _f("xen-pvscsi", features=("nexus", "tpgts"), wwn_types=("naa",), modules=("xen-scsiback",)),
    _f("ibmvscsis", modules=("ibmvscsis",)),
)}
BY_DIR = {f.dir: f for f in FABRICS.values()}
# fabric-level entries that are not targets (rtslib's target_names_excludes)
NOT_TARGETS = {"lio_version", "version", "discovery_auth", "cpus_allowed_list"}

# rtslib utils.normalize_wwn's patterns (compiled when first used: `re` is not imported
# by a one-shot command that does not need it)
_WWN = {
    "naa": r"^naa\.[125c-f][0-9a-f]{15}$",
    "eui": r"^eui\.[0-9a-f]{16}$",
    "ib": r"^ib\.[0-9a-f]{32}$",
}


def get(name: str) -> Fabric:
    try:
        return FABRICS[name]
    except KeyError:
        raise ValidationError(f"fabric {name!r} is not one LIO has (one of {', '.join(FABRICS)})") from None


def check_wwn(fabric: Fabric, wwn: str, where: str) -> str:
    """A non-iSCSI target or initiator WWN, normalised as rtslib keeps it."""
    if not isinstance(wwn, str) or not wwn.strip():
        raise ValidationError(f"{where}: WWN is empty")
    w = wwn.strip().lower()
    if "free" in fabric.wwn_types:
        if "/" in w or w in (".", ".."):
            raise ValidationError(f"{where}: WWN {wwn!r} cannot be a configfs name")
        return w
    import re
    if not any(re.match(_WWN[t], w) for t in fabric.wwn_types if t in _WWN):
        raise ValidationError(f"{where}: WWN {wwn!r} is not valid for fabric {fabric.name} "
                              f"(expected {' or '.join(fabric.wwn_types)})")
    return w

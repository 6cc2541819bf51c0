"""ALUA target port groups: made, changed and removed on a storage object, and a LUN moved
into one (SPC-4 §5.16; LIO: target_core_alua.c, target_core_configfs.c).

A storage object's groups live in core/<hba>/<so>/alua/<group>/ (default_tg_pt_gp always
there); a TPG LUN joins one by its name written to tpgt_N/lun/lun_M/alua_tg_pt_gp. That is
what lets dm-multipath tell paths apart: each TPG exports the object as a LUN in its own
group, and REPORT TARGET PORT GROUPS (sg_rtpg, multipath's ALUA prioritizer) reports each
group's access state. The values are rtslib's and targetcli's: integers, as the kernel's
files take them (alua_access_state 0 Active/Optimized, 1 Active/NonOptimized, 2 Standby,
3 Unavailable, 14 Offline, 15 Transitioning; alua_access_type 0 None, 1 Implicit,
2 Explicit, 3 both); names are accepted for the state and type.

The shell's alua nodes call these under the manager's lock; saveconfig reads the groups
back (configfs.snapshot) and restore makes them (configfs.Writer), as targetcli does.
"""

from __future__ import annotations

import os

from . import configfs, validate
from .errors import NotFoundError, TargetError, ValidationError
from .model import StorageObject

DEFAULT_GROUP = "default_tg_pt_gp"
ACCESS_STATES = {"active/optimized": 0, "active/nonoptimized": 1, "standby": 2, "unavailable": 3,
                 "lba_dependent": 4, "offline": 14, "transitioning": 15}
ACCESS_TYPES = {"none": 0, "implicit": 1, "explicit": 2, "implicit_and_explicit": 3}
# settable, with their bounds (target_core_configfs.c's stores check the same)
SETTABLE = {
    "alua_access_state": tuple(ACCESS_STATES.values()), "alua_access_status": (0, 1, 2),
    "alua_access_type": (0, 1, 2, 3), "alua_write_metadata": (0, 1), "preferred": (0, 1),
    "nonop_delay_msecs": range(0, 100001), "trans_delay_msecs": range(0, 30001),
    "implicit_trans_secs": range(0, 256), "tg_pt_gp_id": range(0, 65536),
    **{f"alua_support_{s}": (0, 1) for s in ("offline", "standby", "transitioning", "active_nonoptimized",
                                              "unavailable", "active_optimized")},
}
# the state needs the type set first (the kernel refuses an implicit transition unless the
# group allows implicit ALUA), the id before anything (a group without one is not valid)
_ORDER = ("tg_pt_gp_id", "alua_access_type")


def _dir(root: str, so: StorageObject) -> str:
    if so.hba_index is None:
        raise NotFoundError(f"{so.path} is not in configfs")
    return f"{configfs.so_dir(root, so)}/alua"


def groups(root: str, so: StorageObject) -> list[dict]:
    """The object's groups as saveconfig.json holds them (default_tg_pt_gp included)."""
    return configfs._read_alua(_dir(root, so))


def access_states(root: str, so: StorageObject) -> list[tuple[str, int | None]]:
    """(name, alua_access_state) of each group: what a listing shows, one file per group."""
    try:
        d = _dir(root, so)
        names = sorted(os.listdir(d))
    except (OSError, TargetError):
        return []
    out = []
    for name in names:
        try:
            out.append((name, int(configfs.read(f"{d}/{name}/alua_access_state"))))
        except (OSError, ValueError):
            out.append((name, None))
    return out


def _value(name: str, value) -> int:
    if name not in SETTABLE:
        raise ValidationError(f"unknown ALUA parameter {name} (one of {', '.join(sorted(SETTABLE))})")
    text = str(value).strip().lower().replace("-", "").replace(" ", "_")
    words = {"alua_access_state": ACCESS_STATES, "alua_access_type": ACCESS_TYPES}.get(name, {})
    if text in {k.replace("-", "") for k in words}:
        n = {k.replace("-", ""): v for k, v in words.items()}[text]
    else:
        try:
            n = int(text)
        except ValueError:
            raise ValidationError(f"{name}: {value!r} is not a number"
                                  + (f" or one of {', '.join(words)}" if words else "")) from None
    if n not in SETTABLE[name]:
        raise ValidationError(f"{name}: {n} is out of range")
    return n


def create(root: str, so: StorageObject, name: str, tag) -> None:
    """A new group `name` with id `tag`; nothing is left when the kernel refuses."""
    validate.so_name(name)
    if name == DEFAULT_GROUP:
        raise ValidationError(f"{DEFAULT_GROUP} always exists")
    tag = _value("tg_pt_gp_id", tag)
    d = _dir(root, so)
    if any(g["tg_pt_gp_id"] == tag for g in groups(root, so)):
        raise ValidationError(f"{so.path}: an ALUA group already has tag {tag}")
    try:
        os.mkdir(f"{d}/{name}")
    except FileExistsError:
        raise ValidationError(f"{so.path}: ALUA group {name} already exists") from None
    except OSError as e:
        raise TargetError(f"cannot create ALUA group {name}: {e.strerror}") from None
    try:
        configfs.write(f"{d}/{name}/tg_pt_gp_id", str(tag))
    except TargetError:
        configfs._rmdir(f"{d}/{name}")
        raise


def delete(root: str, so: StorageObject, name: str) -> None:
    """Remove group `name`; the kernel moves its LUNs back to default_tg_pt_gp."""
    if name == DEFAULT_GROUP:
        raise ValidationError(f"{DEFAULT_GROUP} cannot be deleted")
    d = f"{_dir(root, so)}/{name}"
    if not os.path.isdir(d):
        raise NotFoundError(f"{so.path}: no ALUA group {name}")
    configfs._rmdir(d)


def members(root: str, so: StorageObject, name: str) -> list[str]:
    """The LUNs in group `name`, as the kernel lists them ("iSCSI/<wwn>/tpgt_N/lun_M":
    target_core_alua.c core_alua_show_tg_pt_gp_members)."""
    try:
        return configfs.read(f"{_dir(root, so)}/{name}/members").split()
    except OSError:
        return []


def get(root: str, so: StorageObject, name: str, param: str) -> str:
    d = f"{_dir(root, so)}/{name}"
    if not os.path.isdir(d):
        raise NotFoundError(f"{so.path}: no ALUA group {name}")
    return configfs.read(f"{d}/{param}")


def set_values(root: str, so: StorageObject, name: str, values: dict) -> None:
    """Write the group's parameters; on a refusal the ones written are put back."""
    d = f"{_dir(root, so)}/{name}"
    if not os.path.isdir(d):
        raise NotFoundError(f"{so.path}: no ALUA group {name}")
    typed = {k: _value(k, v) for k, v in values.items()}
    before = {g["name"]: g for g in groups(root, so)}.get(name, {})
    done: list[str] = []
    try:
        for k in sorted(typed, key=lambda k: (_ORDER.index(k) if k in _ORDER else len(_ORDER))):
            configfs.write(f"{d}/{k}", str(typed[k]))
            done.append(k)
    except TargetError:
        for k in reversed(done):
            if k in before:
                try:
                    configfs.write(f"{d}/{k}", str(before[k]))
                except TargetError:
                    pass
        raise


def lun_group(root: str, wwn: str, tag: int, index: int) -> str | None:
    """The group LUN `index` of the TPG is in (the first line of its alua_tg_pt_gp file)."""
    d = f"{configfs.Writer(root).tpg_dir(wwn, tag)}/lun/lun_{index}"
    try:
        first = configfs.read(f"{d}/alua_tg_pt_gp").splitlines()
    except OSError:
        raise NotFoundError(f"no lun{index} in {wwn} tpg{tag}") from None
    return first[0].split(":", 1)[1].strip() if first and ":" in first[0] else None


def move_lun(root: str, wwn: str, tag: int, index: int, so: StorageObject, name: str) -> None:
    """Put LUN `index` (exporting `so`) into group `name` of `so`."""
    if not os.path.isdir(f"{_dir(root, so)}/{name}"):
        raise NotFoundError(f"{so.path}: no ALUA group {name}")
    d = f"{configfs.Writer(root).tpg_dir(wwn, tag)}/lun/lun_{index}"
    configfs.write(f"{d}/alua_tg_pt_gp", name)

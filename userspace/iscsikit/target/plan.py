"""The difference between two configurations, as an ordered list of steps.

plan(current, desired) is pure: no I/O.  Restoring a file that is already in
force yields no step at all, so no session is dropped; an object is deleted
and made again only when a field the kernel fixes at creation changed (a
storage object's file, size or block size; the storage object behind a LUN;
the TPG LUN behind a mapped LUN).

Only what `desired` states is compared: an attribute the file does not
mention keeps its running value (rtslib's restore does the same).

Order: disable TPGs that go away, then remove bottom-up (mapped LUNs, ACLs,
LUNs, portals, TPGs, targets, storage objects), then create top-down, then
enable.  The executor (apply.py) undoes the steps it did, in reverse, when a
later one fails.
"""

from __future__ import annotations

import copy

from . import fabrics
from .model import Config, StorageObject
from .record import dataclass, field

# Steps sort by phase first; inside a phase they keep the order they were made in.
PHASES = [
    "tpg_disable",
    "mlun_delete", "acl_delete", "lun_delete", "portal_delete", "tpg_delete", "target_delete",
    "so_delete",
    "so_create", "so_attrs", "alua_free_id", "alua_create", "alua_attrs",
    "target_create", "target_params",
    "tpg_create", "tpg_attrs", "tpg_params", "tpg_auth",
    "lun_create", "lun_alua", "alua_delete", "portal_create", "portal_flags",
    "acl_create", "acl_attrs", "acl_auth", "acl_tag", "acl_depth",
    "mlun_create", "mlun_wp",
    "tpg_enable",
    "discovery_auth",
]
_ORDER = {name: i for i, name in enumerate(PHASES)}


@dataclass
class Step:
    op: str
    target: str | None = None           # target wwn
    tag: int | None = None              # TPG tag
    node: str | None = None             # initiator wwn
    obj: object = None                  # the model object the step makes or removes
    values: dict = field(default_factory=dict)
    fabric: str = "iscsi"               # the target's fabric (fabrics.py)

    def describe(self) -> str:
        fabric = None if self.fabric == "iscsi" else self.fabric
        tpg = f"tpg{self.tag}" if self.tag is not None else None
        where = " ".join(x for x in (fabric, self.target, tpg, self.node) if x)
        what = ""
        obj = self.obj
        if isinstance(obj, StorageObject):
            what = obj.path
        elif obj is not None and hasattr(obj, "index"):
            what = f"lun{obj.index}"
        elif obj is not None and hasattr(obj, "dirname"):
            what = obj.dirname
        vals = ", ".join(f"{k}={'***' if 'password' in k else v}" for k, v in self.values.items())
        return " ".join(x for x in (self.op, where, what, vals) if x)


def _norm(v) -> str:
    if isinstance(v, bool):
        return str(int(v))
    return str(v).strip()


def _changed(current: dict, desired: dict) -> dict:
    """The desired values that differ from the running ones (missing counts as different)."""
    return {k: v for k, v in desired.items() if k not in current or _norm(current[k]) != _norm(v)}


def _chap_values(chap) -> dict:
    return {f: getattr(chap, f) for f in ("userid", "password", "mutual_userid", "mutual_password")}


DEFAULT_ALUA_GROUP = "default_tg_pt_gp"


def _alua_steps(add, cur: StorageObject, new: StorageObject, in_use: set) -> set:
    """A kept object's ALUA groups made equal to the file's, as targetcli's restore with
    clear_existing (which deletes the object and makes it again with the file's groups) ends:
    missing ones made, values that differ written (targetcli's integers, configfs.ALUA_RW),
    running ones the file does not have deleted. Only when the running groups were read
    (configfs: a snapshot reads them when the file names a group or the object runs one
    besides default_tg_pt_gp), whose values are never compared (targetcli's restore leaves
    it at the kernel's, ours as it runs).

    `in_use`: the groups LUNs of the desired tree are in (the restore keeps them, e.g. a LUN
    outside a selective restore): such a group is not deleted. A group whose id changes is
    made again (the kernel takes a group's tg_pt_gp_id once, target_core_alua.c
    core_alua_set_tg_pt_gp_id) and so is freed early, like a running group whose id a new one
    takes; the kernel moves the LUNs of a removed group to default_tg_pt_gp
    (core_alua_free_tg_pt_gp), and the LUNs of a remade one are put back (lun_alua).
    Returns the names of the remade groups."""
    if not cur.alua_tpgs:
        return set()
    running = {g["name"]: g for g in cur.alua_tpgs}
    named, remade, new_ids = set(), set(), set()
    for g in new.alua_tpgs:
        name = g.get("name")
        if name in (None, DEFAULT_ALUA_GROUP):
            continue
        named.add(name)
        wanted = {k: v for k, v in g.items() if k != "name" and v is not None}
        have = running.get(name)
        if have is not None and "tg_pt_gp_id" in wanted and _norm(have.get("tg_pt_gp_id")) != _norm(wanted["tg_pt_gp_id"]):
            remade.add(name)
            have = None
        if have is None:
            new_ids.add(_norm(wanted.get("tg_pt_gp_id")))
            add(Step("alua_create", obj=new, values={"name": name, **_status_last(wanted, wanted)}))
        elif (vals := {k: v for k, v in wanted.items() if _norm(have.get(k)) != _norm(v)}):
            add(Step("alua_attrs", obj=new, values={"name": name, **_status_last(vals, wanted)}))
    for name, g in running.items():
        if name == DEFAULT_ALUA_GROUP or (name in named and name not in remade):
            continue
        if name in remade or _norm(g.get("tg_pt_gp_id")) in new_ids:
            if name in remade or name not in in_use:
                add(Step("alua_free_id", obj=new, values={"name": name}))
        elif name not in in_use:
            add(Step("alua_delete", obj=new, values={"name": name}))
    return remade


def _status_last(vals: dict, wanted: dict) -> dict:
    """A state write sets the group's alua_access_status to "Altered by Implicit ALUA"
    (target_core_alua.c core_alua_do_transition_tg_pt): the file's status goes after it."""
    if "alua_access_state" in vals and "alua_access_status" in wanted:
        vals = {k: v for k, v in vals.items() if k != "alua_access_status"}
        vals["alua_access_status"] = wanted["alua_access_status"]
    return vals


def _so_same(cur: StorageObject, new: StorageObject) -> bool:
    a, b = cur.creation(), new.creation()
    for k, v in b.items():
        if k == "block_size" and k not in a:
            continue
        if a.get(k) != v:
            return False
    # a file without a wwn accepts whatever serial the kernel object has
    return new.wwn is None or new.wwn == cur.wwn


def _adder(steps: list[Step], fabric: str):
    """steps.append for the steps of one target: each is marked with the target's fabric."""
    def add(step: Step) -> None:
        step.fabric = fabric
        steps.append(step)
    return add


def plan(current: Config, desired: Config) -> list[Step]:
    steps: list[Step] = []

    kept_so = {k for k, so in desired.storage_objects.items()
               if k in current.storage_objects and _so_same(current.storage_objects[k], so)}

    # ---- what goes away (bottom-up) ------------------------------------------------
    cur_targets, des_targets = current.all_targets(), desired.all_targets()
    for key, ct in cur_targets.items():
        F, wwn = key
        add = _adder(steps, F)
        dt = des_targets.get(key)
        for tag, ctpg in ct.tpgs.items():
            dtpg = dt.tpgs.get(tag) if dt else None
            if dtpg is None:
                if ctpg.enable:
                    add(Step("tpg_disable", wwn, tag, values={"enable": False}))
                for acl in ctpg.node_acls.values():
                    for m in acl.mapped_luns.values():
                        add(Step("mlun_delete", wwn, tag, acl.node_wwn, m))
                    add(Step("acl_delete", wwn, tag, acl.node_wwn, acl))
                for lun in ctpg.luns.values():
                    add(Step("lun_delete", wwn, tag, obj=lun))
                for p in ctpg.portals.values():
                    add(Step("portal_delete", wwn, tag, obj=p))
                add(Step("tpg_delete", wwn, tag, obj=ctpg))
                continue
            kept_luns = {i for i, lun in ctpg.luns.items()
                         if i in dtpg.luns and dtpg.luns[i].so_key == lun.so_key and lun.so_key in kept_so}
            for acl in ctpg.node_acls.values():
                dacl = dtpg.node_acls.get(acl.node_wwn)
                for m in acl.mapped_luns.values():
                    dm = dacl.mapped_luns.get(m.index) if dacl else None
                    if dm is None or dm.tpg_lun != m.tpg_lun or m.tpg_lun not in kept_luns:
                        add(Step("mlun_delete", wwn, tag, acl.node_wwn, m))
                if dacl is None:
                    add(Step("acl_delete", wwn, tag, acl.node_wwn, acl))
            for i, lun in ctpg.luns.items():
                if i not in kept_luns:
                    add(Step("lun_delete", wwn, tag, obj=lun))
            for key, p in ctpg.portals.items():
                if key not in dtpg.portals:
                    add(Step("portal_delete", wwn, tag, obj=p))
        if dt is None:
            add(Step("target_delete", wwn, obj=ct))
    add = steps.append
    for key, so in current.storage_objects.items():
        if key not in kept_so:
            add(Step("so_delete", obj=so))

    # ---- storage objects -----------------------------------------------------------
    in_use: dict[tuple, set] = {}
    for dt in des_targets.values():
        for dtpg in dt.tpgs.values():
            for lun in dtpg.luns.values():
                in_use.setdefault(lun.so_key, set()).add(lun.alua_tg_pt_gp_name)
    remade: dict[tuple, set] = {}
    for key, so in desired.storage_objects.items():
        if key in kept_so:
            vals = _changed(current.storage_objects[key].attributes, so.attributes)
            vals.pop("block_size", None)
            if vals:
                add(Step("so_attrs", obj=so, values=vals))
            remade[key] = _alua_steps(add, current.storage_objects[key], so, in_use.get(key, set()))
        else:
            add(Step("so_create", obj=so))

    # ---- what comes (top-down) -----------------------------------------------------
    for key, dt in des_targets.items():
        F, wwn = key
        add = _adder(steps, F)
        ct = cur_targets.get(key)
        if ct is None:
            add(Step("target_create", wwn, obj=dt))
        vals = _changed(ct.parameters if ct else {}, dt.parameters)
        if vals:
            add(Step("target_params", wwn, values=vals))
        for tag, dtpg in dt.tpgs.items():
            ctpg = ct.tpgs.get(tag) if ct else None
            new_tpg = ctpg is None
            if new_tpg:
                add(Step("tpg_create", wwn, tag, obj=dtpg))
            cur_attrs = {} if new_tpg else ctpg.attributes
            cur_params = {} if new_tpg else ctpg.parameters
            # A new TPG starts at kernel defaults; the executor writes only what differs from them.
            if (vals := _changed(cur_attrs, dtpg.attributes)):
                add(Step("tpg_attrs", wwn, tag, values=vals))
            if (vals := _changed(cur_params, dtpg.parameters)):
                add(Step("tpg_params", wwn, tag, values=vals))
            cur_chap = {} if new_tpg else _chap_values(ctpg.chap)
            if (vals := _changed(cur_chap, _chap_values(dtpg.chap))) and (not new_tpg or dtpg.chap.is_set()):
                add(Step("tpg_auth", wwn, tag, values=_chap_values(dtpg.chap)))
            for i, lun in dtpg.luns.items():
                clun = None if new_tpg else ctpg.luns.get(i)
                if clun is None or clun.so_key != lun.so_key or lun.so_key not in kept_so:
                    add(Step("lun_create", wwn, tag, obj=lun))
                elif lun.alua_tg_pt_gp_name and clun.alua_tg_pt_gp_name \
                        and (lun.alua_tg_pt_gp_name != clun.alua_tg_pt_gp_name
                             or lun.alua_tg_pt_gp_name in remade.get(lun.so_key, ())):
                    add(Step("lun_alua", wwn, tag, obj=lun, values={"alua_tg_pt_gp_name": lun.alua_tg_pt_gp_name}))
            for key, p in dtpg.portals.items():
                cp = None if new_tpg else ctpg.portals.get(key)
                if cp is None:
                    add(Step("portal_create", wwn, tag, obj=p))
                    if p.iser or p.offload:
                        add(Step("portal_flags", wwn, tag, obj=p, values={"iser": p.iser, "offload": p.offload}))
                elif (cp.iser, cp.offload) != (p.iser, p.offload):
                    add(Step("portal_flags", wwn, tag, obj=p, values={"iser": p.iser, "offload": p.offload}))
            for node, acl in dtpg.node_acls.items():
                cacl = None if new_tpg else ctpg.node_acls.get(node)
                if cacl is None:
                    add(Step("acl_create", wwn, tag, node, acl))
                if (vals := _changed(cacl.attributes if cacl else {}, acl.attributes)):
                    add(Step("acl_attrs", wwn, tag, node, values=vals))
                if _changed(_chap_values(cacl.chap) if cacl else {}, _chap_values(acl.chap)) \
                        and (cacl is not None or acl.chap.is_set()):
                    add(Step("acl_auth", wwn, tag, node, values=_chap_values(acl.chap)))
                if (cacl.tag if cacl else None) != acl.tag:
                    add(Step("acl_tag", wwn, tag, node, values={"tag": acl.tag}))
                if acl.tcq_depth is not None and (cacl is None or cacl.tcq_depth != acl.tcq_depth):
                    add(Step("acl_depth", wwn, tag, node, values={"tcq_depth": acl.tcq_depth}))
                for i, m in acl.mapped_luns.items():
                    cm = cacl.mapped_luns.get(i) if cacl else None
                    clun = None if new_tpg else ctpg.luns.get(m.tpg_lun)
                    lun_kept = (clun is not None and clun.so_key == dtpg.luns[m.tpg_lun].so_key
                                and clun.so_key in kept_so)
                    if cm is None or cm.tpg_lun != m.tpg_lun or not lun_kept:
                        add(Step("mlun_create", wwn, tag, node, m))
                    elif cm.write_protect != m.write_protect:
                        add(Step("mlun_wp", wwn, tag, node, m, values={"write_protect": m.write_protect}))
            if dtpg.enable and (new_tpg or not ctpg.enable):
                add(Step("tpg_enable", wwn, tag, values={"enable": True}))
            elif not dtpg.enable and not new_tpg and ctpg.enable:
                add(Step("tpg_disable", wwn, tag, values={"enable": False}))

    add = steps.append
    cd, dd = current.discovery, desired.discovery
    if (cd.enable, _chap_values(cd.chap)) != (dd.enable, _chap_values(dd.chap)):
        add(Step("discovery_auth", values={"enable": dd.enable, **_chap_values(dd.chap)}))

    steps.sort(key=lambda s: _ORDER[s.op])
    return steps


def keep_unmade(current: Config, desired: Config) -> list[str]:
    """Put back into `desired` what a plan must not delete: the objects of fabrics a
    restore cannot create again (fabrics.py `makes`: FC, SRP ... name hardware ports).

    Everything of such a target that runs and `desired` lacks (the target, a TPG,
    a LUN, an ACL, a mapped LUN) is copied in, with the storage objects its LUNs
    export.  Returns one line per target kept, for the user.
    """
    kept = []
    for (F, wwn), ct in current.fabric_targets.items():
        if fabrics.FABRICS[F].makes:
            continue
        dt = desired.fabric_targets.get((F, wwn))
        if dt is None:
            desired.fabric_targets[(F, wwn)] = dt = copy.deepcopy(ct)
            kept.append(f"{F} target {wwn} kept: iscsikit cannot make a {F} target again once deleted "
                        f"(remove it with targetcli)")
        for tag, ctpg in ct.tpgs.items():
            dtpg = dt.tpgs.setdefault(tag, copy.deepcopy(ctpg))
            for i, lun in ctpg.luns.items():
                dtpg.luns.setdefault(i, copy.deepcopy(lun))
            for node, acl in ctpg.node_acls.items():
                dacl = dtpg.node_acls.setdefault(node, copy.deepcopy(acl))
                for i, m in acl.mapped_luns.items():
                    dacl.mapped_luns.setdefault(i, copy.deepcopy(m))
            for lun in dtpg.luns.values():
                key = lun.so_key
                if key not in desired.storage_objects and key in current.storage_objects:
                    desired.storage_objects[key] = copy.deepcopy(current.storage_objects[key])
    return kept

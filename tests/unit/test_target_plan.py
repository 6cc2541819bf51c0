"""The restore planner: only the difference, in an order configfs accepts."""

import copy
import json
from pathlib import Path

from hypothesis import given, settings, strategies as st

from iscsikit.target import saveconfig
from iscsikit.target.model import Chap, Config, LUN, MappedLUN, NodeACL, Portal, StorageObject, Target, TPG
from iscsikit.target.plan import PHASES, plan

DATA = Path(__file__).parent.parent / "data" / "target"
T = "iqn.2024-01.com.example:t1"
I1 = "iqn.2024-01.com.example:init1"


def load():
    return saveconfig.from_dict(json.loads((DATA / "targetcli-2.1.53.json").read_text()))


def ops(steps):
    return [s.op for s in steps]


def test_same_file_twice_is_no_op():
    assert plan(load(), load()) == []


def test_from_empty_builds_top_down_and_enables_last():
    steps = plan(Config(), load())
    o = ops(steps)
    assert o.index("so_create") < o.index("target_create") < o.index("tpg_create") < o.index("lun_create")
    assert o.index("lun_create") < o.index("mlun_create") < o.index("tpg_enable")
    assert o[-1] == "tpg_enable"
    assert o.count("so_create") == 2 and o.count("mlun_create") == 2


def test_clear_tears_down_bottom_up_after_disabling():
    o = ops(plan(load(), Config()))
    assert o[0] == "tpg_disable"
    assert o.index("mlun_delete") < o.index("acl_delete") < o.index("lun_delete") < o.index("tpg_delete")
    assert o.index("tpg_delete") < o.index("target_delete") < o.index("so_delete")
    assert "so_create" not in o


def test_write_protect_change_touches_nothing_else():
    new = load()
    new.targets[T].tpgs[1].node_acls[I1].mapped_luns[0].write_protect = True
    steps = plan(load(), new)
    assert ops(steps) == ["mlun_wp"]
    assert steps[0].values == {"write_protect": True}


def test_attribute_change_writes_only_that_key():
    new = load()
    new.targets[T].tpgs[1].attributes["authentication"] = 1
    new.targets[T].tpgs[1].parameters["HeaderDigest"] = "CRC32C"
    new.storage_objects[("fileio", "d1")].attributes["emulate_tpu"] = 1
    steps = plan(load(), new)
    assert {s.op: s.values for s in steps} == {
        "tpg_attrs": {"authentication": 1}, "tpg_params": {"HeaderDigest": "CRC32C"},
        "so_attrs": {"emulate_tpu": 1}}


def test_resized_backstore_is_remade_with_its_luns_and_mappings():
    new = load()
    new.storage_objects[("fileio", "d1")].size = 128 << 20
    steps = plan(load(), new)
    assert sorted(ops(steps)) == sorted(["mlun_delete", "lun_delete", "so_delete", "so_create", "lun_create",
                                         "mlun_create"])
    assert all(getattr(s.obj, "index", 0) == 0 for s in steps if s.op.startswith(("lun", "mlun")))


def test_block_size_change_remakes_the_object():
    new = load()
    new.storage_objects[("ramdisk", "r1")].attributes["block_size"] = 4096
    assert "so_create" in ops(plan(load(), new))


def test_file_without_wwn_or_alias_accepts_the_running_ones():
    new = load()
    for so in new.storage_objects.values():
        so.wwn = None
    for lun in new.targets[T].tpgs[1].luns.values():
        lun.alias = None
    assert plan(load(), new) == []


def test_portal_spellings_are_one_portal():
    a, b = load(), load()
    tpg_a, tpg_b = a.targets[T].tpgs[1], b.targets[T].tpgs[1]
    pa, pb = Portal("[::0]", 3260), Portal("[::]", 3260)
    tpg_a.portals = {pa.key: pa}
    tpg_b.portals = {pb.key: pb}
    assert plan(a, b) == []


def test_chap_change_and_removal():
    new = load()
    new.targets[T].tpgs[1].node_acls[I1].chap = Chap("u1", "p1secret", "m1", "m1secret1234")
    steps = plan(load(), new)
    assert ops(steps) == ["acl_auth"]
    assert steps[0].values["mutual_userid"] == "m1"
    new.targets[T].tpgs[1].node_acls[I1].chap = Chap()
    assert ops(plan(load(), new)) == ["acl_auth"]


def test_removing_an_acl_removes_its_mappings_first():
    new = load()
    del new.targets[T].tpgs[1].node_acls[I1]
    assert ops(plan(load(), new)) == ["mlun_delete", "mlun_delete", "acl_delete"]


def test_discovery_auth():
    new = load()
    new.discovery.enable = True
    new.discovery.chap = Chap("d", "dsecret12345")
    steps = plan(load(), new)
    assert ops(steps) == ["discovery_auth"] and steps[0].values["enable"] is True


def _with_groups(cfg, state=0, group="ao", lun_group="ao", tag=10):
    """The first storage object with a group `group` (tag, state) and LUN 0 of tpg1 in `lun_group`."""
    so = next(iter(cfg.storage_objects.values()))
    so.alua_tpgs = [{"name": "default_tg_pt_gp", "tg_pt_gp_id": 0, "alua_access_state": 0},
                    {"name": group, "tg_pt_gp_id": tag, "alua_access_state": state, "alua_access_type": 1,
                     "preferred": 0}]
    for lun in cfg.targets[T].tpgs[1].luns.values():
        if lun.so_key == so.key:
            lun.alua_tg_pt_gp_name = lun_group
    return cfg


def test_alua_same_groups_is_no_op():
    assert plan(_with_groups(load()), _with_groups(load())) == []


def test_alua_changed_state_writes_only_that_value():
    steps = plan(_with_groups(load(), state=0), _with_groups(load(), state=1))
    assert ops(steps) == ["alua_attrs"]
    assert steps[0].values == {"name": "ao", "alua_access_state": 1}


def test_alua_status_is_written_after_a_changed_state():
    # the kernel marks the status "Altered by Implicit ALUA" on a state write: the file's goes last
    current, desired = _with_groups(load(), state=0), _with_groups(load(), state=1)
    for cfg, status in ((current, 0), (desired, 0)):
        next(iter(cfg.storage_objects.values())).alua_tpgs[1] = {
            "alua_access_status": status, **next(iter(cfg.storage_objects.values())).alua_tpgs[1]}
    [step] = plan(current, desired)
    assert list(step.values) == ["name", "alua_access_state", "alua_access_status"]
    assert step.values["alua_access_status"] == 0


def test_alua_missing_group_is_made_before_a_lun_moves_into_it():
    current = _with_groups(load(), group="ao", lun_group="ao")
    desired = _with_groups(load(), group="ao", lun_group="ano")
    so = next(iter(desired.storage_objects.values()))
    so.alua_tpgs.append({"name": "ano", "tg_pt_gp_id": 20, "alua_access_state": 1})
    steps = plan(current, desired)
    assert ops(steps) == ["alua_create", "lun_alua"]
    assert steps[0].values == {"name": "ano", "tg_pt_gp_id": 20, "alua_access_state": 1}
    assert steps[1].values == {"alua_tg_pt_gp_name": "ano"} and steps[1].tag == 1


def test_alua_not_read_is_left_as_it_is():
    # the running groups were not read (none runs besides the default, and the file names
    # none): nothing to compare
    current = _with_groups(load(), lun_group="default_tg_pt_gp")
    next(iter(current.storage_objects.values())).alua_tpgs = []
    assert plan(current, load()) == []


def test_alua_group_the_file_lacks_is_deleted_after_its_luns_moved_out():
    # targetcli's restoreconfig clear_existing=true ends with the file's groups only
    current = _with_groups(load(), lun_group="ao")
    desired = load()          # targetcli's file: default_tg_pt_gp only, the LUN in it
    steps = plan(current, desired)
    assert ops(steps) == ["lun_alua", "alua_delete"]
    assert steps[0].values == {"alua_tg_pt_gp_name": "default_tg_pt_gp"}
    assert steps[1].values == {"name": "ao"}
    # a running extra group next to the file's: only it goes
    current, desired = _with_groups(load()), _with_groups(load())
    next(iter(current.storage_objects.values())).alua_tpgs.append({"name": "extra", "tg_pt_gp_id": 30})
    steps = plan(current, desired)
    assert ops(steps) == ["alua_delete"] and steps[0].values == {"name": "extra"}


def test_alua_group_a_kept_lun_is_in_is_not_deleted():
    # a LUN the restore keeps (outside a selective restore, an FC target kept) stays in its group
    current = _with_groups(load(), lun_group="ao")
    desired = _with_groups(load(), lun_group="ao")
    next(iter(desired.storage_objects.values())).alua_tpgs.pop()        # the file lacks ao
    assert plan(current, desired) == []


def test_alua_group_whose_id_changes_is_made_again_and_its_lun_put_back():
    # the kernel takes a group's id once (core_alua_set_tg_pt_gp_id): remade, not written
    current = _with_groups(load(), tag=10, lun_group="ao")
    desired = _with_groups(load(), tag=11, lun_group="ao")
    steps = plan(current, desired)
    assert ops(steps) == ["alua_free_id", "alua_create", "lun_alua"]
    assert steps[1].values["tg_pt_gp_id"] == 11 and steps[2].values == {"alua_tg_pt_gp_name": "ao"}


def test_alua_running_group_whose_id_a_new_one_takes_is_freed_first():
    current = _with_groups(load(), group="old", tag=10, lun_group="old")
    desired = _with_groups(load(), group="ao", tag=10, lun_group="ao")
    steps = plan(current, desired)
    assert ops(steps) == ["alua_free_id", "alua_create", "lun_alua"]
    assert steps[0].values == {"name": "old"} and steps[1].values["name"] == "ao"


# ---- merge and selective restores (manager.select) ----

def _running_with(lun_group=None):
    """The file's tree running, its first object with group ao (tpg1's LUN in it, or not)."""
    cfg = _with_groups(load(), lun_group=lun_group or "ao")
    return cfg


def test_merge_makes_a_group_a_new_targets_lun_needs_from_the_file():
    from iscsikit.target.manager import select
    running = load()
    del running.targets[T]                      # the target is new, its storage object runs
    groups = {so.key: [{"name": "default_tg_pt_gp", "tg_pt_gp_id": 0}] for so in running.storage_objects.values()}
    file = _with_groups(load(), lun_group="ao")
    warnings = []
    desired = select(running, file, False, None, None, warnings, groups_of=lambda so: groups[so.key])
    steps = plan(running, desired)
    assert ops(steps)[0] == "alua_create" and steps[0].values["name"] == "ao"
    assert "lun_create" in ops(steps) and "alua_delete" not in ops(steps)
    assert any("ALUA group ao made from the file" in w for w in warnings)
    # the file does not define it: nothing changes, the error names it
    file = _with_groups(load(), lun_group="ao")
    next(iter(file.storage_objects.values())).alua_tpgs.pop()
    try:
        select(running, file, False, None, None, [], groups_of=lambda so: groups[so.key])
    except Exception as e:
        assert "ALUA group ao" in str(e)
    else:
        raise AssertionError("a LUN in a group nobody defines was accepted")


def test_merge_keeps_a_running_objects_groups_as_they_run():
    from iscsikit.target.manager import select
    running = _running_with()
    file = _with_groups(load(), state=1)        # the file's ao differs
    desired = select(running, file, False, None, None, [], groups_of=lambda so: so.alua_tpgs)
    assert plan(running, desired) == []


def test_selective_storage_object_restore_compares_its_groups_and_keeps_ones_in_use():
    from iscsikit.target.manager import select
    so_name = next(iter(load().storage_objects.values())).name
    running = _running_with(lun_group="ao")
    groups = {k: copy.deepcopy(so.alua_tpgs) for k, so in running.storage_objects.items()}
    running.storage_objects[next(iter(groups))].alua_tpgs = []       # as the restore's snapshot: unread
    file = _with_groups(load(), state=1, lun_group="ao")
    so = next(iter(file.storage_objects.values()))
    so.alua_tpgs.append({"name": "ano", "tg_pt_gp_id": 20, "alua_access_state": 1})
    desired = select(running, file, True, None, so_name, [], groups_of=lambda so: groups[so.key])
    steps = plan(running, desired)
    assert ops(steps) == ["alua_create", "alua_attrs"]
    assert steps[1].values == {"name": "ao", "alua_access_state": 1}
    # the file's object lacks ao, but tpg1's LUN (not restored: storage_object= only) is in it
    running = _running_with(lun_group="ao")
    running.storage_objects[next(iter(groups))].alua_tpgs = []
    file = load()
    desired = select(running, file, True, None, so_name, [], groups_of=lambda so: groups[so.key])
    assert plan(running, desired) == []
    # a target= restore that moves its LUN out of ao (the object kept): ao is deleted after the move
    running = _running_with(lun_group="ao")
    running.storage_objects[next(iter(groups))].alua_tpgs = []
    desired = select(running, load(), True, T, None, [], groups_of=lambda so: groups[so.key])
    assert ops(plan(running, desired)) == ["lun_alua"]      # ao is the object's, not the target's: kept


# ---- property: any plan, replayed on a model of configfs, reaches the goal ----

class FakeConfigfs:
    """configfs's rules: no child without its parent, no rmdir of a parent with children,
    no deleting a storage object still exported."""

    def __init__(self, cfg: Config):
        self.c = copy.deepcopy(cfg)

    def run(self, steps):
        for s in steps:
            getattr(self, s.op)(s)
        return self.c

    def _tpg(self, s):
        return self.c.targets[s.target].tpgs[s.tag]

    def tpg_disable(self, s): self._tpg(s).enable = False
    def tpg_enable(self, s): self._tpg(s).enable = True

    def mlun_delete(self, s):
        del self._tpg(s).node_acls[s.node].mapped_luns[s.obj.index]

    def acl_delete(self, s):
        assert not self._tpg(s).node_acls[s.node].mapped_luns, "ACL still has mapped LUNs"
        del self._tpg(s).node_acls[s.node]

    def lun_delete(self, s):
        tpg = self._tpg(s)
        for acl in tpg.node_acls.values():
            assert all(m.tpg_lun != s.obj.index for m in acl.mapped_luns.values()), "LUN still mapped"
        del tpg.luns[s.obj.index]

    def portal_delete(self, s): del self._tpg(s).portals[s.obj.key]

    def tpg_delete(self, s):
        tpg = self._tpg(s)
        assert not (tpg.luns or tpg.node_acls or tpg.portals) and not tpg.enable
        del self.c.targets[s.target].tpgs[s.tag]

    def target_delete(self, s):
        assert not self.c.targets[s.target].tpgs
        del self.c.targets[s.target]

    def so_delete(self, s):
        assert not list(self.c.luns_using(s.obj.key)), "storage object still exported"
        del self.c.storage_objects[s.obj.key]

    def so_create(self, s):
        assert s.obj.key not in self.c.storage_objects
        self.c.storage_objects[s.obj.key] = copy.deepcopy(s.obj)

    def so_attrs(self, s): self.c.storage_objects[s.obj.key].attributes.update(s.values)

    def _luns_in(self, key, name):
        return [lun for t in self.c.targets.values() for tpg in t.tpgs.values() for lun in tpg.luns.values()
                if lun.so_key == key and lun.alua_tg_pt_gp_name == name]

    def alua_create(self, s):
        so = self.c.storage_objects[s.obj.key]
        assert s.values["name"] not in {g["name"] for g in so.alua_tpgs}
        assert s.values["tg_pt_gp_id"] not in {g.get("tg_pt_gp_id") for g in so.alua_tpgs}, "ALUA id taken"
        so.alua_tpgs.append(dict(s.values))

    def alua_free_id(self, s):
        # the kernel moves a removed group's LUNs to default_tg_pt_gp (core_alua_free_tg_pt_gp)
        so = self.c.storage_objects[s.obj.key]
        for lun in self._luns_in(so.key, s.values["name"]):
            lun.alua_tg_pt_gp_name = "default_tg_pt_gp"
        so.alua_tpgs = [g for g in so.alua_tpgs if g["name"] != s.values["name"]]

    def alua_delete(self, s):
        assert not self._luns_in(s.obj.key, s.values["name"]), "ALUA group deleted with a LUN in it"
        self.alua_free_id(s)

    def alua_attrs(self, s):
        so = self.c.storage_objects[s.obj.key]
        next(g for g in so.alua_tpgs if g["name"] == s.values["name"]).update(s.values)

    def lun_alua(self, s):
        so = self.c.storage_objects[s.obj.so_key]
        assert s.values["alua_tg_pt_gp_name"] in {g["name"] for g in so.alua_tpgs}, "no such ALUA group"
        self._tpg(s).luns[s.obj.index].alua_tg_pt_gp_name = s.values["alua_tg_pt_gp_name"]

    def target_create(self, s):
        assert s.target not in self.c.targets
        self.c.targets[s.target] = Target(s.target)

    def target_params(self, s): self.c.targets[s.target].parameters.update(s.values)

    def tpg_create(self, s):
        assert s.tag not in self.c.targets[s.target].tpgs
        self.c.targets[s.target].tpgs[s.tag] = TPG(s.tag, enable=False)

    def tpg_attrs(self, s): self._tpg(s).attributes.update(s.values)
    def tpg_params(self, s): self._tpg(s).parameters.update(s.values)
    def tpg_auth(self, s): self._tpg(s).chap = Chap(**s.values)

    def lun_create(self, s):
        assert s.obj.so_key in self.c.storage_objects and s.obj.index not in self._tpg(s).luns
        assert s.obj.alua_tg_pt_gp_name in {"default_tg_pt_gp"} | {
            g["name"] for g in self.c.storage_objects[s.obj.so_key].alua_tpgs}, "no such ALUA group"
        self._tpg(s).luns[s.obj.index] = copy.deepcopy(s.obj)

    def portal_create(self, s):
        self._tpg(s).portals[s.obj.key] = Portal(s.obj.ip_address, s.obj.port)

    def portal_flags(self, s):
        p = self._tpg(s).portals[s.obj.key]
        p.iser, p.offload = s.values["iser"], s.values["offload"]

    def acl_create(self, s):
        assert s.node not in self._tpg(s).node_acls
        self._tpg(s).node_acls[s.node] = NodeACL(s.node)

    def acl_attrs(self, s): self._tpg(s).node_acls[s.node].attributes.update(s.values)
    def acl_auth(self, s): self._tpg(s).node_acls[s.node].chap = Chap(**s.values)
    def acl_tag(self, s): self._tpg(s).node_acls[s.node].tag = s.values["tag"]
    def acl_depth(self, s): self._tpg(s).node_acls[s.node].tcq_depth = s.values["tcq_depth"]

    def mlun_create(self, s):
        tpg = self._tpg(s)
        assert s.obj.tpg_lun in tpg.luns and s.obj.index not in tpg.node_acls[s.node].mapped_luns
        tpg.node_acls[s.node].mapped_luns[s.obj.index] = copy.deepcopy(s.obj)

    def mlun_wp(self, s):
        self._tpg(s).node_acls[s.node].mapped_luns[s.obj.index].write_protect = s.values["write_protect"]

    def discovery_auth(self, s):
        v = dict(s.values)
        self.c.discovery.enable = v.pop("enable")
        self.c.discovery.chap = Chap(**v)


@st.composite
def configs(draw):
    cfg = Config()
    names = draw(st.lists(st.sampled_from(["a", "b", "c", "d"]), unique=True, max_size=4))
    for n in names:
        size = draw(st.sampled_from([1 << 20, 2 << 20]))
        cfg.storage_objects[("ramdisk", n)] = so = StorageObject(
            "ramdisk", n, size=size, wwn="w-" + n, attributes={"emulate_tpu": draw(st.integers(0, 1))})
        # ALUA groups: names and ids that collide across configs (a renamed group, a changed id)
        so.alua_tpgs = [{"name": "default_tg_pt_gp", "tg_pt_gp_id": 0}]
        ids = draw(st.lists(st.sampled_from([10, 20]), unique=True, max_size=2))
        for gname, gid in zip(draw(st.permutations(["ao", "ano", "sb"])), ids):
            so.alua_tpgs.append({"name": gname, "tg_pt_gp_id": gid, "alua_access_state": draw(st.sampled_from([0, 1]))})
    for t in draw(st.lists(st.sampled_from(["t1", "t2"]), unique=True, max_size=2)):
        wwn = f"iqn.2024-01.com.example:{t}"
        target = Target(wwn)
        for tag in draw(st.lists(st.integers(1, 2), unique=True, max_size=2)):
            tpg = TPG(tag, enable=draw(st.booleans()), attributes={"authentication": draw(st.integers(0, 1))})
            for i, n in enumerate(draw(st.lists(st.sampled_from(names), max_size=3)) if names else []):
                tpg.luns[i] = LUN(i, f"/backstores/ramdisk/{n}", alua_tg_pt_gp_name=draw(st.sampled_from(
                    [g["name"] for g in cfg.storage_objects[("ramdisk", n)].alua_tpgs])))
            p = Portal("0.0.0.0", 3260 + tag)
            tpg.portals[p.key] = p
            for node in draw(st.lists(st.sampled_from(["i1", "i2"]), unique=True, max_size=2)):
                acl = NodeACL(f"iqn.2024-01.com.example:{node}", chap=Chap("u", "secretsecret")
                              if draw(st.booleans()) else Chap())
                for m in draw(st.lists(st.sampled_from(sorted(tpg.luns)), unique=True)) if tpg.luns else []:
                    acl.mapped_luns[m] = MappedLUN(m, m, write_protect=draw(st.booleans()))
                tpg.node_acls[acl.node_wwn] = acl
            target.tpgs[tag] = tpg
        cfg.targets[wwn] = target
    return cfg


def _comparable(cfg: Config) -> dict:
    d = saveconfig.to_dict(cfg)
    for so in d["storage_objects"]:
        so["alua_tpgs"] = sorted(so["alua_tpgs"], key=lambda g: g["name"])
    for t in d["targets"]:
        for tpg in t["tpgs"]:
            for lun in tpg["luns"]:
                lun["alias"] = None
            for acl in tpg["node_acls"]:
                for m in acl["mapped_luns"]:
                    m["alias"] = None
    return d


@settings(max_examples=300, deadline=None)
@given(configs(), configs())
def test_any_plan_reaches_the_desired_state_in_a_legal_order(current, desired):
    steps = plan(current, desired)
    assert [PHASES.index(s.op) for s in steps] == sorted(PHASES.index(s.op) for s in steps)
    reached = FakeConfigfs(current).run(steps)
    assert _comparable(reached) == _comparable(desired)
    assert plan(reached, desired) == []

"""saveconfig.json: targetcli's files parse, and what we write is what rtslib writes."""

import json
import os
import stat
from pathlib import Path

import pytest

from iscsikit.target import saveconfig
from iscsikit.target.errors import NotFoundError, ValidationError
from iscsikit.target.model import Chap, Config, LUN, MappedLUN, NodeACL, Portal, StorageObject, Target, TPG

DATA = Path(__file__).parent.parent / "data" / "target"


def canon(x):
    """Lists in saveconfig.json are unordered sets (rtslib lists them in directory order)."""
    if isinstance(x, dict):
        return {k: canon(v) for k, v in x.items()}
    if isinstance(x, list):
        return sorted((canon(v) for v in x), key=lambda v: json.dumps(v, sort_keys=True))
    return x


def test_targetcli_file_round_trips_exactly():
    """A file Debian's targetctl wrote (in the lab guest) reads and writes back unchanged."""
    raw = json.loads((DATA / "targetcli-2.1.53.json").read_text())
    warnings = []
    cfg = saveconfig.from_dict(raw, warnings)
    assert warnings == []
    assert canon(saveconfig.to_dict(cfg)) == canon(raw)
    t = cfg.targets["iqn.2024-01.com.example:t1"]
    acl = t.tpgs[1].node_acls["iqn.2024-01.com.example:init1"]
    assert acl.chap.userid == "u1" and acl.chap.password == "p1secret"
    assert acl.mapped_luns[1].tpg_lun == 1
    assert cfg.storage_objects[("fileio", "d1")].size == 64 << 20


def _sample() -> Config:
    cfg = Config()
    cfg.storage_objects[("fileio", "f1")] = StorageObject("fileio", "f1", dev="/srv/f1.img", size=1 << 30,
                                                          wwn="abc-1", write_back=True)
    cfg.storage_objects[("block", "b1")] = StorageObject("block", "b1", dev="/dev/vdb", wwn="abc-2",
                                                         readonly=True, exclusive=False)
    cfg.storage_objects[("ramdisk", "r1")] = StorageObject("ramdisk", "r1", size=16 << 20, nullio=True,
                                                           attributes={"block_size": 4096})
    cfg.storage_objects[("user", "u1")] = StorageObject("user", "u1", size=1 << 20, config="file//tmp/u1",
                                                        hw_max_sectors=128)
    tpg = TPG(tag=1, attributes={"authentication": 1, "generate_node_acls": 0},
              parameters={"HeaderDigest": "CRC32C,None"}, chap=Chap("tu", "tsecret12345"))
    tpg.luns[0] = LUN(0, "/backstores/fileio/f1", alias="aaaa")
    tpg.luns[1] = LUN(1, "/backstores/block/b1")
    p4, p6 = Portal("0.0.0.0", 3260), Portal("[::1]", 3261, iser=False)
    tpg.portals = {p4.key: p4, p6.key: p6}
    acl = NodeACL("iqn.1994-05.com.redhat:host1", chap=Chap("u", "p" * 12, "mu", "m" * 12), tag="grp")
    acl.mapped_luns[0] = MappedLUN(0, 0, write_protect=True, alias="bbbb")
    acl.mapped_luns[5] = MappedLUN(5, 1)
    tpg.node_acls[acl.node_wwn] = acl
    cfg.targets["iqn.2024-01.com.example:t1"] = Target("iqn.2024-01.com.example:t1", tpgs={1: tpg})
    cfg.discovery.enable = True
    cfg.discovery.chap = Chap("du", "dsecret12345", "dmu", "dmsecret1234")
    return cfg


def test_round_trip_of_every_field():
    cfg = _sample()
    d = saveconfig.to_dict(cfg)
    again = saveconfig.from_dict(json.loads(json.dumps(d)))
    assert saveconfig.to_dict(again) == d
    assert again == cfg


def test_key_names_are_rtslibs():
    d = saveconfig.to_dict(_sample())
    assert d["fabric_modules"] == [{"name": "iscsi", "discovery_enable_auth": True, "discovery_userid": "du",
                                    "discovery_password": "dsecret12345", "discovery_mutual_userid": "dmu",
                                    "discovery_mutual_password": "dmsecret1234"}]
    tpg = d["targets"][0]["tpgs"][0]
    assert tpg["chap_userid"] == "tu" and "userid" not in tpg
    acl = tpg["node_acls"][0]
    assert {"chap_userid", "chap_password", "chap_mutual_userid", "chap_mutual_password", "tag"} <= set(acl)
    sos = {s["name"]: s for s in d["storage_objects"]}
    assert sos["b1"]["exclusive"] is False
    assert sos["r1"]["nullio"] is True
    assert sos["u1"]["config"] == "file//tmp/u1"
    assert {p["ip_address"] for p in tpg["portals"]} == {"0.0.0.0", "[::1]"}


def test_exclusive_true_is_not_written():
    """Debian's rtslib 2.1.75 cannot restore a block object carrying `exclusive`."""
    cfg = Config()
    cfg.storage_objects[("block", "b")] = StorageObject("block", "b", dev="/dev/vdb")
    assert "exclusive" not in saveconfig.to_dict(cfg)["storage_objects"][0]


def test_secrets_redacted_for_display():
    d = saveconfig.to_dict(_sample(), secrets=False)
    text = json.dumps(d)
    assert "dsecret12345" not in text and "p" * 12 not in text and "tsecret12345" not in text
    assert '"chap_userid": "tu"' in text


def test_old_key_names_are_read_with_a_warning():
    raw = {"targets": [{"wwn": "iqn.2024-01.com.example:t", "fabric": "iscsi", "tpgs": [
        {"tag": 1, "userid": "a", "password": "b" * 12, "node_acls": [
            {"node_wwn": "iqn.2024-01.com.example:i", "userid": "c", "password": "d" * 12}]}]}]}
    w = []
    cfg = saveconfig.from_dict(raw, w)
    tpg = cfg.targets["iqn.2024-01.com.example:t"].tpgs[1]
    assert tpg.chap.userid == "a"
    assert tpg.node_acls["iqn.2024-01.com.example:i"].chap.userid == "c"
    assert any("old key 'userid'" in x for x in w)


def test_aliases_and_unknown_keys():
    raw = {"storage_objects": [{"plugin": "rd_mcp", "name": "r", "size": 4096, "exists": True, "frob": 1}],
           "targets": [{"wwn": "naa.5001405abcdef012", "fabric": "loopback", "tpgs": []}]}
    w = []
    cfg = saveconfig.from_dict(raw, w)
    assert ("ramdisk", "r") in cfg.storage_objects
    assert any("unknown key 'frob'" in x for x in w)
    # another fabric's target is configuration too: read, never skipped (issue 17)
    assert ("loopback", "naa.5001405abcdef012") in cfg.fabric_targets
    assert not any("loopback" in x for x in w)


@pytest.mark.parametrize("mutate, fragment", [
    (lambda d: d["storage_objects"].append(dict(d["storage_objects"][0])), "duplicate storage object"),
    (lambda d: d["targets"][0]["tpgs"][0]["luns"][0].update(storage_object="/backstores/fileio/nope"),
     "does not exist"),
    (lambda d: d["targets"][0]["tpgs"][0]["node_acls"][0]["mapped_luns"][0].update(tpg_lun=99),
     "TPG LUN 99 does not exist"),
    (lambda d: d["targets"][0].update(wwn="iqn.bad"), "not a valid IQN"),
    (lambda d: d["targets"][0]["tpgs"][0]["portals"].append(
        {"ip_address": "10.0.0.1", "port": 3260}), "collides with wildcard"),
    (lambda d: d["targets"][0]["tpgs"].append({"tag": 2, "portals": [{"ip_address": "0.0.0.0", "port": 3260}]}),
     "already on tpg1"),
    (lambda d: d["targets"][0]["tpgs"][0]["node_acls"][0].pop("chap_password"), "set together"),
    (lambda d: d["storage_objects"][0].update(size=1000), "multiple of 512"),
    (lambda d: d["storage_objects"][0]["attributes"].update(block_size=1000), "block size"),
    (lambda d: d["targets"][0]["tpgs"][0]["parameters"].update(MaxBurstLength="1"), "MaxBurstLength"),
    (lambda d: d["storage_objects"][0].update(name="has space"), "storage object name"),
    (lambda d: d["targets"][0]["tpgs"][0]["luns"].append(dict(d["targets"][0]["tpgs"][0]["luns"][0])),
     "duplicate lun"),
    (lambda d: d.update(targets={}), "expected a JSON list"),
    # wrong JSON types where rtslib expects strings or objects: a refusal, never a traceback
    (lambda d: d["storage_objects"][0].update(name=["x"]), "'name' must be a JSON string"),
    (lambda d: d["storage_objects"][0].update(plugin=None), "'plugin' must be a JSON string"),
    (lambda d: d["targets"][0].update(parameters=None), "parameters: expected a JSON object"),
    (lambda d: d["targets"][0].update(attributes=[]), "attributes: expected a JSON object"),
    (lambda d: d["targets"][0]["tpgs"][0]["node_acls"][0].update(attributes="x"),
     "attributes: expected a JSON object"),
])
def test_bad_files_are_refused_whole(mutate, fragment):
    raw = json.loads((DATA / "targetcli-2.1.53.json").read_text())
    mutate(raw)
    with pytest.raises(ValidationError) as e:
        saveconfig.from_dict(raw)
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)


def test_atomic_save_is_0600_and_replaces(tmp_path):
    path = tmp_path / "etc" / "target" / "saveconfig.json"
    old = os.umask(0)
    try:
        saveconfig.save(_sample(), path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = path.read_text()
    assert json.loads(first)["targets"][0]["wwn"] == "iqn.2024-01.com.example:t1"
    saveconfig.save(Config(), path)
    assert json.loads(path.read_text())["targets"] == []
    assert [p.name for p in path.parent.iterdir()] == ["saveconfig.json"]     # no temp file left


def test_failed_save_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "s.json"
    saveconfig.save(_sample(), path)
    before = path.read_text()

    def boom(*a):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        saveconfig.save(Config(), path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]


def test_load_errors(tmp_path):
    with pytest.raises(NotFoundError):
        saveconfig.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValidationError, match="not JSON"):
        saveconfig.load(bad)

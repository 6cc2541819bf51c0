"""Node database: records.py's table and nodedb.py's on-disk layout, locking and atomic writes."""

from __future__ import annotations

import fcntl
import os
import stat

import pytest

from iscsikit.initiator import nodedb as ndb
from iscsikit.initiator import records as R
from iscsikit.proto import keys as proto_keys

T = "iqn.2003-01.org.example:tgt1"


@pytest.fixture
def db(tmp_path):
    (tmp_path / "iscsid.conf").write_text("iscsid.startup = /bin/false\n")
    return ndb.NodeDB(tmp_path, lock_timeout=0.2)


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# -- the table --------------------------------------------------------------------------
def test_every_key_declared_once():
    for table in (R.NODE_FIELDS, R.IFACE_FIELDS, R.SENDTARGETS_FIELDS, R.ISNS_FIELDS):
        keys = [f.key for f in table]
        assert len(keys) == len(set(keys))
    assert len(R.NODE_FIELDS) == 107  # as many as `iscsiadm -m node -T x -p y` prints


def test_iscsi_defaults_come_from_proto():
    offer = {k.name: k.open_iscsi for k in proto_keys.KEYS if k.open_iscsi}
    f = R.FIELD_BY_KEY
    assert f["node.session.iscsi.FirstBurstLength"].default == offer["FirstBurstLength"] == "262144"
    assert f["node.session.iscsi.ERL"].default == offer["ErrorRecoveryLevel"]
    assert f["node.session.iscsi.InitialR2T"].default == "No"
    assert f["node.conn[0].iscsi.MaxRecvDataSegmentLength"].default == "262144"
    assert set(f["node.conn[0].iscsi.HeaderDigest"].values) == {"None", "CRC32C", "CRC32C,None", "None,CRC32C"}


def test_secrets_are_exactly_the_passwords():
    secret = {f.key for f in R.NODE_FIELDS + R.SENDTARGETS_FIELDS if f.secret}
    assert secret == {"node.session.auth.password", "node.session.auth.password_in",
                      "discovery.sendtargets.auth.password", "discovery.sendtargets.auth.password_in"}


@pytest.mark.parametrize("text,value", [("12", 12), ("12abc", 12), ("abc", 0), (" -5", -5),
                                        ("+7", 7), ("", 0), ("-", 0), ("99999999999", 2**31 - 1)])
def test_atoi_is_c_atoi(text, value):
    assert R.atoi(text) == value


def test_check_value():
    f = R.FIELD_BY_KEY
    assert R.check_value(f["node.session.cmds_max"], "64x") == ("64", [])
    with pytest.raises(R.RecordError) as e:
        R.check_value(f["node.startup"], "Automatic")
    assert e.value.code == 7 and e.value.lines[-1] == "Unknown parameter node.startup."
    stored, warnings = R.check_value(f["node.session.auth.chap_algs"], "SHA256,FOO,MD5")
    assert stored == "SHA256,MD5"
    assert warnings == ["Ignoring unknown value 'FOO' for 'node.session.auth.chap_algs'"]


def test_render_file_vs_show():
    values = R.defaults(R.NODE_FIELDS) | {"node.session.auth.password": "pw"}
    file_lines = R.render(R.NODE_FIELDS, values, for_file=True)
    shown = R.render(R.NODE_FIELDS, values, for_file=False)
    revealed = R.render(R.NODE_FIELDS, values, for_file=False, show_secrets=True)
    assert file_lines[0] == "# BEGIN RECORD 2.1.8" and file_lines[-1] == "# END RECORD"
    assert "node.session.auth.password = pw" in file_lines
    assert not any("<empty>" in line for line in file_lines)
    assert "node.session.auth.password = ********" in shown
    assert "node.session.auth.username = <empty>" in shown
    assert "node.session.auth.password = pw" in revealed


# -- layout -----------------------------------------------------------------------------
def test_new_record_layout_and_modes(db):
    nid = ndb.NodeId(T, "192.0.2.10", 3260, 1, "default")
    db.create_node(nid)
    path = db.path("nodes", T, "192.0.2.10,3260,1", "default")
    assert mode(path) == 0o600
    assert mode(db.path("nodes")) == mode(db.path("nodes", T)) == 0o700
    link = db.path("static", f"{T},192.0.2.10,3260,1,default")
    assert os.readlink(link) == db.path("nodes", T, "192.0.2.10,3260,1")
    assert db.node_ids() == [nid]
    assert not [n for n in os.listdir(os.path.dirname(path)) if n.startswith(".tmp")]


def test_unknown_tpgt_uses_legacy_file_and_upgrade_removes_it(db):
    legacy = ndb.NodeId(T, "192.0.2.10", 3260, -1, "default")
    db.create_node(legacy)
    assert os.path.isfile(db.path("nodes", T, "192.0.2.10,3260"))
    assert not os.path.exists(db.path("static"))
    db.create_node(ndb.NodeId(T, "192.0.2.10", 3260, 1, "default"))
    assert not os.path.exists(db.path("nodes", T, "192.0.2.10,3260"))
    assert [n.tpgt for n in db.node_ids()] == [1]


def test_reads_a_record_written_by_iscsiadm(db):
    """A record as Debian's iscsiadm 2.1.8 writes it: only non-empty keys, legacy file form."""
    d = db.path("nodes", T)
    os.makedirs(d, mode=0o700)
    with open(os.path.join(d, "2001:db8::1,3260"), "w") as f:
        f.write("# BEGIN RECORD 2.1.8\nnode.name = " + T + "\nnode.tpgt = -1\n"
                "iface.iscsi_ifacename = iser\niface.transport_name = iser\n"
                "node.session.auth.password = pw\nnode.conn[0].timeo.login_timeout = 9\n"
                "node.conn[0].address = 2001:db8::1\nnode.conn[0].port = 3260\n# END RECORD\n")
    (nid,) = db.node_ids()
    assert nid == ndb.NodeId(T, "2001:db8::1", 3260, -1, "iser")
    node = db.read_node(nid)
    assert node["node.conn[0].timeo.login_timeout"] == "9"
    assert node["node.session.cmds_max"] == "128"
    assert node["iface.transport_name"] == "iser"
    assert "node.session.auth.password = ********" in node.lines()


def test_iscsid_conf_seeds_new_records(tmp_path):
    (tmp_path / "iscsid.conf").write_text(
        "node.startup = automatic\nnode.conn[0].timeo.login_timeout = 15\n"
        "node.session.initial_login_retry_max=8\nnode.name = iqn.must-not-apply\n"
        "node.startup_bogus = x\ndiscovery.sendtargets.reopen_max = 2\n")
    db = ndb.NodeDB(tmp_path)
    node = db.create_node(ndb.NodeId(T, "192.0.2.10", 3260, 1, "default"))
    assert node["node.startup"] == "automatic"
    assert node["node.conn[0].timeo.login_timeout"] == "15"
    assert node["node.session.initial_login_retry_max"] == "8"
    assert node["node.name"] == T
    assert db.create_discovery("sendtargets", "192.0.2.1", 3260)["discovery.sendtargets.reopen_max"] == "2"


def test_refused_update_leaves_record_untouched(db):
    nid = ndb.NodeId(T, "192.0.2.10", 3260, 1, "default")
    db.create_node(nid)
    path = db.node_path(nid)
    before = open(path).read()
    with pytest.raises(R.RecordError):
        db.update_node(nid, [("node.startup", "automatic"), ("node.bogus", "1")])
    assert open(path).read() == before
    with pytest.raises(R.RecordError) as e:
        db.update_node(nid, [("node.conn[0].address", "1.2.3.4")])
    assert "look up the record" in e.value.lines[0]


def test_secret_update_stays_0600(db):
    nid = ndb.NodeId(T, "192.0.2.10", 3260, 1, "default")
    db.create_node(nid)
    os.chmod(db.node_path(nid), 0o644)  # even if someone loosened it
    db.update_node(nid, [("node.session.auth.password", "pw")])
    assert mode(db.node_path(nid)) == 0o600
    assert "node.session.auth.password = pw" in open(db.node_path(nid)).read()


def test_delete_cleans_dirs_and_links(db):
    nid = ndb.NodeId(T, "192.0.2.10", 3260, 1, "default")
    db.create_node(nid)
    db.delete_node(nid)
    assert os.listdir(db.path("nodes")) == []
    assert os.listdir(db.path("static")) == []
    with pytest.raises(ndb.DBError):
        db.delete_node(nid)


def test_find_nodes_selectors(db):
    a = ndb.NodeId(T, "192.0.2.10", 3260, 1, "default")
    b = ndb.NodeId(T, "192.0.2.10", 3261, 1, "iser")
    db.create_node(a)
    db.create_node(b)
    assert db.find_nodes(T, "192.0.2.10") == [a]  # -p without a port means 3260
    assert db.find_nodes(iface="iser") == [b]
    assert sorted(db.find_nodes(T)) == sorted([a, b])


def test_discovery_records(db):
    db.create_discovery("sendtargets", "192.0.2.1", 3260)
    assert db.discovery_ids("sendtargets") == [("192.0.2.1", 3260)]
    db.update_discovery("sendtargets", "192.0.2.1", 3260,
                        [("discovery.sendtargets.auth.password", "pw")])
    path = db.discovery_path("sendtargets", "192.0.2.1", 3260)
    assert mode(path) == 0o600
    with pytest.raises(R.RecordError):
        db.update_discovery("sendtargets", "192.0.2.1", 3260, [("node.session.auth.password", "x")])
    with pytest.raises(ndb.DBError) as e:
        db.update_discovery("sendtargets", "192.0.2.9", 3260, [("discovery.startup", "manual")])
    assert e.value.code == 6
    db.delete_discovery("sendtargets", "192.0.2.1", 3260)
    assert not os.path.exists(os.path.dirname(path))


def test_ifaces(db):
    assert db.iface_exists("default") and db.iface_exists("iser")
    db.new_iface("eth-a")
    assert mode(db.path("ifaces", "eth-a")) == 0o600
    assert db.iface_names() == ["eth-a"]
    with pytest.raises(ndb.DBError):
        db.delete_iface("default")
    db.delete_iface("eth-a")
    assert not db.iface_exists("eth-a")


# -- locking ----------------------------------------------------------------------------
def test_lock_timeout_is_an_error_never_unlocked(db):
    db.iface_exists("x")
    os.makedirs(db.root, exist_ok=True)
    holder = os.open(db.path(ndb.LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        with pytest.raises(ndb.LockTimeout) as e:
            db.create_node(ndb.NodeId(T, "192.0.2.10", 3260, 1, "default"))
        assert "could not lock" in str(e.value)
        assert not os.path.exists(db.path("nodes", T))
    finally:
        os.close(holder)
    db.create_node(ndb.NodeId(T, "192.0.2.10", 3260, 1, "default"))


def test_writes_outside_the_lock_are_refused(db):
    with pytest.raises(RuntimeError):
        db._write_atomic(db.path("ifaces", "x"), "")


def test_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ISCSIKIT_DB_ROOT", str(tmp_path))
    assert ndb.NodeDB().root == str(tmp_path)
    monkeypatch.delenv("ISCSIKIT_DB_ROOT")
    assert ndb.NodeDB().root == "/etc/iscsi"


@pytest.mark.parametrize("text,parts", [
    ("192.0.2.1", ("192.0.2.1", None, None)),
    ("192.0.2.1:3261", ("192.0.2.1", 3261, None)),
    ("192.0.2.1:3261,4", ("192.0.2.1", 3261, 4)),
    ("[2001:db8::1]:3260,2", ("2001:db8::1", 3260, 2)),
    ("[2001:db8::1]", ("2001:db8::1", None, None)),
    ("2001:db8::1", ("2001:db8::1", None, None)),
])
def test_parse_portal(text, parts):
    assert ndb.parse_portal(text) == parts


def test_discovered_nodes_go_with_their_discovery_record(db):
    db.create_discovery("sendtargets", "192.0.2.1", 3260)
    nid = ndb.NodeId(T, "192.0.2.10", 3260, 1, "default")
    db.write_node(ndb.Node(R.NODE_FIELDS, db.new_node_values(nid, discovery_type="send_targets"), nid))
    db.link_discovered("sendtargets", "192.0.2.1", 3260, nid)
    link = db.path("send_targets", "192.0.2.1,3260", f"{T},192.0.2.10,3260,1,default")
    assert os.readlink(link) == db.path("nodes", T, "192.0.2.10,3260,1")
    assert db.read_node(nid)["node.discovery_type"] == "send_targets"
    db.delete_discovery("sendtargets", "192.0.2.1", 3260)
    assert db.node_ids() == []

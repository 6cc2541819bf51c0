"""sysfs readers on a fake tree laid out as Linux 6.1 lays out an iscsi_tcp session."""

import os

from iscsikit.kernel.sysfs import Sysfs


def _tree(root, sid=3, host=2, disk="sdc"):
    def w(path, text):
        p = root / path
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text + "\n")
    w("class/iscsi_transport/tcp/handle", "18446744072641548384")
    w("class/iscsi_transport/tcp/caps", "0x39")
    sess_dev = root / f"devices/platform/host{host}/session{sid}"
    w(f"devices/platform/host{host}/session{sid}/iscsi_session/session{sid}/targetname", "iqn.2026-11.org.example:t")
    unit = sess_dev / f"target{host}:0:0" / f"{host}:0:0:1"
    (unit / "block" / disk).mkdir(parents=True)
    (unit / "state").write_text("running\n")
    (root / "class/iscsi_session").mkdir(parents=True)
    sdir = root / f"class/iscsi_session/session{sid}"
    sdir.mkdir()
    os.symlink(sess_dev, sdir / "device")
    for name, val in dict(targetname="iqn.2026-11.org.example:t", tpgt="1", state="LOGGED_IN", creator="42",
                          initiatorname="iqn.2026-11.org.example:i", ifacename="default").items():
        (sdir / name).write_text(val + "\n")
    w(f"class/iscsi_connection/connection{sid}:0/persistent_address", "10.0.0.1")
    w(f"class/iscsi_connection/connection{sid}:0/persistent_port", "3260")
    w(f"class/iscsi_connection/connection{sid}:0/state", "up")
    (root / f"class/scsi_host/host{host}").mkdir(parents=True)
    (root / f"class/scsi_host/host{host}/scan").write_text("")


def test_transports_parse_handle_and_hex_caps(tmp_path):
    _tree(tmp_path)
    (t,) = Sysfs(tmp_path).transports()
    assert (t.name, t.handle, t.caps) == ("tcp", 18446744072641548384, 0x39)


def test_session_walks_to_host_and_block_device(tmp_path):
    _tree(tmp_path)
    fs = Sysfs(tmp_path)
    assert fs.session_ids() == [3]
    s = fs.session(3)
    assert (s.host_no, s.target, s.tpgt, s.state, s.creator) == (2, "iqn.2026-11.org.example:t", 1, "LOGGED_IN", 42)
    assert (s.address, s.port, s.conn_state, s.iface_name) == ("10.0.0.1", 3260, "up", "default")
    assert [(l.lun, l.hctl, l.state, l.block) for l in s.luns] == [(1, "2:0:0:1", "running", "sdc")]


def test_missing_session_and_empty_tree(tmp_path):
    fs = Sysfs(tmp_path)
    assert fs.session_ids() == [] and fs.session(9) is None and fs.transports() == []


def test_scan_writes_wildcards(tmp_path):
    _tree(tmp_path)
    Sysfs(tmp_path).scan_host(2)
    assert (tmp_path / "class/scsi_host/host2/scan").read_text() == "- - -"

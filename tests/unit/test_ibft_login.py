"""iBFT boot targets: read from a sysfs tree laid out as iscsi_ibft lays it out, turned into node
records and logged in through the daemon (a stand-in daemon socket records the requests)."""

import json
import os
import socket
import threading

from iscsikit.cli import autologin
from iscsikit.initiator import nodedb as ndb
from iscsikit.initiator import protocol
from iscsikit.kernel import ibft

INITIATOR = "iqn.2026-11.org.example.boot:host7"
T0, T1 = "iqn.2026-11.org.example:boot0", "iqn.2026-11.org.example:boot1"


def _table(root):
    def w(rel, text):
        path = root / "firmware" / "ibft" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    w("initiator/initiator-name", INITIATOR)
    # one boot NIC (no PCI function link: iscsiadm keeps it without a netdev name)
    w("ethernet0/flags", "3")
    w("ethernet0/index", "0")
    w("ethernet0/mac", "02:1b:f7:00:00:07")
    for n in ("target0", "target1"):
        w(f"{n}/flags", "3")
        w(f"{n}/nic-assoc", "0")
    w("target0/target-name", T0)
    w("target0/ip-addr", "127.0.0.1")
    w("target0/port", "3260")
    w("target0/lun", "00000000")
    w("target0/chap-type", "0")
    w("target1/target-name", T1)
    w("target1/ip-addr", "127.0.0.2")
    w("target1/port", "3261")
    w("target1/chap-type", "2")
    w("target1/chap-name", "boot-user")
    w("target1/chap-secret", "boot-secret-123")
    w("target1/rev-chap-name", "tgt")
    w("target1/rev-chap-name-secret", "target-secret-456")
    (root / "firmware" / "ibft" / "target2").mkdir()   # an empty slot of the table
    (root / "class" / "iscsi_session").mkdir(parents=True)


def test_targets_are_read_in_table_order(tmp_path):
    _table(tmp_path)
    assert ibft.initiator_name(str(tmp_path)) == INITIATOR
    t0, t1 = ibft.targets(str(tmp_path))
    assert (t0.name, t0.address, t0.port, t0.chap_type) == (T0, "127.0.0.1", 3260, ibft.CHAP_NONE)
    assert (t1.name, t1.address, t1.port, t1.chap_type, t1.username, t1.username_in) == \
        (T1, "127.0.0.2", 3261, ibft.CHAP_MUTUAL, "boot-user", "tgt")
    assert (t0.lun, t1.password_in, t0.nic.mac, t0.nic.netdev) == ("00000000", "target-secret-456",
                                                                    "02:1b:f7:00:00:07", None)
    assert ibft.targets(str(tmp_path / "nowhere")) == [] and not ibft.present(str(tmp_path / "nowhere"))


def test_a_target_whose_nic_is_invalid_or_missing_is_not_a_boot_target(tmp_path):
    """fwparam_sysfs.c get_targets: a target needs flags and a usable nic-assoc NIC."""
    _table(tmp_path)
    base = tmp_path / "firmware" / "ibft"
    (base / "target1" / "nic-assoc").write_text("5\n")      # no such NIC
    (base / "target0" / "flags").write_text("0\n")          # not valid
    assert ibft.targets(str(tmp_path)) == []


def _fake_daemon(path, seen):
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(8)

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                req = json.loads(conn.makefile().readline())
                seen.append(req)
                sid = len(seen)
                conn.sendall((json.dumps({"v": protocol.VERSION, "ok": True, "result": {"sid": sid, "host_no": sid}})
                              + "\n").encode())

    threading.Thread(target=serve, daemon=True).start()
    return srv


def test_firmware_login_writes_records_and_logs_in(tmp_path, monkeypatch, capsys):
    sysfs, db_root = tmp_path / "sys", tmp_path / "iscsi"
    _table(sysfs)
    db_root.mkdir()
    (db_root / "iscsid.conf").write_text("")
    sock = str(tmp_path / "d.sock")
    seen = []
    srv = _fake_daemon(sock, seen)
    monkeypatch.setenv("ISCSIKIT_SYSFS_ROOT", str(sysfs))
    monkeypatch.setenv("ISCSIKIT_DB_ROOT", str(db_root))
    monkeypatch.setenv("ISCSIKIT_SOCKET", sock)
    try:
        assert autologin.main(["--firmware"]) == 0
    finally:
        srv.close()
    out, err = capsys.readouterr()
    assert err == "" and out.count("successful.") == 2
    logins = {r["args"]["target"]: r["args"] for r in seen if r["op"] == "login"}
    assert set(logins) == {T0, T1}
    assert logins[T0]["initiator_name"] == INITIATOR and "username" not in logins[T0]
    assert (logins[T1]["address"], logins[T1]["port"]) == ("127.0.0.2", 3261)
    assert (logins[T1]["username"], logins[T1]["password"]) == ("boot-user", "boot-secret-123")
    assert (logins[T1]["username_in"], logins[T1]["password_in"]) == ("tgt", "target-secret-456")
    # the records are there for -m node / -m session / logout, secrets in 0600 files
    db = ndb.NodeDB(str(db_root))
    nid = next(n for n in db.node_ids() if n.target == T1)
    values = db.read_node(nid).values
    assert values["node.discovery_type"] == "fw" and values["node.startup"] == "onboot"
    assert os.stat(db.node_path(nid)).st_mode & 0o777 == 0o600
    assert "boot-secret-123" not in out

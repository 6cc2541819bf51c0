"""Issue 14's iscsiadm surface, fast host checks against scripted targets on 127.0.0.1 and
fake sysfs trees: discovery operations and stale records, nonpersistent, the discovery
record's CHAP and timeouts, -m fw / -t fw from an iBFT tree, ping's argument checks, -d,
and iscsid.safe_logout's in-use test. The same modes against Debian's open-iscsi:
tests/vm/test_adm_surface_vs_open_iscsi.py."""

from __future__ import annotations

import io
import os

import pytest

from iscsikit.cli import adm
from iscsikit.initiator import login_io
from iscsikit.initiator import nodedb as ndb
from iscsikit.initiator import records as R
from iscsikit.kernel.sysfs import Sysfs
from iscsikit.proto import pdu as P
from iscsikit.proto.keys import encode_text

from proto_fake_target import FakeTarget
from test_login_io import ScriptedServer, serve_login

pytestmark = pytest.mark.timeout(30)

A, B = "iqn.2026-11.org.example:a", "iqn.2026-11.org.example:b"


@pytest.fixture
def root(tmp_path):
    (tmp_path / "iscsid.conf").write_text("iscsid.startup = /bin/false\n")
    (tmp_path / "initiatorname.iscsi").write_text("InitiatorName=iqn.2026-11.org.example:host\n")
    return str(tmp_path)


def run(root, *argv, env=None):
    out, err = io.StringIO(), io.StringIO()
    rc = adm.run(list(argv), out=out, err=err, db=ndb.NodeDB(root), argv0="iscsiadm", env=env or {})
    return rc, out.getvalue(), err.getvalue()


class Portals:
    """A SendTargets target whose answer the test changes between discoveries."""

    def __init__(self):
        self.names = [A, B]
        self.server = ScriptedServer(serve_login(FakeTarget, [self._answer] * 100))
        self.portal = f"127.0.0.1:{self.server.port}"

    def _answer(self, req):
        keys = []
        for name in self.names:
            keys += [("TargetName", name), ("TargetAddress", f"{self.portal},1")]
        return P.TextResponse(final=True, itt=req.itt, ttt=0xFFFFFFFF, statsn=5, data=encode_text(keys))


@pytest.fixture
def target():
    t = Portals()
    yield t
    t.server.close()


def node_names(root):
    return sorted(n.target for n in ndb.NodeDB(root).node_ids())


def test_discovery_ops_against_a_fake_target(root, target):
    p = target.portal
    rc, out, err = run(root, "-m", "discovery", "-t", "st", "-p", p)
    assert (rc, err) == (0, "") and out.splitlines() == [f"{p},1 {A}", f"{p},1 {B}"]
    assert node_names(root) == [A, B]
    # a per-node edit survives -o new, -o update rewrites it from the defaults
    key = "node.session.timeo.replacement_timeout"
    run(root, "-m", "node", "-T", A, "-o", "update", "-n", key, "-v", "77")
    assert run(root, "-m", "discovery", "-t", "st", "-p", p, "-o", "new")[0] == 0
    assert f"{key} = 77" in run(root, "-m", "node", "-T", A)[1]
    assert run(root, "-m", "discovery", "-t", "st", "-p", p, "-o", "update")[0] == 0
    assert f"{key} = 120" in run(root, "-m", "node", "-T", A)[1]
    # B is gone from the target: -o new keeps its record, -o delete removes it
    target.names = [A]
    run(root, "-m", "discovery", "-t", "st", "-p", p, "-o", "new")
    assert node_names(root) == [A, B]
    rc, out, err = run(root, "-m", "discovery", "-t", "st", "-p", p, "-o", "delete")
    assert (rc, out, err) == (0, f"{p},1 {A}\n", "") and node_names(root) == [A]
    # a static record is no record of this discovery source: never deleted by it
    run(root, "-m", "node", "-o", "new", "-T", B, "-p", "192.0.2.7")
    run(root, "-m", "discovery", "-t", "st", "-p", p)
    assert node_names(root) == [A, B]
    # one record per -I iface
    run(root, "-m", "iface", "-I", "if1", "-o", "new")
    run(root, "-m", "discovery", "-t", "st", "-p", p, "-I", "if1", "-I", "default")
    assert sorted(n.iface for n in ndb.NodeDB(root).node_ids() if n.target == A) == ["default", "if1"]
    # a refused connection: iscsiadm's lines, with the record's reopen_max
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    closed = f"127.0.0.1:{s.getsockname()[1]}"
    s.close()
    rc, out, err = run(root, "-m", "discovery", "-t", "st", "-p", closed)
    assert rc == 4 and "connection login retries (reopen_max) 5 exceeded" in err


def test_nonpersistent_discovery_writes_nothing(root, target):
    rc, out, err = run(root, "-m", "discovery", "-t", "st", "-p", target.portal, "-o", "nonpersistent")
    assert (rc, err) == (0, "") and out.splitlines() == [f"{target.portal},1 {A}", f"{target.portal},1 {B}"]
    assert ndb.NodeDB(root).node_ids() == []
    assert not os.path.exists(os.path.join(root, "send_targets"))
    assert run(root, "-m", "discoverydb") == (21, "", "")


def test_discoverydb_show_p1_lists_the_targets_found(root, target):
    run(root, "-m", "discovery", "-t", "st", "-p", target.portal)
    out = run(root, "-m", "discoverydb", "-o", "show", "-P", "1")[1]
    addr, port = target.portal.split(":")
    assert f"DiscoveryAddress: {addr},{port}\nTarget: " in out
    assert out.count("\tPortal: ") == 2 and out.count("\t\tIface Name: default") == 2


def test_discovery_timeouts_come_from_the_record(root, monkeypatch):
    seen = {}

    def discover(portal, **kw):
        seen.update(kw, portal=portal)
        raise login_io.LoginError(24, "refused")
    monkeypatch.setattr(login_io, "discover", discover)
    run(root, "-m", "discoverydb", "-t", "st", "-p", "192.0.2.5", "-o", "new")
    st = "discovery.sendtargets"
    run(root, "-m", "discoverydb", "-t", "st", "-p", "192.0.2.5", "-o", "update",
        "-n", f"{st}.timeo.login_timeout", "-v", "7", "-n", f"{st}.timeo.auth_timeout", "-v", "9",
        "-n", f"{st}.timeo.active_timeout", "-v", "11", "-n", f"{st}.auth.username", "-v", "u",
        "-n", f"{st}.auth.password", "-v", "secret-password", "-n", "node.session.auth.chap_algs",
        "-v", "SHA3-256,MD5")
    rc, out, err = run(root, "-m", "discoverydb", "-t", "st", "-p", "192.0.2.5", "-D")
    assert rc == 24 and "rejected: initiator failed authorization" in err and "secret-password" not in err
    assert seen["portal"] == ("192.0.2.5", 3260)
    assert (seen["connect_timeout"], seen["login_timeout"], seen["reply_timeout"]) == (7, 9, 11)
    assert seen["chap"].username == "u" and [a.name for a in seen["chap"].algorithms] == ["SHA3_256", "MD5"]
    assert seen["chap"].secret_in is None
    # -m discovery -t st uses the defaults (iscsid.conf), not the stored record, and writes them
    run(root, "-m", "discovery", "-t", "st", "-p", "192.0.2.5")
    assert seen["chap"] is None and seen["login_timeout"] == 15


MAC = "02:1b:f7:00:00:33"


def _ibft(tmp_path, netdev_mac=MAC):
    """A /sys with what iscsi_ibft shows for one boot NIC and target (the names and shapes of
    a real table's, tests/vm/test_fw_ibft.py), and a netdev with `netdev_mac`."""
    base = tmp_path / "sys"
    t0, e0 = "firmware/ibft/target0/", "firmware/ibft/ethernet0/"
    for rel, text in (("firmware/ibft/initiator/initiator-name", "iqn.2026-11.org.example:boot"),
                      (t0 + "flags", "3"), (t0 + "target-name", A), (t0 + "ip-addr", "192.0.2.33"),
                      (t0 + "port", "3260"), (t0 + "lun", "00000000"), (t0 + "nic-assoc", "0"),
                      (t0 + "chap-type", "2"), (t0 + "chap-name", "boot"), (t0 + "chap-secret", "boot-secret-99"),
                      (t0 + "rev-chap-name", "tgt"), (t0 + "rev-chap-name-secret", "boot-mutual-77"),
                      (e0 + "flags", "3"), (e0 + "index", "0"), (e0 + "mac", MAC), (e0 + "ip-addr", "192.0.2.9"),
                      (e0 + "prefix-len", "24"), (e0 + "subnet-mask", "255.255.255.0"), (e0 + "vlan", "0"),
                      (e0 + "origin", "1"), ("class/net/boot0/address", netdev_mac)):
        path = base / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    # the NIC's PCI function has no netdev (a table tied to the host bridge): found by MAC
    (base / "devices" / "pci0000:00" / "0000:00:00.0").mkdir(parents=True)
    os.symlink(base / "devices" / "pci0000:00" / "0000:00:00.0", base / e0 / "device")
    (base / "class" / "iscsi_session").mkdir(parents=True)
    return {"ISCSIKIT_SYSFS_ROOT": str(base)}


def test_fw_modes_from_a_fake_ibft(root, tmp_path):
    env = _ibft(tmp_path)
    rc, out, err = run(root, "-m", "fw", env=env)
    assert (rc, err) == (0, "")
    lines = out.splitlines()
    assert lines[:5] == ["# BEGIN RECORD 2.1.8", "iface.initiatorname = iqn.2026-11.org.example:boot",
                         "iface.transport_name = tcp", f"iface.hwaddress = {MAC}", "iface.bootproto = STATIC"]
    assert "iface.prefix_len = 24" in lines and "iface.net_ifacename = boot0" in lines
    assert f"node.name = {A}" in lines and "node.conn[0].address = 192.0.2.33" in lines
    assert "node.session.auth.username_in = tgt" in lines and "node.boot_lun = 00000000" in lines
    assert "boot-secret-99" not in out and "boot-mutual-77" not in out
    assert lines.count("node.session.auth.password = ********") == 1
    assert ndb.NodeDB(root).node_ids() == []        # -m fw touches no record
    rc, out, err = run(root, "-m", "discovery", "-t", "fw", env=env)
    assert (rc, out, err) == (0, f"192.0.2.33:3260,1 {A}\n", "")
    (nid,) = ndb.NodeDB(root).node_ids()
    rec = ndb.NodeDB(root).read_node(nid)
    # idbm_create_rec_from_boot_context: the defaults, tag 1, the table's CHAP strings
    assert (rec["node.discovery_type"], rec["node.startup"], rec["node.tpgt"]) == ("fw", "manual", "1")
    assert (rec["node.session.auth.username"], rec["node.session.auth.password_in"]) == ("boot", "boot-mutual-77")
    # ...and the login authenticates with them, authmethod left at its default
    req = R.login_request(nid, rec.values)
    assert (req["username"], req["password"], req["username_in"], req["password_in"]) == (
        "boot", "boot-secret-99", "tgt", "boot-mutual-77")
    # no table, or a boot NIC no netdev answers to: iscsiadm's line and 21
    for sys_env in ({"ISCSIKIT_SYSFS_ROOT": str(tmp_path / "nothing")},
                    _ibft(tmp_path / "other", netdev_mac="02:00:00:00:00:01")):
        for argv in (("-m", "fw"), ("-m", "discovery", "-t", "fw")):
            assert run(root, *argv, env=sys_env) == (
                21, "", "iscsiadm: Could not get list of targets from firmware. (err 21)\n")


def test_ping_checks_its_arguments(root):
    assert run(root, "-m", "iface", "-C", "ping", "-a", "127.0.0.1") == (7, "", "iscsiadm: Ping requires iface.\n")
    assert run(root, "-m", "iface", "-I", "default", "-C", "ping") == (
        7, "", "iscsiadm: Ping requires destination ipaddress.\n")
    assert run(root, "-m", "iface", "-I", "default", "-C", "ping", "-a", "127.0.0.1", "-c", "0") == (
        7, "", "iscsiadm: Invalid number of packets to transmit: 0.\n")
    assert run(root, "-m", "iface", "-I", "default", "-C", "ping", "-a", "127.0.0.1", "-b", "-1") == (
        7, "", "iscsiadm: Invalid packet size: -1.\n")


def test_debug_prints_debug_lines(root, monkeypatch):
    monkeypatch.setattr(login_io, "discover", lambda portal, **kw: [])
    rc, out, err = run(root, "-d", "1", "-m", "discovery", "-t", "st", "-p", "192.0.2.5")
    assert rc == 21 and "iscsiadm: sendtargets discovery to 192.0.2.5:3260" in err
    rc, out, err = run(root, "-m", "discovery", "-t", "st", "-p", "192.0.2.5")
    assert err == "iscsiadm: No portals found\n"


def _disk(base, name, dev, parent=None):
    d = base / "class" / "block" / name if parent is None else parent / name
    d.mkdir(parents=True)
    (d / "dev").write_text(dev + "\n")
    (d / "uevent").write_text(f"DEVNAME={name}\nDEVTYPE={'disk' if parent is None else 'partition'}\n")
    (d / "holders").mkdir()
    return d


def test_session_in_use_follows_partitions_and_holders(tmp_path):
    sys_root, proc = tmp_path / "sys", tmp_path / "proc"
    udir = sys_root / "devices" / "platform" / "host3" / "session1" / "target3:0:0" / "3:0:0:0"
    (udir / "block" / "sdq").mkdir(parents=True)
    (sys_root / "class" / "iscsi_session" / "session1").mkdir(parents=True)
    os.symlink(sys_root / "devices" / "platform" / "host3" / "session1",
               sys_root / "class" / "iscsi_session" / "session1" / "device")
    disk = _disk(sys_root, "sdq", "65:0")
    part = _disk(sys_root, "sdq1", "65:1", parent=disk)
    dm = _disk(sys_root, "dm-0", "254:0")
    os.symlink(dm, part / "holders" / "dm-0")
    (proc / "self").mkdir(parents=True)
    (proc / "swaps").write_text("Filename Type Size Used Priority\n")
    fs = Sysfs(sys_root)
    assert [l.block for l in fs.luns(1)] == ["sdq"]

    def mounted(dev):
        (proc / "self" / "mountinfo").write_text(
            f"22 1 {dev} / /mnt rw - ext4 /dev/x rw\n" if dev else "22 1 0:21 / / rw - tmpfs t rw\n")
    mounted(None)
    assert not fs.session_in_use(1, str(proc))      # a holder nobody mounted is no use
    mounted("254:0")
    assert fs.session_in_use(1, str(proc))          # dm on the partition is mounted
    mounted("65:1")
    assert fs.session_in_use(1, str(proc))
    mounted("65:0")
    assert fs.session_in_use(1, str(proc))


def test_no_wait_sends_the_logins_and_reports_no_result(root, monkeypatch):
    from iscsikit.cli.adm import login
    sent = []

    class Daemon:
        def call_many(self, requests, on_done=None):
            sent.extend(requests)
            return [{"queued": True} for _ in sent]
    monkeypatch.setattr(login, "client", lambda ctx: Daemon())
    run(root, "-m", "node", "-o", "new", "-T", A, "-p", "192.0.2.40")
    rc, out, err = run(root, "-m", "node", "-T", A, "-p", "192.0.2.40", "-l", "-W")
    label = f"[iface: default, target: {A}, portal: 192.0.2.40,3260]"
    assert (rc, out, err) == (0, f"Logging in to {label}\n", "")
    assert [(op, args["wait"]) for op, args in sent] == [("login", False)]
    sent.clear()
    rc, out, err = run(root, "-m", "node", "-T", A, "-p", "192.0.2.40", "-l")
    assert out.endswith(f"Login to {label} successful.\n") and "wait" not in sent[0][1]

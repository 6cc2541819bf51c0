"""Run in the guest: CHAP algorithms from the node record and an IPv6 portal, against LIO, as JSON.

1. IPv6: a target on [::1]:3260 only; the same iscsiadm lines (discovery, node listing,
   login, -m session, logout) through Debian's open-iscsi 2.1.8 and through iscsikit, one
   after the other (never both daemons at once), with the node records each one wrote.
2. chap_algs: a CHAP target on 127.0.0.1; iscsikit's record lists SHA3-256 or SHA256 first;
   the login's CHAP_A keys are read off the loopback wire (an AF_PACKET socket) to see what
   we offered and what LIO chose; a wrong secret must give 24 and leave no session.
Targets are made through iscsikit's target/ code (Manager.apply of a saveconfig).
"""

import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
import lio  # noqa: E402

from iscsikit.target import saveconfig  # noqa: E402
from iscsikit.target.manager import Manager  # noqa: E402

VENV = os.path.dirname(sys.executable)
T6 = "iqn.2026-11.org.iscsikit.test:ipv6"
TC = "iqn.2026-11.org.iscsikit.test:chapalgs"
TM = "iqn.2026-11.org.iscsikit.test:chapmutual"
P6 = "[::1]:3260"
P4 = "127.0.0.1"
USER, SECRET = "alice", "alice-secret-sha-12"
TUSER, TSECRET = "target", "target-secret-sha-34"
SCRATCH = "/tmp/iscsikit-chap-ipv6"
manager = Manager(save_file=f"{SCRATCH}/saveconfig.json", lock_file=f"{SCRATCH}/target.lock")
report = {}


def make_target(iqn, portal, chap=False, mutual=False):
    backing = f"/var/tmp/lio/{iqn.rsplit(':', 1)[1]}.img"
    with open(backing, "ab") as f:
        f.truncate(16 << 20)
    tpg = {"tag": 1, "enable": True,
           "luns": [{"index": 0, "storage_object": f"/backstores/fileio/{iqn.rsplit(':', 1)[1]}"}],
           "portals": [{"ip_address": portal, "port": 3260}]}
    if chap:
        tpg["attributes"] = {"authentication": 1, "generate_node_acls": 0}
        tpg["node_acls"] = [{"node_wwn": INITIATOR, "chap_userid": USER, "chap_password": SECRET,
                             "mapped_luns": [{"index": 0, "tpg_lun": 0, "write_protect": False}],
                             **({"chap_mutual_userid": TUSER, "chap_mutual_password": TSECRET} if mutual else {})}]
    else:
        tpg["attributes"] = {"authentication": 0, "generate_node_acls": 1, "demo_mode_write_protect": 0,
                             "cache_dynamic_acls": 1}
    manager.apply(saveconfig.from_dict({
        "storage_objects": [{"plugin": "fileio", "name": iqn.rsplit(":", 1)[1], "dev": backing,
                             "size": 16 << 20, "write_back": False}],
        "targets": [{"wwn": iqn, "fabric": "iscsi", "tpgs": [tpg]}]}))


def node_files():
    root = "/etc/iscsi/nodes"
    out = []
    for dirpath, _, files in os.walk(root):
        for f in files:
            out.append(os.path.relpath(os.path.join(dirpath, f), root))
    return sorted(out)


def run(cmd, argv):
    p = subprocess.run(cmd + argv, capture_output=True, text=True, timeout=180)
    return {"argv": argv, "rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr}


IPV6_STEPS = [
    ["-m", "discovery", "-t", "st", "-p", P6],
    ["-m", "node"],
    ["-m", "node", "-T", T6, "-p", P6, "--login"],
    ["-m", "session"],
    ["-m", "session", "-P", "1"],
    ["-m", "session", "-P", "3"],
    ["-m", "node", "-T", T6, "-p", P6, "--logout"],
    ["-m", "session"],
]


def ipv6_steps(cmd):
    out = []
    for argv in IPV6_STEPS:
        out.append(run(cmd, argv))
        if argv[:2] == ["-m", "node"] and len(argv) == 2:
            out[-1]["node_files"] = node_files()
    return out


class ChapWire:
    """CHAP_A keys on the loopback wire while a login runs: (tcp source port, value)."""

    def __init__(self):
        self.seen = []
        self.wire = lio.LoopbackTcp(self._segment)

    def _segment(self, sport, _dport, _flags, payload):
        at = payload.find(b"CHAP_A=")
        while at >= 0:
            end = payload.find(b"\0", at)
            self.seen.append((sport, payload[at + 7:end].decode(errors="replace")))
            at = payload.find(b"CHAP_A=", end)

    def close(self):
        self.wire.close()
        # the initiator's offer travels to port 3260, the target's choice from it
        return {"offered": [v for p, v in self.seen if p != 3260], "chosen": [v for p, v in self.seen if p == 3260]}


def chap_login(algs, secret=SECRET, target=TC, mutual=None):
    cmd = [f"{VENV}/iscsiadm"]
    keys = [("node.session.auth.authmethod", "CHAP"), ("node.session.auth.username", USER),
            ("node.session.auth.password", secret), ("node.session.auth.chap_algs", algs)]
    if mutual:
        keys += [("node.session.auth.username_in", TUSER), ("node.session.auth.password_in", mutual)]
    for key, value in keys:
        r = run(cmd, ["-m", "node", "-T", target, "-p", P4, "-o", "update", "-n", key, "-v", value])
        assert r["rc"] == 0, r
    wire = ChapWire()
    res = run(cmd, ["-m", "node", "-T", target, "-p", P4, "--login"])
    res.update(wire.close())
    res["sessions"] = [s for s in os.listdir("/sys/class/iscsi_session")]
    if res["rc"] == 0:
        res["logout"] = run(cmd, ["-m", "node", "-T", target, "-p", P4, "--logout"])["rc"]
    res["sessions_after"] = [s for s in os.listdir("/sys/class/iscsi_session")]
    del res["stdout"]
    return res


os.makedirs(SCRATCH, exist_ok=True)
os.makedirs("/etc/target", exist_ok=True)
os.makedirs("/var/tmp/lio", exist_ok=True)
os.makedirs("/run/lock/iscsi", exist_ok=True)
INITIATOR = open("/etc/iscsi/initiatorname.iscsi").read().split("InitiatorName=")[1].split()[0]
lio.clear()
try:
    make_target(T6, "[::1]")
    # --- IPv6, the reference: Debian's iscsid + iscsiadm ---
    lio.reset_db()
    iscsid = subprocess.Popen(["/usr/sbin/iscsid", "-f"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    lio.until(lio.iscsid_ready, 60)
    try:
        report["open_iscsi"] = ipv6_steps(["iscsiadm"])
    finally:
        subprocess.run(["iscsiadm", "-m", "node", "-U", "all"], capture_output=True)
        iscsid.terminate()
        iscsid.wait(timeout=30)
    # --- IPv6, iscsikit ---
    lio.reset_db()
    os.environ["ISCSIKIT_SOCKET"] = "/run/iscsikit/chapv6.sock"
    ours = subprocess.Popen([f"{VENV}/iscsikitd", "--socket", "/run/iscsikit/chapv6.sock"],
                            stdout=subprocess.DEVNULL, stderr=open(f"{SCRATCH}/iscsikitd.log", "wb"))
    lio.until(lambda: os.path.exists("/run/iscsikit/chapv6.sock"), 60)
    try:
        report["iscsikit"] = ipv6_steps([f"{VENV}/iscsiadm"])
        lio.clear()
        # --- chap_algs (iscsikit) ---
        lio.reset_db()
        make_target(TC, P4, chap=True)
        r = run([f"{VENV}/iscsiadm"], ["-m", "node", "-o", "new", "-T", TC, "-p", P4])
        assert r["rc"] == 0, r
        report["chap"] = {
            "sha3_first": chap_login("SHA3-256,SHA256,MD5"),
            "sha256_first": chap_login("SHA256,SHA3-256,MD5"),
            "sha256_only": chap_login("SHA256"),
            "md5": chap_login("MD5"),
            "sha256_wrong_secret": chap_login("SHA256,MD5", secret="wrong-secret-sha-99"),
        }
        make_target(TM, P4, chap=True, mutual=True)
        r = run([f"{VENV}/iscsiadm"], ["-m", "node", "-o", "new", "-T", TM, "-p", P4])
        assert r["rc"] == 0, r
        report["chap"]["sha3_mutual"] = chap_login("SHA3-256,MD5", target=TM, mutual=TSECRET)
        report["chap"]["sha3_mutual_wrong_target_secret"] = chap_login("SHA3-256,MD5", target=TM,
                                                                       mutual="not-the-target-sha-56")
    finally:
        subprocess.run([f"{VENV}/iscsiadm", "-m", "node", "-U", "all"], capture_output=True)
        ours.terminate()
        ours.wait(timeout=30)
finally:
    lio.reset_db()
    lio.clear()
print(json.dumps(report))

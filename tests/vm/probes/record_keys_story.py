"""Run in the guest: node record keys that change what a login and a recovery do, through
Debian's open-iscsi 2.1.8 and through iscsikit (iscsikitd + the forwarding iscsiadm), one after
the other (never both daemons at once) against the same LIO target and the same records.

1. MaxXmitDataSegmentLength 16384, DefaultTime2Wait 5, DefaultTime2Retain 7 in the record:
   after the login, sysfs max_xmit_dlength (LIO declares 262144) and LIO's own view of the
   session (the ACL's param/ files); then LIO's TPG is disabled for a moment and the time
   until the session is LOGGED_IN again is the reconnect's wait (the negotiated Time2Wait).
2. initial_login_retry_max against a closed port (127.0.0.1:3261), login_timeout 3,
   DefaultTime2Wait 1: how many connects (SYNs read off the loopback wire with an AF_PACKET
   socket), how long, and what iscsiadm says, with retry_max 0 and 3.
Prints one JSON report."""

import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import lio  # noqa: E402
from rtslib import LUN, TPG, FabricModule, FileIOStorageObject, MappedLUN, NetworkPortal, NodeACL, Target  # noqa: E402
from transcripts import run_steps  # noqa: E402

IQN = "iqn.2026-11.org.iscsikit.test:keys"
P = "127.0.0.1"
CLOSED = "127.0.0.1:3261"
VENV = os.path.dirname(sys.executable)
SOCK = "/run/iscsikit/keys.sock"
NODE = ["-m", "node", "-T", IQN, "-p", P]
DEAD = ["-m", "node", "-T", IQN, "-p", CLOSED]


def update(node, **keys):
    argv = [*node, "-o", "update"]
    for k, v in keys.items():
        argv += ["-n", k, "-v", str(v)]
    return argv


KEYS = {"node.conn[0].iscsi.MaxXmitDataSegmentLength": 16384, "node.session.iscsi.DefaultTime2Wait": 5,
        "node.session.iscsi.DefaultTime2Retain": 7}
LOGIN_STEPS = [[*NODE, "-o", "new"], update(NODE, **KEYS), [*NODE, "--login"]]
RETRY = {"node.conn[0].timeo.login_timeout": 3, "node.session.iscsi.DefaultTime2Wait": 1}


def make_target(initiator):
    lio.clear()
    path = "/var/tmp/lio/keys.img"
    with open(path, "ab") as f:
        f.truncate(16 << 20)
    so = FileIOStorageObject("keys", path, size=16 << 20, write_back=False)
    tpg = TPG(Target(FabricModule("iscsi"), IQN), 1)
    NetworkPortal(tpg, P, 3260)
    LUN(tpg, 0, so)
    tpg.set_attribute("authentication", "0")
    tpg.set_attribute("generate_node_acls", "0")
    MappedLUN(NodeACL(tpg, initiator), 0, tpg_lun=0)
    tpg.enable = True
    return tpg


def reset_db():
    for d in ("nodes", "send_targets", "static", "isns", "fw", "ifaces"):
        shutil.rmtree(f"/etc/iscsi/{d}", ignore_errors=True)


def only_session():
    sids = os.listdir("/sys/class/iscsi_session")
    return sids[0].removeprefix("session") if len(sids) == 1 else None


def read(path):
    try:
        return open(path).read().strip()
    except OSError as e:
        return f"error: {e}"


def lio_view(initiator):
    d = f"/sys/kernel/config/target/iscsi/{IQN}/tpgt_1/acls/{initiator}/param"
    return {k: read(f"{d}/{k}") for k in ("DefaultTime2Wait", "DefaultTime2Retain", "MaxRecvDataSegmentLength")}


def reconnect_wait(tpg, sid):
    """Seconds from LIO dropping the connection (TPG disabled, enabled again 0.3 s later)
    until the session is LOGGED_IN again, and whether it was seen FAILED in between."""
    state = f"/sys/class/iscsi_session/session{sid}/state"
    t0 = time.monotonic()
    tpg.enable = False
    time.sleep(0.3)
    tpg.enable = True
    failed = lio.until(lambda: read(state) != "LOGGED_IN", 10, 0.02)
    back = lio.until(lambda: read(state) == "LOGGED_IN", 30, 0.05)
    return {"seconds": round(time.monotonic() - t0, 2), "failed_seen": bool(failed), "back": bool(back)}


class Syns:
    """TCP SYNs to port 3261 on the loopback wire: one per connect attempt."""

    def __init__(self):
        self.times = []
        self.wire = lio.LoopbackTcp(self._segment)

    def _segment(self, _sport, dport, flags, _payload):
        if dport == 3261 and flags & 0x12 == 0x02:      # SYN, no ACK
            self.times.append(time.monotonic())

    def close(self):
        self.wire.close()
        return self.times


def retry_run(cmd, retry_max):
    run_steps(cmd, [[*DEAD, "-o", "new"], update(DEAD, **RETRY, **{"node.session.initial_login_retry_max": retry_max})])
    syns = Syns()
    t0 = time.monotonic()
    [login] = run_steps(cmd, [[*DEAD, "--login"]])
    times = syns.close()
    run_steps(cmd, [[*DEAD, "-o", "delete"]])
    return {**login, "connects": len(times), "at": [round(t - t0, 2) for t in times]}


def story(cmd, initiator, tpg):
    out = {"steps": run_steps(cmd, LOGIN_STEPS)}
    sid = lio.until(only_session, 30)
    out["sid"] = sid
    if sid:
        conn = f"/sys/class/iscsi_connection/connection{sid}:0"
        out["max_xmit_dlength"] = read(f"{conn}/max_xmit_dlength")
        out["max_recv_dlength"] = read(f"{conn}/max_recv_dlength")
        out["lio"] = lio_view(initiator)
        out["reconnect"] = reconnect_wait(tpg, sid)
        out["lio_after_reconnect"] = lio_view(initiator)
    out["logout"] = run_steps(cmd, [[*NODE, "--logout"]])[0]
    out["retry_0"] = retry_run(cmd, 0)
    out["retry_3"] = retry_run(cmd, 3)
    return out


os.makedirs("/etc/target", exist_ok=True)
os.makedirs("/var/tmp/lio", exist_ok=True)
os.makedirs("/run/lock/iscsi", exist_ok=True)
initiator = open("/etc/iscsi/initiatorname.iscsi").read().split("InitiatorName=")[1].split()[0]
report = {"initiator": initiator}
tpg = make_target(initiator)

reset_db()
iscsid = lio.start_iscsid()
try:
    report["open_iscsi"] = story(["iscsiadm"], initiator, tpg)
finally:
    subprocess.run(["iscsiadm", "-m", "node", "-U", "all"], capture_output=True)
    iscsid.terminate()
    iscsid.wait(timeout=30)

reset_db()
os.environ["ISCSIKIT_SOCKET"] = SOCK
ours = lio.start_iscsikitd(SOCK, "/tmp/iscsikitd-keys.log", "--log-level", "debug")
try:
    report["iscsikit"] = story([f"{VENV}/iscsiadm"], initiator, tpg)
finally:
    subprocess.run([f"{VENV}/iscsiadm", "-m", "node", "-U", "all"], capture_output=True)
    ours.terminate()
    ours.wait(timeout=30)
report["daemon_log_tail"] = open("/tmp/iscsikitd-keys.log").read()[-3000:]
reset_db()
lio.clear()
print(json.dumps(report))

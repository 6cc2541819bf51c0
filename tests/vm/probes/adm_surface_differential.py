"""Run in the guest: the modes issue 14 made real (discovery operations and discovery CHAP,
discoverydb -P 1, -m host, -m fw, session -r SID -o show|update / -S, session -R with no
session, -k) through Debian's open-iscsi 2.1.8 and through iscsikit, one after the other
against the same LIO targets and the same records; print both transcripts as JSON.

A step is an iscsiadm argv, or ("lio", action) changing the target between command lines
the same way for both runs (discovery CHAP on/off, a target removed)."""

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import lio  # noqa: E402
from transcripts import run_steps  # noqa: E402
from rtslib import FabricModule, RTSRoot  # noqa: E402

T1 = "iqn.2026-11.org.iscsikit.test:surf1"
T2 = "iqn.2026-11.org.iscsikit.test:surf2"
P = "127.0.0.1"
VENV = os.path.dirname(sys.executable)
AUTH = "discovery.sendtargets.auth"


def disc_update(*pairs):
    argv = ["-m", "discoverydb", "-t", "st", "-p", P, "-o", "update"]
    for k, v in pairs:
        argv += ["-n", k, "-v", v]
    return argv


STEPS = [
    ["-m", "discoverydb", "-o", "show", "-P", "1"],
    ["-m", "session", "-R"],
    ["-m", "session", "-s"],
    ["-m", "host"],
    ["-m", "fw"],
    ["-m", "discovery", "-t", "fw"],
    ["-m", "discovery", "-t", "st", "-p", P, "-o", "nonpersistent"],
    ["-m", "node"],
    ["-m", "discoverydb"],
    ["-m", "discovery", "-t", "st", "-p", P],
    ["-m", "discoverydb", "-o", "show", "-P", "1"],
    ["-m", "discovery", "-p", P],
    ["-m", "discovery", "-p", P, "-o", "new"],
    ["-m", "discovery", "-p", "192.0.2.99"],
    ["-m", "discovery", "-t", "slp", "-p", P],
    # -W: answered once the login is sent; the session comes up after
    ["-m", "node", "-T", T1, "-p", P, "--login", "-W"],
    ("lio", "wait_session"),
    ["-m", "host"],
    ["-m", "host", "-P", "1"],
    ["-m", "host", "-H", "HOST", "-P", "1"],
    ["-m", "host", "-H", "HOST", "-P", "2"],
    ["-m", "host", "-H", "HOST", "-P", "3"],
    ["-m", "host", "-H", "HOST", "-P", "4"],
    ["-m", "host", "-P", "5"],
    ["-m", "host", "-C", "stats", "-H", "HOST"],
    ["-m", "host", "-C", "stats"],
    ["-m", "host", "-C", "flashnode", "-H", "HOST"],
    ["-m", "host", "-C", "chap", "-H", "HOST"],
    ["-m", "iface", "-I", "default", "-C", "ping", "-a", P],
    ["-m", "iface", "-I", "default", "-o", "apply"],
    ["-m", "iface", "-H", "HOST", "-o", "applyall"],
    ["-m", "session", "-r", "SID"],
    ["-m", "session", "-r", "SID", "-P", "1"],
    ["-m", "host", "-C", "chap", "-H", "HOST", "-o", "show"],
    ["-m", "session", "-r", "SID", "-o", "show"],
    ["-m", "session", "-r", "SID", "-S"],
    ["-m", "session", "-r", "SID", "-o", "update", "-n", "node.session.timeo.replacement_timeout", "-v", "40"],
    ["-m", "node", "-T", T1, "-p", P, "-o", "show"],
    # iscsid.safe_logout = Yes (set in iscsid.conf before each daemon starts): a mounted disk
    # keeps its session; unmounted, the logout goes through
    ("lio", "mount"),
    ["-m", "node", "-T", T1, "-p", P, "--logout"],
    ["-m", "session", "-u"],
    ("lio", "umount"),
    ["-m", "node", "-T", T1, "-p", P, "--logout"],
    ["-m", "node", "-T", T1, "-p", P, "--login"],
    # discovery CHAP, one-way: wrong secret, then the right one
    ("lio", "discovery_auth"),
    ["-m", "discoverydb", "-t", "st", "-p", P, "-D"],
    disc_update((f"{AUTH}.authmethod", "CHAP"), (f"{AUTH}.username", "duser"),
                (f"{AUTH}.password", "wrong-secret-1")),
    ["-m", "discoverydb", "-t", "st", "-p", P, "-D"],
    disc_update((f"{AUTH}.password", "disc-secret-12")),
    ["-m", "discoverydb", "-t", "st", "-p", P, "-D"],
    ["-m", "discovery", "-p", P, "-D"],
    # mutual: the target proves itself with the incoming secret
    ("lio", "discovery_auth_mutual"),
    disc_update((f"{AUTH}.username_in", "dtarget"), (f"{AUTH}.password_in", "disc-mutual-34")),
    ["-m", "discoverydb", "-t", "st", "-p", P, "-D", "-P", "1"],
    # -m discovery -t st discovers with the defaults: no CHAP, refused now
    ["-m", "discovery", "-t", "st", "-p", P],
    ("lio", "no_discovery_auth"),
    # stale records: T2 is gone from the target; T1's session keeps its record
    ("lio", "drop_t2"),
    ["-m", "discovery", "-t", "st", "-p", P, "-o", "new"],
    ["-m", "node"],
    ["-m", "discovery", "-t", "st", "-p", P, "-o", "delete"],
    ["-m", "node"],
    ["-m", "discoverydb", "-o", "show", "-P", "1"],
    ["-m", "discovery", "-t", "st", "-p", P, "-l"],
    ["-m", "node", "-T", T1, "-p", P, "--logout"],
    ["-m", "discovery", "-t", "st", "-p", P, "-o", "nonpersistent", "-l"],
    ["-m", "session"],
    ["-m", "node", "-U", "all"],
    ["-m", "discovery", "-p", P, "-o", "delete"],
    ["-m", "node"],
]


def setup_lio():
    lio.clear()
    lio.target(T1, "/var/tmp/lio/surf1.img")
    lio.target(T2, "/var/tmp/lio/surf2.img")


MNT = "/var/tmp/surface-mnt"


def t1_disk():
    for sdir in os.listdir("/sys/class/iscsi_session"):
        if open(f"/sys/class/iscsi_session/{sdir}/targetname").read().strip() == T1:
            dev = os.path.realpath(f"/sys/class/iscsi_session/{sdir}/device")
            for root, dirs, _ in os.walk(os.path.dirname(dev)):
                if os.path.basename(root) == "block" and dirs:
                    return dirs[0]
    return None


def lio_action(name):
    if name == "mount":
        disk = lio.until(t1_disk, 30)
        lio.until(lambda: os.path.exists(f"/dev/{disk}"), 30)
        subprocess.run(["mkfs.ext4", "-q", "-F", f"/dev/{disk}"], check=True, capture_output=True)
        os.makedirs(MNT, exist_ok=True)
        subprocess.run(["mount", f"/dev/{disk}", MNT], check=True)
        return
    if name == "wait_session":
        lio.until(lambda: any(open(f"/sys/class/iscsi_session/{d}/state").read().strip() == "LOGGED_IN"
                              for d in os.listdir("/sys/class/iscsi_session")), 60)
        lio.until(lambda: t1_disk(), 60)
        return
    if name == "umount":
        subprocess.run(["umount", MNT], check=True)
        return
    iscsi = FabricModule("iscsi")
    if name == "discovery_auth":
        iscsi.discovery_userid, iscsi.discovery_password = "duser", "disc-secret-12"
        iscsi.discovery_enable_auth = True
    elif name == "discovery_auth_mutual":
        iscsi.discovery_mutual_userid, iscsi.discovery_mutual_password = "dtarget", "disc-mutual-34"
    elif name == "no_discovery_auth":
        iscsi.clear_discovery_auth_settings()
        iscsi.discovery_enable_auth = False
    elif name == "drop_t2":
        for t in RTSRoot().targets:
            if t.wwn == T2:
                t.delete()


def ids():
    sids = sorted(os.listdir("/sys/class/iscsi_session"))
    hosts = sorted(os.listdir("/sys/class/iscsi_host"))
    return {"SID": sids[0].removeprefix("session") if sids else "0",
            "HOST": hosts[0].removeprefix("host") if hosts else "0"}


def run_all(cmd, steps):
    return run_steps(cmd, steps, ids, lio_action)


def kill_step(cmd, proc):
    """-k 0, then whether the daemon it asked is gone within 10 s."""
    p = subprocess.run(cmd + ["-k", "0"], capture_output=True, text=True, timeout=60)
    try:
        proc.wait(timeout=10)
        gone = True
    except subprocess.TimeoutExpired:
        gone = False
    return {"argv": ["-k", "0"], "rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr, "stopped": gone}


os.makedirs("/etc/target", exist_ok=True)
os.makedirs("/var/tmp/lio", exist_ok=True)
os.makedirs("/run/lock/iscsi", exist_ok=True)
initiator = open("/etc/iscsi/initiatorname.iscsi").read().split("InitiatorName=")[1].split()[0]
lio.INITIATOR = initiator
report = {}

CONF = open("/etc/iscsi/iscsid.conf").read()
with open("/etc/iscsi/iscsid.conf", "w") as f:   # the guest's overlay: the host's file is untouched
    f.write(CONF + "\niscsid.safe_logout = Yes\n")

# --- the reference: Debian's iscsid + iscsiadm ---
lio.reset_db()
setup_lio()
iscsid = lio.start_iscsid()
try:
    report["open_iscsi"] = run_all(["iscsiadm"], STEPS)
finally:
    subprocess.run(["iscsiadm", "-m", "node", "-U", "all"], capture_output=True)
    report["open_iscsi_kill"] = kill_step(["iscsiadm"], iscsid)
    if iscsid.poll() is None:
        iscsid.terminate()
        iscsid.wait(timeout=30)

# --- iscsikit: iscsikitd + the forwarding iscsiadm ---
lio.reset_db()
setup_lio()
os.environ["ISCSIKIT_SOCKET"] = "/run/iscsikit/surface.sock"
ours = subprocess.Popen([f"{VENV}/iscsikitd", "--socket", "/run/iscsikit/surface.sock", "--log-level", "debug"],
                        stdout=subprocess.DEVNULL, stderr=open("/tmp/iscsikitd-surface.log", "wb"))
lio.until(lambda: os.path.exists("/run/iscsikit/surface.sock"), 60)
try:
    report["iscsikit"] = run_all([f"{VENV}/iscsiadm"], STEPS)
finally:
    subprocess.run([f"{VENV}/iscsiadm", "-m", "node", "-U", "all"], capture_output=True)
    report["iscsikit_kill"] = kill_step([f"{VENV}/iscsiadm"], ours)
    if ours.poll() is None:
        ours.terminate()
        ours.wait(timeout=30)
report["daemon_log_tail"] = open("/tmp/iscsikitd-surface.log").read()[-3000:]
with open("/etc/iscsi/iscsid.conf", "w") as f:
    f.write(CONF)
lio.reset_db()
lio_action("no_discovery_auth")
lio.clear()
time.sleep(0)
print(json.dumps(report))

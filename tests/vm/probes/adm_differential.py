"""Run in the guest: the same iscsiadm command lines through Debian's open-iscsi 2.1.8 and through
iscsikit (iscsikitd + the forwarding iscsiadm, which runs each command in the daemon, and with
the daemon stopped runs iscsikit-adm in-process), one after the other against the same LIO
targets; print both transcripts as JSON. Never both daemons at once."""

import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import lio  # noqa: E402
from transcripts import run_steps  # noqa: E402

T1 = "iqn.2026-11.org.iscsikit.test:cli1"
T2 = "iqn.2026-11.org.iscsikit.test:cli2"
P = "127.0.0.1"
VENV = os.path.dirname(sys.executable)

STEPS = [
    ["-m", "discovery", "-t", "st", "-p", P],
    ["-m", "node"],
    ["-m", "node", "-P", "1"],
    ["-m", "node", "-T", T1, "-p", P, "-o", "update", "-n", "node.session.timeo.replacement_timeout", "-v", "30"],
    ["-m", "node", "-T", T1, "-p", P, "-o", "update", "-n", "node.bogus", "-v", "1"],
    ["-m", "node", "-T", T1, "-p", P, "--login"],
    ["-m", "node", "-T", T1, "-p", P, "--login"],
    ["-m", "session"],
    ["-m", "session", "-P", "0"],
    ["-m", "session", "-P", "1"],
    ["-m", "session", "-P", "2"],
    ["-m", "session", "-P", "3"],
    ["-m", "session", "-r", "SID", "-s"],
    ["-m", "node", "-T", T1, "-p", P, "-o", "delete"],
    ["-m", "node", "-T", T1, "-p", P, "-o", "show"],
    ["-m", "node", "-T", T2, "-p", P, "-o", "update", "-n", "node.session.auth.authmethod", "-v", "CHAP",
     "-n", "node.session.auth.username", "-v", "alice", "-n", "node.session.auth.password", "-v", "wrong-secret-99"],
    ["-m", "node", "-T", T2, "-p", P, "--login"],
    ["-m", "node", "-T", "iqn.2026-11.org.iscsikit.test:none", "-p", P, "--login"],
    ["-m", "node", "-T", T1, "-p", P, "--logout"],
    ["-m", "session"],
    ["-m", "node", "-T", T1, "-p", P, "-o", "delete"],
    ["-m", "node", "-T", T1, "-p", P],
]
DAEMON_DOWN = [
    ["-m", "node", "-T", T2, "-p", P, "--login"],
    # record edits work with the daemon down
    ["-m", "node", "-o", "new", "-T", T1, "-p", P],
    ["-m", "node", "-T", T1, "-p", P, "-o", "update", "-n", "node.startup", "-v", "automatic"],
    ["-m", "node"],
    ["-m", "node", "-T", T1, "-p", P, "-o", "delete"],
    ["-m", "node", "-T", T1, "-p", P],
]


def current_sid():
    ids = sorted(os.listdir("/sys/class/iscsi_session"))
    return {"SID": ids[0].removeprefix("session") if ids else "0"}


def run_all(cmd, steps):
    return run_steps(cmd, steps, current_sid)


os.makedirs("/etc/target", exist_ok=True)
os.makedirs("/var/tmp/lio", exist_ok=True)
lio.clear()
lio.target(T1, "/var/tmp/lio/cli1.img")
initiator = open("/etc/iscsi/initiatorname.iscsi").read().split("InitiatorName=")[1].split()[0]
lio.INITIATOR = initiator
lio.target(T2, "/var/tmp/lio/cli2.img", chap=("alice", "alice-secret-12"))
os.makedirs("/run/lock/iscsi", exist_ok=True)
report = {}

# --- the reference: Debian's iscsid + iscsiadm ---
lio.reset_db()
iscsid = lio.start_iscsid()
try:
    report["open_iscsi"] = run_all(["iscsiadm"], STEPS)
finally:
    subprocess.run(["iscsiadm", "-m", "node", "-U", "all"], capture_output=True)
    iscsid.terminate()
    iscsid.wait(timeout=30)
report["open_iscsi"] += run_all(["iscsiadm"], DAEMON_DOWN)

# --- iscsikit: iscsikitd + iscsikit-adm ---
lio.reset_db()
os.environ["ISCSIKIT_SOCKET"] = "/run/iscsikit/diff.sock"
ours = subprocess.Popen([f"{VENV}/iscsikitd", "--socket", "/run/iscsikit/diff.sock", "--log-level", "debug"],
                        stdout=subprocess.DEVNULL, stderr=open("/tmp/iscsikitd-diff.log", "wb"))
lio.until(lambda: os.path.exists("/run/iscsikit/diff.sock"), 60)
try:
    report["iscsikit"] = run_all([f"{VENV}/iscsiadm"], STEPS)
finally:
    subprocess.run([f"{VENV}/iscsiadm", "-m", "node", "-U", "all"], capture_output=True)
    ours.terminate()
    ours.wait(timeout=30)
# how many command lines the daemon ran (its debug line per forwarded run)
report["served"] = open("/tmp/iscsikitd-diff.log").read().count("cli run: mode ")
report["steps_up"] = len(STEPS)
report["forwarder_is_elf"] = open(f"{VENV}/iscsiadm", "rb").read(4) == b"\x7fELF"
report["iscsikit"] += run_all([f"{VENV}/iscsiadm"], DAEMON_DOWN)
lio.reset_db()
lio.clear()
print(json.dumps(report))

"""Run in the guest: the iscsiadm calls os-brick's ISCSIConnector makes for one volume's connect and
disconnect, timed one by one, Debian's open-iscsi (iscsid + C iscsiadm) vs iscsikit (iscsikitd + the
forwarding iscsiadm), rounds alternating; never both daemons at once."""

import json
import os
import re
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests", "vm", "probes"))
import lio  # noqa: E402

from iscsikit.kernel.sysfs import Sysfs  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
VENV = os.path.dirname(sys.executable)
T, P = "iqn.2026-11.org.iscsikit.bench:calls", "127.0.0.1:3260"
SOCK = "/run/iscsikit/bench-calls.sock"
sysfs = Sysfs()

# os-brick 7.1.1 connect_volume / disconnect_volume, single path (os_brick/initiator/connectors/iscsi.py)
CONNECT = [
    ("node lookup", ["-m", "node", "-T", T, "-p", P]),
    ("node new", ["-m", "node", "-T", T, "-p", P, "--interface", "default", "--op", "new"]),
    ("update scan", ["-m", "node", "-T", T, "-p", P, "--op", "update", "-n", "node.session.scan", "-v", "manual"]),
    ("session", ["-m", "session"]),
    ("login", ["-m", "node", "-T", T, "-p", P, "--login"]),
    ("update startup", ["-m", "node", "-T", T, "-p", P, "--op", "update", "-n", "node.startup", "-v", "automatic"]),
    ("session -P 3", ["-m", "session", "-P", "3"]),
]
DISCONNECT = [
    ("session (dis)", ["-m", "session"]),
    ("discoverydb show", ["-m", "discoverydb", "-o", "show", "-P", "1"]),
    ("node list", ["-m", "node"]),
    ("update manual", ["-m", "node", "-T", T, "-p", P, "--op", "update", "-n", "node.startup", "-v", "manual"]),
    ("logout", ["-m", "node", "-T", T, "-p", P, "--logout"]),
    ("node delete", ["-m", "node", "-T", T, "-p", P, "--op", "delete"]),
]


def run_round(adm, env):
    times, rcs = {}, {}
    for name, argv in CONNECT + DISCONNECT:
        t0 = time.monotonic()
        p = subprocess.run([adm, *argv], capture_output=True, env=env, timeout=180)
        times[name] = time.monotonic() - t0
        rcs[name] = p.returncode
    lio.until(lambda: not sysfs.session_ids(), 60)
    return times, rcs


DAEMON_LOG = "/var/tmp/bench-calls-iscsikitd.log"


def daemon_times():
    """The daemon's own time for each forwarded command, in order ("cli run: ... s" at debug)."""
    with open(DAEMON_LOG) as f:
        return [float(m.group(1)) for m in re.finditer(r"cli run: mode \S+, exit \d+, ([0-9.]+) s", f.read())]


def start(tool):
    if tool == "open_iscsi":
        p = subprocess.Popen(["/usr/sbin/iscsid", "-f"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
        time.sleep(1)
        return p, "/usr/sbin/iscsiadm", dict(os.environ)
    env = dict(os.environ, ISCSIKIT_SOCKET=SOCK)
    p = subprocess.Popen([f"{VENV}/iscsikitd", "--socket", SOCK, "--log-level", "debug"],
                         stdout=subprocess.DEVNULL, stderr=open(DAEMON_LOG, "w"))
    lio.until(lambda: os.path.exists(SOCK), 60)
    return p, f"{VENV}/iscsiadm", env


os.makedirs("/etc/target", exist_ok=True)
os.makedirs("/var/tmp/lio", exist_ok=True)
os.makedirs("/run/lock/iscsi", exist_ok=True)
lio.clear()
lio.target(T, "/var/tmp/lio/calls.img", size=8 << 20)
out = {"rounds": ROUNDS, "open_iscsi": [], "iscsikit": [], "rcs": {}, "in_daemon": []}
try:
    for _ in range(ROUNDS):
        for tool in ("open_iscsi", "iscsikit"):
            daemon, adm, env = start(tool)
            try:
                subprocess.run([adm, "-m", "discovery", "-t", "st", "-p", P], capture_output=True, env=env)
                subprocess.run([adm, "-m", "node", "-T", T, "-p", P, "--op", "delete"], capture_output=True, env=env)
                times, rcs = run_round(adm, env)
                out[tool].append(times)
                out["rcs"][tool] = rcs
            finally:
                subprocess.run([adm, "-m", "node", "-U", "all"], capture_output=True, env=env)
                daemon.terminate()
                daemon.wait(30)
                if tool == "iscsikit":
                    # the discovery and the delete before the round come first, -U all last
                    out["in_daemon"].append(dict(zip([n for n, _ in CONNECT + DISCONNECT], daemon_times()[2:])))
finally:
    lio.clear()
summary = {}
for tool in ("open_iscsi", "iscsikit"):
    summary[tool] = {name: statistics.median(r[name] for r in out[tool]) for name, _ in CONNECT + DISCONNECT}
    summary[tool]["connect"] = statistics.median(sum(r[n] for n, _ in CONNECT) for r in out[tool])
    summary[tool]["disconnect"] = statistics.median(sum(r[n] for n, _ in DISCONNECT) for r in out[tool])
summary["in_daemon"] = {name: statistics.median(r[name] for r in out["in_daemon"] if name in r)
                        for name, _ in CONNECT + DISCONNECT}
out["median"] = summary
print(json.dumps(out))

"""Run in the guest: how late each login reaches `sessions --follow`, kmod events vs a 1 s configfs poller.

Both followers are `iscsikit-target sessions --follow --json` processes started together; one
reads iscsikit_lio's events, the other (`--poll`) re-reads configfs every second as targetcli
does. BENCH_LOGINS logins (demo mode, one initiator name each) with iscsikit's login_io at random spacing (so each lands at a random
phase of the poller's second); each session stays until the end (the poller must see it).
Latency = the moment a follower's line is read here - the kernel's own timestamp of the login
(A_TIME_NS, CLOCK_MONOTONIC, the clock time.monotonic() reads). Prints one JSON line.
"""

import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(CHECKOUT / "tests" / "vm" / "probes"))
import lio  # noqa: E402

from iscsikit.initiator import login_io  # noqa: E402

KO = str(CHECKOUT / "kmod" / "iscsikit_lio.ko")
SHELL = os.path.join(os.path.dirname(sys.executable), "iscsikit-target")
IQN = "iqn.2026-11.org.iscsikit.bench:events"
ISID = 0x400001380000
# one initiator name per login: configfs shows one session per ACL (acls/<iqn>/info reads
# se_nacl->nacl_sess) and demo mode lists names only (tpgt_1/dynamic_sessions), so a poller
# tells logins apart by name alone
NAME = "iqn.2026-11.org.iscsikit.bench:ini"
N = int(os.environ.get("BENCH_LOGINS", "20"))


class Follower:
    def __init__(self, *extra):
        self.proc = subprocess.Popen([SHELL, "sessions", "--follow", "--json", *extra], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self.seen = {}
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            t = time.monotonic_ns()
            e = json.loads(line)
            if e.get("event") == "login" and e.get("initiator"):
                self.seen.setdefault(e["initiator"], (t, e))

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(10)


os.makedirs("/etc/target", exist_ok=True)
os.makedirs("/var/tmp/bench", exist_ok=True)
subprocess.run("ip link set lo up; grep -q '^iscsikit_lio ' /proc/modules || insmod " + KO, shell=True, check=True)
lio.clear()
lio.target(IQN, "/var/tmp/bench/events.img", size=16 << 20)
kmod, poller = Follower(), Follower("--poll")
# both followers up: kmod's answers a login; the poller's first snapshot comes after its start
warm = login_io.login(("127.0.0.1", 3260), IQN, initiator_name=f"{NAME}-warm", isid=ISID + 0xFFF)
lio.until(lambda: f"{NAME}-warm" in kmod.seen, 60)
time.sleep(3.0)
rng = random.Random(15)
held = []
for i in range(N):
    held.append(login_io.login(("127.0.0.1", 3260), IQN, initiator_name=f"{NAME}{i}", isid=ISID + i))
    time.sleep(rng.uniform(0.3, 1.3))
names = [f"{NAME}{i}" for i in range(N)]
lio.until(lambda: all(x in poller.seen for x in names), 10)
rows = []
for x in names:
    k, p = kmod.seen.get(x), poller.seen.get(x)
    if not k:
        continue
    t_kernel = k[1]["time_ns"]
    rows.append({"initiator": x, "kmod_ms": (k[0] - t_kernel) / 1e6, "poll_ms": (p[0] - t_kernel) / 1e6 if p else None})
for h in held + [warm]:
    try:
        h.logout()
    except login_io.LoginError:     # idle this long, LIO's NOP-In timer may have dropped it
        h.close()
kmod.stop()
poller.stop()
lio.clear()


def cost(code, n=3):
    """Median wall seconds of a fresh interpreter running `code` (the CLI pays it at every start)."""
    runs = []
    for _ in range(n):
        t = time.monotonic()
        subprocess.run([sys.executable, "-c", code], check=True)
        runs.append(time.monotonic() - t)
    return round(statistics.median(runs), 3)


imports = {"pass": cost("pass"), "iscsikit.target.events": cost("import iscsikit.target.events"),
           "pyroute2.netlink.generic": cost("import pyroute2.netlink.generic")}


def summary(key):
    v = sorted(r[key] for r in rows if r[key] is not None)
    if not v:
        return {"n": 0}
    return {"n": len(v), "median_ms": round(statistics.median(v), 1), "p90_ms": round(v[int(0.9 * (len(v) - 1))], 1),
            "max_ms": round(v[-1], 1), "min_ms": round(v[0], 1)}


out = {"logins": N, "kmod": summary("kmod_ms"), "poll": summary("poll_ms"), "imports_s": imports, "rows": rows}
print(json.dumps(out))

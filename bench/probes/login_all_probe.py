"""Run in the guest: `-m node -L all` / `-U all` over N targets and daemon RSS, open-iscsi vs iscsikit."""

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

N = int(os.environ.get("BENCH_TARGETS", "32"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "1"))      # -L all / -U all rounds per tool, same boot
# "debug": the daemon's debug log (each logout's step times) kept and summarised in the output
DAEMON_LOG = os.environ.get("BENCH_DAEMON_LOG", "warning")
VENV = os.path.dirname(sys.executable)
PREFIX = "iqn.2026-11.org.iscsikit.bench:t"
sysfs = Sysfs()


def status(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(key + ":"))


def rss_kib(pid: int) -> int:
    return status(pid, "VmRSS")


def rss_by_mapping(pid: int, top: int = 8) -> list[tuple[str, int]]:
    """Where the resident memory is: KiB per mapped file ([heap], [stack], anonymous as such)."""
    sizes, name = {}, "?"
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and len(head) >= 5:           # a mapping's first line
                name = head[5] if len(head) > 5 else "[anonymous]"
            elif head[0] == "Rss:":
                sizes[name] = sizes.get(name, 0) + int(head[1])
    return sorted(sizes.items(), key=lambda kv: -kv[1])[:top]


def wait(pred, timeout=300):
    return lio.until(pred, timeout, interval=0.05) or sys.exit("timed out")


def summary(rounds: list[dict]) -> dict:
    """The first round's details, the median of the rounds' numbers, and every round's."""
    res = dict(rounds[0])
    for key in ("login_all_s", "disks_after_s", "logout_all_s", "daemon_rss_kib"):
        res[key] = statistics.median(r[key] for r in rounds)
    res["rounds"] = [{k: r[k] for k in ("login_all_s", "disks_after_s", "logout_all_s", "daemon_rss_kib")}
                     for r in rounds]
    return res


def logout_steps(path: str) -> dict:
    """The daemon's debug lines "session N: logout: ..." summarised: median seconds per step."""
    steps: dict[str, list[float]] = {}
    pat = re.compile(r"logout: (.*)")
    with open(path) as f:
        for line in f:
            m = pat.search(line)
            if not m:
                continue
            for part in m.group(1).split(","):
                words = part.split()
                if len(words) >= 3 and words[-1] == "s":
                    steps.setdefault(" ".join(words[:-2]), []).append(float(words[-2]))
    out = {k: {"median": round(statistics.median(v), 4), "max": round(max(v), 4), "n": len(v)}
           for k, v in steps.items()}
    # the sender's datagrams (kernel_requests.py) and the CLI runs, whole
    sent, cli = [], []
    with open(path) as f:
        for line in f:
            if m := re.search(r"netlink: (\d+) message\(s\) of (\d+) caller\(s\) answered in ([\d.]+) s, queued ([\d.]+)", line):
                sent.append(tuple(float(x) for x in m.groups()))
            elif m := re.search(r"cli run: mode (\w+), exit \d+, ([\d.]+) s", line):
                cli.append((m.group(1), float(m.group(2))))
    if sent:
        out["netlink datagrams"] = {"n": len(sent), "messages": int(sum(s[0] for s in sent)),
                                    "kernel_s": round(sum(s[2] for s in sent), 3),
                                    "queued_max_s": round(max(s[3] for s in sent), 4)}
    out["cli runs"] = [(mode, round(t, 3)) for mode, t in cli if mode == "node"]
    return out


def one_round(adm, daemon):
    res = {}
    subprocess.run([adm, "-m", "discovery", "-t", "st", "-p", "127.0.0.1"], check=True, capture_output=True)
    t0 = time.monotonic()
    p = subprocess.run([adm, "-m", "node", "-L", "all"], capture_output=True, text=True)
    res["login_all_s"] = time.monotonic() - t0
    res["login_all_rc"] = p.returncode
    res["sessions"] = len(sysfs.session_ids())
    wait(lambda: sum(1 for s in sysfs.sessions() if any(l.block for l in s.luns)) == N)
    res["disks_after_s"] = time.monotonic() - t0
    res["daemon_rss_kib"] = rss_kib(daemon.pid)
    res["rss_by_mapping"] = rss_by_mapping(daemon.pid)
    res["daemon_threads"] = status(daemon.pid, "Threads")
    t0 = time.monotonic()
    p = subprocess.run([adm, "-m", "node", "-U", "all"], capture_output=True, text=True)
    res["logout_all_s"] = time.monotonic() - t0
    res["logout_all_rc"] = p.returncode
    wait(lambda: not sysfs.session_ids())
    subprocess.run([adm, "-m", "node", "-o", "delete"], capture_output=True)
    return res


os.makedirs("/etc/target", exist_ok=True)
os.makedirs("/var/tmp/lio", exist_ok=True)
os.makedirs("/run/lock/iscsi", exist_ok=True)
lio.clear()
for i in range(N):
    lio.target(f"{PREFIX}{i:02d}", f"/var/tmp/lio/t{i:02d}.img", size=4 << 20)
out = {"targets": N}

LOG = "/var/tmp/iscsikitd-bench.log"
open(LOG, "w").close()


def with_iscsid():
    iscsid = subprocess.Popen(["/usr/sbin/iscsid", "-f"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)   # iscsid signals its own process group on exit
    time.sleep(1)
    try:
        return one_round("iscsiadm", iscsid)
    finally:
        iscsid.terminate()
        iscsid.wait(timeout=60)


def with_iscsikitd():
    with open(LOG, "a") as log_file:
        ours = subprocess.Popen([f"{VENV}/iscsikitd", "--log-level", DAEMON_LOG], stdout=subprocess.DEVNULL,
                                stderr=log_file)
        wait(lambda: os.path.exists("/run/iscsikit/iscsikitd.sock"), 120)
        try:
            return one_round(f"{VENV}/iscsiadm", ours)   # the forwarding client
        finally:
            ours.terminate()
            ours.wait(timeout=60)


# the tools alternate, round by round, so a change in the host's load falls on both
rounds = {"open_iscsi": [], "iscsikit": []}
for _ in range(ROUNDS):
    rounds["open_iscsi"].append(with_iscsid())
    rounds["iscsikit"].append(with_iscsikitd())
out.update({tool: summary(r) for tool, r in rounds.items()})
if DAEMON_LOG == "debug":
    out["iscsikit"]["logout_steps"] = logout_steps(LOG)
lio.clear()
print(json.dumps(out))

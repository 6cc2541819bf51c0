"""Run in the guest: login latency and 256 MiB sequential throughput, open-iscsi vs iscsikit, one boot.

Never both daemons at once: both would act on the kernel's events.
"""

import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests", "vm", "probes"))
import lio  # noqa: E402

from iscsikit.kernel.sysfs import Sysfs  # noqa: E402

IQN = "iqn.2026-11.org.iscsikit.bench:disk"
P = "127.0.0.1"
VENV = os.path.dirname(sys.executable)
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
MIB = int(os.environ.get("BENCH_MIB", "256"))
DD_ROUNDS = 3
sysfs = Sysfs()


def wait(pred, timeout=60):
    return lio.until(pred, timeout, interval=0.02) or sys.exit("timed out")


def disk():
    for s in sysfs.sessions():
        for lun in s.luns:
            if lun.block and os.path.exists(f"/dev/{lun.block}"):
                return lun.block
    return None


def dd(args):
    t0 = time.monotonic()
    subprocess.run(["dd", *args, "bs=1M", f"count={MIB}", "status=none"], check=True)
    return MIB / (time.monotonic() - t0)


def run_tool(name, adm, start_daemon):
    daemon = start_daemon()
    res = {"login_s": [], "login_to_disk_s": [], "write_mib_s": [], "read_mib_s": []}
    try:
        subprocess.run([adm, "-m", "discovery", "-t", "st", "-p", P], check=True, capture_output=True)
        for i in range(ROUNDS):
            t0 = time.monotonic()
            subprocess.run([adm, "-m", "node", "-T", IQN, "-p", P, "--login"], check=True, capture_output=True)
            res["login_s"].append(time.monotonic() - t0)
            dev = wait(disk)
            res["login_to_disk_s"].append(time.monotonic() - t0)
            if i < DD_ROUNDS:
                res["write_mib_s"].append(dd(["if=/dev/zero", f"of=/dev/{dev}", "oflag=direct"]))
                res["read_mib_s"].append(dd([f"if=/dev/{dev}", "of=/dev/null", "iflag=direct"]))
            subprocess.run([adm, "-m", "node", "-T", IQN, "-p", P, "--logout"], check=True, capture_output=True)
            wait(lambda: not sysfs.session_ids())
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
    return {k: (statistics.median(v) if v else None) for k, v in res.items()} | {"samples": res}


os.makedirs("/etc/target", exist_ok=True)
os.makedirs("/var/tmp/lio", exist_ok=True)
os.makedirs("/run/lock/iscsi", exist_ok=True)
lio.clear()
# The backing file lives in the guest's tmpfs: fill it first, so neither tool pays for
# allocating its pages (the first writer would otherwise look slower).
with open("/var/tmp/lio/bench.img", "wb") as f:
    for _ in range(MIB + 16):
        f.write(b"\0" * (1 << 20))
lio.target(IQN, "/var/tmp/lio/bench.img", size=(MIB + 16) << 20)
out = {"rounds": ROUNDS, "mib": MIB}


def start_iscsid():
    p = subprocess.Popen(["/usr/sbin/iscsid", "-f"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)   # iscsid signals its own process group on exit
    time.sleep(1)
    return p


def start_iscsikitd():
    p = subprocess.Popen([f"{VENV}/iscsikitd", "--log-level", "warning"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    wait(lambda: os.path.exists("/run/iscsikit/iscsikitd.sock"))
    return p


out["open_iscsi"] = run_tool("open-iscsi", "iscsiadm", start_iscsid)
out["iscsikit"] = run_tool("iscsikit", f"{VENV}/iscsikit-adm", start_iscsikitd)

# the login itself, without a client process start: our API in this process
from iscsikit.initiator.session import Initiator, NodeConfig  # noqa: E402
ini = Initiator()
api = []
for _ in range(ROUNDS):
    t0 = time.monotonic()
    ks = ini.login(NodeConfig(target=IQN, address=P, port=3260, initiator_name=lio.INITIATOR))
    api.append(time.monotonic() - t0)
    wait(disk)
    ini.logout(ks.sid)
    wait(lambda: not sysfs.session_ids())
out["iscsikit_api_login_s"] = statistics.median(api)
lio.clear()
print(json.dumps(out))

"""Run in the guest (soft-RoCE up): login latency and 256 MiB sequential O_DIRECT I/O over iSER,
open-iscsi vs iscsikit, one boot, never both daemons at once; and iscsikit over tcp to the
same portal (iser vs tcp, information only)."""

import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests", "vm", "probes"))
import lio  # noqa: E402
from rtslib import NetworkPortal  # noqa: E402

from iscsikit.kernel.sysfs import Sysfs  # noqa: E402
from iscsikit.lab import soft_roce  # noqa: E402

IQN = "iqn.2026-11.org.iscsikit.bench:iser"
P = soft_roce.TARGET_ADDRESS
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


def run_tool(adm, start_daemon, iface):
    daemon = start_daemon()
    res = {"login_s": [], "login_to_disk_s": [], "write_mib_s": [], "read_mib_s": []}
    try:
        subprocess.run([adm, "-m", "discovery", "-t", "st", "-p", P, "-I", iface], check=True, capture_output=True)
        for i in range(ROUNDS):
            t0 = time.monotonic()
            subprocess.run([adm, "-m", "node", "-T", IQN, "-p", P, "-I", iface, "--login"], check=True,
                           capture_output=True)
            res["login_s"].append(time.monotonic() - t0)
            dev = wait(disk)
            res["login_to_disk_s"].append(time.monotonic() - t0)
            if i < DD_ROUNDS:
                res["write_mib_s"].append(dd(["if=/dev/zero", f"of=/dev/{dev}", "oflag=direct"]))
                res["read_mib_s"].append(dd([f"if=/dev/{dev}", "of=/dev/null", "iflag=direct"]))
            subprocess.run([adm, "-m", "node", "-T", IQN, "-p", P, "-I", iface, "--logout"], check=True,
                           capture_output=True)
            wait(lambda: not sysfs.session_ids() and not os.listdir("/sys/class/iscsi_endpoint"))
        subprocess.run([adm, "-m", "node", "-o", "delete"], capture_output=True)
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
    return {k: (statistics.median(v) if v else None) for k, v in res.items()} | {"samples": res}


def start_iscsid():
    p = subprocess.Popen(["/usr/sbin/iscsid", "-f"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    time.sleep(1)
    return p


def start_iscsikitd():
    p = subprocess.Popen([f"{VENV}/iscsikitd", "--log-level", "warning"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    wait(lambda: os.path.exists("/run/iscsikit/iscsikitd.sock"))
    return p


os.makedirs("/etc/target", exist_ok=True)
os.makedirs("/var/tmp/lio", exist_ok=True)
os.makedirs("/run/lock/iscsi", exist_ok=True)
lio.clear()
with open("/var/tmp/lio/iser.img", "wb") as f:
    for _ in range(MIB + 16):
        f.write(b"\0" * (1 << 20))
tpg = lio.target(IQN, "/var/tmp/lio/iser.img", size=(MIB + 16) << 20)
for np in list(tpg.network_portals):
    np.delete()
NetworkPortal(tpg, "0.0.0.0", 3260).iser = True
out = {"rounds": ROUNDS, "mib": MIB}
out["open_iscsi"] = run_tool("/usr/sbin/iscsiadm", start_iscsid, "iser")
out["iscsikit"] = run_tool(f"{VENV}/iscsiadm", start_iscsikitd, "iser")
out["iscsikit_tcp"] = run_tool(f"{VENV}/iscsiadm", start_iscsikitd, "default")
lio.clear()
print(json.dumps(out))

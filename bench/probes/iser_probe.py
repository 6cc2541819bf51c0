"""Run in the guest (soft-RoCE up): login latency and 256 MiB sequential O_DIRECT I/O over iSER,
open-iscsi vs iscsikit, one boot, never both daemons at once; and iscsikit over tcp to the
same portal (iser vs tcp, information only)."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from login_bench import VENV, filled_backing, lio, run_tool, start_iscsid, start_iscsikitd, sysfs  # noqa: E402,I100
from rtslib import NetworkPortal  # noqa: E402

from iscsikit.lab import soft_roce  # noqa: E402

IQN = "iqn.2026-11.org.iscsikit.bench:iser"
P = soft_roce.TARGET_ADDRESS
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
MIB = int(os.environ.get("BENCH_MIB", "256"))


def gone():
    # an iser logout is done when the endpoint is gone too
    return not sysfs.session_ids() and not os.listdir("/sys/class/iscsi_endpoint")


os.makedirs("/etc/target", exist_ok=True)
os.makedirs("/var/tmp/lio", exist_ok=True)
os.makedirs("/run/lock/iscsi", exist_ok=True)
lio.clear()
size = filled_backing("/var/tmp/lio/iser.img", MIB)
tpg = lio.target(IQN, "/var/tmp/lio/iser.img", size=size)
for np in list(tpg.network_portals):
    np.delete()
NetworkPortal(tpg, "0.0.0.0", 3260).iser = True
out = {"rounds": ROUNDS, "mib": MIB}
for key, adm, start, iface in (("open_iscsi", "/usr/sbin/iscsiadm", start_iscsid, "iser"),
                               ("iscsikit", f"{VENV}/iscsiadm", start_iscsikitd, "iser"),
                               ("iscsikit_tcp", f"{VENV}/iscsiadm", start_iscsikitd, "default")):
    out[key] = run_tool(adm, start, IQN, P, rounds=ROUNDS, mib=MIB, iface=iface, gone=gone)
lio.clear()
print(json.dumps(out))

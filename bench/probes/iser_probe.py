"""Run in the guest (soft-RoCE up): login latency and 256 MiB sequential O_DIRECT I/O over iSER,
open-iscsi vs iscsikit, one boot, never both daemons at once, the tools taking turns; and
iscsikit over tcp to the same portal (iser vs tcp, information only)."""

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
out = {"rounds": ROUNDS, "mib": MIB, "open_iscsi": [], "iscsikit": []}
# the two tools interleaved, one login + one dd each way per turn, the order swapped every
# round (ABBA...): a host whose load drifts during the run weighs on both alike, and each
# round gives a ratio of two runs minutes apart at most
TOOLS = {"open_iscsi": ("/usr/sbin/iscsiadm", start_iscsid), "iscsikit": (f"{VENV}/iscsiadm", start_iscsikitd)}
for r in range(ROUNDS):
    for key in (("open_iscsi", "iscsikit") if r % 2 == 0 else ("iscsikit", "open_iscsi")):
        adm, start = TOOLS[key]
        out[key].append(run_tool(adm, start, IQN, P, rounds=1, mib=MIB, dd_rounds=1, iface="iser", gone=gone))
out["iscsikit_tcp"] = run_tool(f"{VENV}/iscsiadm", start_iscsikitd, IQN, P, rounds=1, mib=MIB, dd_rounds=1,
                               iface="default", gone=gone)
lio.clear()
print(json.dumps(out))

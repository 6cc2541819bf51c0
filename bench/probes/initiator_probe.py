"""Run in the guest: login latency and 256 MiB sequential throughput, open-iscsi vs iscsikit, one boot.

Never both daemons at once: both would act on the kernel's events.
"""

import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from login_bench import VENV, disk, filled_backing, lio, run_tool, start_iscsid, start_iscsikitd, sysfs, wait  # noqa: E402,I100

IQN = "iqn.2026-11.org.iscsikit.bench:disk"
P = "127.0.0.1"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
MIB = int(os.environ.get("BENCH_MIB", "256"))


os.makedirs("/etc/target", exist_ok=True)
os.makedirs("/var/tmp/lio", exist_ok=True)
os.makedirs("/run/lock/iscsi", exist_ok=True)
lio.clear()
size = filled_backing("/var/tmp/lio/bench.img", MIB)
lio.target(IQN, "/var/tmp/lio/bench.img", size=size)
out = {"rounds": ROUNDS, "mib": MIB}

out["open_iscsi"] = run_tool("iscsiadm", start_iscsid, IQN, P, rounds=ROUNDS, mib=MIB)
out["iscsikit"] = run_tool(f"{VENV}/iscsikit-adm", start_iscsikitd, IQN, P, rounds=ROUNDS, mib=MIB)

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

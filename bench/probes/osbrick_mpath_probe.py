"""Run in the guest with iscsikit's venv: os-brick's ISCSIConnector with use_multipath=True over
iscsikit, on multipath_story.py's two-path LIO target (ALUA ao/ano) with multipathd running.

The network, target, iscsikitd and multipathd come from tests/vm/probes/multipath_story.py;
os-brick 7.1.1 runs in its own venv (bench_multipath.py --osbrick makes it, as
bench_osbrick.py does) with our forwarding iscsiadm first on PATH. Reported: what
connect_volume returned, that the data written through it reads back, the map and its paths
while connected, and that the map, both sessions and both disks are gone after
disconnect_volume.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

sys.argv = sys.argv[:1]                       # the story's own argv: its defaults
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "vm" / "probes"))
import multipath_story as ms  # noqa: E402

OSBRICK_PY = os.environ["OSBRICK_PYTHON"]
CONNECTOR = Path(__file__).with_name("osbrick_mpath_connector.py")
out = ms.out
try:
    ms.setup_network()
    ms.setup_target()
    ms.start_udevd()
    ms.start_daemon()
    ms.start_multipathd()
    env = {**ms.ENV, "PATH": f"{ms.BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "MP_TARGET": ms.IQN, "MP_PORTALS": f"{ms.A}:3260,{ms.B}:3260",
           "OSLO_LOCK_PATH": "/tmp/osbrick-locks"}
    os.makedirs(env["OSLO_LOCK_PATH"], exist_ok=True)
    r = subprocess.run([OSBRICK_PY, str(CONNECTOR)], capture_output=True, text=True, env=env, timeout=600)
    out["osbrick_rc"] = r.returncode
    out["osbrick_err"] = r.stderr[-3000:]
    if r.returncode == 0:
        out["osbrick"] = json.loads(r.stdout.strip().splitlines()[-1])
    out["after"] = {"maps": ms.sh(["multipath", "-ll"], check=False).stdout,
                    "sessions": ms.sysfs.session_ids(),
                    "disks": sorted(d for d in os.listdir("/sys/block") if d.startswith("sd"))}
except BaseException:
    import traceback
    out["error"] = traceback.format_exc()[-3000:]
finally:
    ms.teardown()
print(json.dumps(out))

"""Run in the guest with os-brick's own venv: ISCSIConnector connect + 1 MiB write/read + disconnect
against one LIO LUN, through Debian's open-iscsi and through iscsikit, rounds alternating.

The LUN is made beforehand (bench_osbrick.py, with iscsikit's venv: rtslib lives there).
os-brick runs iscsiadm by name, so the tool under test is chosen with PATH: /usr/sbin first for
open-iscsi, iscsikit's venv bin (the forwarding iscsiadm) first for iscsikit. privsep runs in
this process (client mode off): the probe is root already, as nova-compute's privsep daemon is.
"""

import json
import os
import statistics
import subprocess
import sys
import time

ROUNDS = int(os.environ["BENCH_ROUNDS"])
IKBIN = os.environ["ISCSIKIT_BIN"]
T = os.environ["BENCH_TARGET"]
SOCK = "/run/iscsikit/iscsikitd.sock"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# what nova/cinder configure: os-brick's external locks need a directory
os.environ.setdefault("OSLO_LOCK_PATH", "/tmp/osbrick-locks")
os.makedirs(os.environ["OSLO_LOCK_PATH"], exist_ok=True)

from os_brick import privileged  # noqa: E402
from os_brick.initiator import connector  # noqa: E402

privileged.default.set_client_mode(False)
PROPS = {"target_portal": "127.0.0.1:3260", "target_iqn": T, "target_lun": 0, "volume_id": "bench"}
PAYLOAD = os.urandom(1 << 20)


def start(tool):
    if tool == "open_iscsi":
        os.environ["PATH"] = SYSTEM_PATH
        p = subprocess.Popen(["/usr/sbin/iscsid", "-f"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
        time.sleep(1)
        return p
    os.environ["PATH"] = f"{IKBIN}:{SYSTEM_PATH}"
    p = subprocess.Popen([f"{IKBIN}/iscsikitd", "--socket", SOCK], stdout=subprocess.DEVNULL,
                         stderr=open("/tmp/iscsikitd-osbrick.log", "ab"))
    deadline = time.monotonic() + 60
    while not os.path.exists(SOCK) and time.monotonic() < deadline:
        time.sleep(0.05)
    return p


def one_round():
    c = connector.InitiatorConnector.factory("ISCSI", None, use_multipath=False)
    t0 = time.monotonic()
    dev = c.connect_volume(dict(PROPS))
    t1 = time.monotonic()
    fd = os.open(dev["path"], os.O_RDWR | os.O_DIRECT)
    try:
        import mmap
        buf = mmap.mmap(-1, len(PAYLOAD))
        buf.write(PAYLOAD)
        os.pwrite(fd, buf, 0)
        back = mmap.mmap(-1, len(PAYLOAD))
        os.preadv(fd, [back], 0)
        ok = bytes(back) == PAYLOAD
    finally:
        os.close(fd)
    t2 = time.monotonic()
    c.disconnect_volume(dict(PROPS), dev)
    t3 = time.monotonic()
    return {"connect": t1 - t0, "io": t2 - t1, "disconnect": t3 - t2, "data_ok": ok, "path": dev["path"]}


udevd = subprocess.Popen(["/lib/systemd/systemd-udevd"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
out = {"rounds": ROUNDS, "open_iscsi": [], "iscsikit": [], "errors": []}
try:
    for _ in range(ROUNDS):
        for tool in ("open_iscsi", "iscsikit"):
            d = start(tool)
            try:
                out[tool].append(one_round())
            except Exception as e:
                out["errors"].append(f"{tool}: {type(e).__name__}: {e}")
            finally:
                subprocess.run(["iscsiadm", "-m", "node", "-U", "all"], capture_output=True)
                subprocess.run(["iscsiadm", "-m", "node", "-o", "delete"], capture_output=True)
                d.terminate()
                d.wait(30)
finally:
    udevd.terminate()
    udevd.wait(10)
for tool in ("open_iscsi", "iscsikit"):
    rs = out[tool]
    out[f"{tool}_median"] = {k: statistics.median(r[k] for r in rs) for k in ("connect", "io", "disconnect")} if rs else {}
print(json.dumps(out))

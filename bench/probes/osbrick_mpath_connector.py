"""Run with os-brick's venv (bench/probes/osbrick_mpath_probe.py starts it): connect_volume with
use_multipath=True to both portals, 1 MiB O_DIRECT write and read back on what it returns,
`multipath -ll` while connected, disconnect_volume. One JSON line."""

import json
import mmap
import os
import subprocess
import time

from os_brick import privileged
from os_brick.initiator import connector

privileged.default.set_client_mode(False)      # the probe is root already (nova's privsep daemon is)
T = os.environ["MP_TARGET"]
PORTALS = os.environ["MP_PORTALS"].split(",")
PROPS = {"target_portal": PORTALS[0], "target_iqn": T, "target_lun": 0,
         "target_portals": PORTALS, "target_iqns": [T] * len(PORTALS), "target_luns": [0] * len(PORTALS),
         "volume_id": "mpath-bench"}
c = connector.InitiatorConnector.factory("ISCSI", None, use_multipath=True)
t0 = time.monotonic()
dev = c.connect_volume(dict(PROPS))
t1 = time.monotonic()
payload = os.urandom(1 << 20)
buf, back = mmap.mmap(-1, len(payload)), mmap.mmap(-1, len(payload))
buf.write(payload)
fd = os.open(dev["path"], os.O_RDWR | os.O_DIRECT)
try:
    os.pwritev(fd, [buf], 0)
    os.preadv(fd, [back], 0)
finally:
    os.close(fd)
ll = subprocess.run(["multipath", "-ll"], capture_output=True, text=True).stdout
t2 = time.monotonic()
c.disconnect_volume(dict(PROPS), dev)
t3 = time.monotonic()
print(json.dumps({"device": {k: str(v) for k, v in dev.items()}, "data_ok": bytes(back) == payload,
                  "multipath_ll": ll, "connect_s": round(t1 - t0, 2), "disconnect_s": round(t3 - t2, 2)}))

"""Run in the guest: iscsikitd's systemd contract without systemd as PID 1, reported as JSON.

1. sd_notify: iscsikitd started with NOTIFY_SOCKET pointing at our datagram
   socket sends READY=1, and only once its management socket answers.
2. socket activation: systemd-socket-activate holds the socket of
   systemd/iscsikitd.socket (ListenStream) and runs iscsikitd.service's
   ExecStart on the first connection (LISTEN_FDS); that first client call is
   answered by the activated daemon.
One daemon at a time; each is stopped through the management socket.
"""

import json
import os
import shlex
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

from iscsikit.initiator.client import Client, MgmtError

REPO = Path(__file__).resolve().parents[3]
BIN = os.path.dirname(sys.executable)
SCRATCH = Path("/tmp/iscsikit-systemd")
out = {}


def unit_value(unit, key):
    for line in (REPO / "systemd" / unit).read_text().splitlines():
        if line.startswith(key + "="):
            return line.split("=", 1)[1]
    raise KeyError(key)


def wait_exit(p, timeout=30):
    try:
        return p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        return "killed"


subprocess.run(["rm", "-rf", str(SCRATCH)])
SCRATCH.mkdir(parents=True)
exec_start = shlex.split(unit_value("iscsikitd.service", "ExecStart").replace("/usr/bin/", BIN + "/"))

# 1. READY=1 through NOTIFY_SOCKET
notify_path = str(SCRATCH / "notify")
mgmt_path = str(SCRATCH / "mgmt.sock")
ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
ns.bind(notify_path)
# the sender's credentials, as systemd reads them: NotifyAccess=main accepts only the main pid
ns.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
ns.settimeout(90)
log = open(SCRATCH / "notify.log", "wb")
t0 = time.monotonic()
d = subprocess.Popen(exec_start + ["--socket", mgmt_path], stdout=log, stderr=log,
                     env={**os.environ, "NOTIFY_SOCKET": notify_path})
try:
    data, anc, _flags, _addr = ns.recvmsg(4096, socket.CMSG_SPACE(struct.calcsize("3i")))
    msg = data.decode()
    creds = [struct.unpack("3i", c[2][:12]) for c in anc if c[1] == socket.SCM_CREDENTIALS]
    out["notify_seconds"] = round(time.monotonic() - t0, 1)
    out["notify"] = msg
    # READY=1 promises a served socket: the very next call must be answered
    try:
        out["version_right_after_ready"] = Client(mgmt_path, timeout=30).version()
    except MgmtError as e:
        out["version_right_after_ready"] = {"exit_code": e.exit_code, "error": str(e)}
    out["notify_sender_is_main_pid"] = bool(creds) and creds[0][0] == d.pid
    Client(mgmt_path, timeout=30).stop()
finally:
    out["notify_daemon_exit"] = wait_exit(d)
    ns.close()

# 2. socket activation with the socket unit's path and the service unit's command
listen = unit_value("iscsikitd.socket", "ListenStream")
out["listen"] = listen
os.makedirs(os.path.dirname(listen), exist_ok=True)
if os.path.exists(listen):
    os.unlink(listen)
alog = open(SCRATCH / "activate.log", "wb")
act = subprocess.Popen(["systemd-socket-activate", "-l", listen, *exec_start], stdout=alog, stderr=alog)
try:
    end = time.monotonic() + 30
    while not os.path.exists(listen) and time.monotonic() < end:
        time.sleep(0.1)
    time.sleep(0.5)
    # nothing runs the daemon yet: the activator only listens
    out["before_call_cmdline"] = open(f"/proc/{act.pid}/cmdline").read().split("\0")[0]
    t0 = time.monotonic()
    try:
        out["activated_version"] = Client(listen, timeout=120).version()
    except MgmtError as e:
        out["activated_version"] = {"exit_code": e.exit_code, "error": str(e)}
    out["activation_seconds"] = round(time.monotonic() - t0, 1)
    # the activator exec'd the daemon: same pid, now iscsikitd
    out["after_call_cmdline"] = open(f"/proc/{act.pid}/cmdline").read().split("\0")[:2]
    out["second_call"] = Client(listen, timeout=30).sessions()
    Client(listen, timeout=30).stop()
finally:
    out["activated_daemon_exit"] = wait_exit(act)
    out["activate_log"] = (SCRATCH / "activate.log").read_text()[-1500:]
    out["notify_log"] = (SCRATCH / "notify.log").read_text()[-1500:]
    if os.path.exists(listen):
        os.unlink(listen)
print(json.dumps(out))

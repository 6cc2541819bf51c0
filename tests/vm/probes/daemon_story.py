"""Run in the guest: the daemon's promises against LIO, reported as JSON.

login through the mgmt socket; concurrent logins of one node; non-root refused;
daemon SIGKILLed and restarted: the session stays up and is adopted, not relogged;
recovery: the portal disabled for 10 s under a verified write load; logout.
"""

import hashlib
import json
import mmap
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(__file__))
import lio  # noqa: E402

from iscsikit.initiator.client import Client, MgmtError  # noqa: E402
from iscsikit.kernel.sysfs import Sysfs  # noqa: E402

IQN = "iqn.2026-11.org.iscsikit.test:daemon"
IQN_CHAP = "iqn.2026-11.org.iscsikit.test:daemon-chap"
SECRET = "s3cret-never-logged-42"
SOCK = "/run/iscsikit/test.sock"
os.environ["ISCSIKIT_SOCKET"] = SOCK
out = {}
sysfs = Sysfs()


def start_daemon(tag):
    return lio.start_iscsikitd(SOCK, f"/tmp/iscsikitd-{tag}.log", "--log-level", "debug")


def call(op, **args):
    try:
        return {"ok": Client(timeout=120).call(op, args)}
    except MgmtError as e:
        return {"exit_code": e.exit_code, "error": str(e)}


def node():
    return dict(target=IQN, address="127.0.0.1", port=3260, initiator_name=lio.INITIATOR,
                replacement_timeout=60)


def wait_disk(sid, timeout=30):
    return lio.wait_disk(sysfs, sid, timeout)


os.makedirs("/etc/target", exist_ok=True)
os.makedirs("/var/tmp/lio", exist_ok=True)
backing = "/var/tmp/lio/daemon.img"
lio.clear()
tpg = lio.target(IQN, backing)
d = start_daemon("a")
try:
    out["daemon_down_code"] = None
    # concurrency: 8 logins of the same node at once → one session, seven "session exists"
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: call("login", **node()), range(8)))
    out["parallel"] = results
    sids = [r["ok"]["sid"] for r in results if "ok" in r]
    out["sysfs_sessions"] = sysfs.session_ids()
    sid = sids[0]
    disk = wait_disk(sid)
    out["disk"] = disk
    # non-root callers are refused
    # imports first: the interpreter lives under /root, which uid 65534 cannot read
    p = subprocess.run([sys.executable, "-c",
                        "import os, json\nfrom iscsikit.initiator.client import Client, MgmtError\n"
                        "os.setgid(65534); os.setuid(65534)\n"
                        "try:\n print('answered', Client().sessions())\n"
                        "except MgmtError as e:\n print(e.exit_code, e)"],
                       capture_output=True, text=True, env={**os.environ, "ISCSIKIT_SOCKET": SOCK})
    out["nonroot"] = p.stdout.strip() or p.stderr.strip()
    out["socket_mode"] = oct(os.stat(SOCK).st_mode & 0o777)
    # past the file mode, SO_PEERCRED still refuses a non-root peer
    os.chmod(SOCK, 0o666)
    p = subprocess.run(p.args, capture_output=True, text=True, env={**os.environ, "ISCSIKIT_SOCKET": SOCK})
    out["nonroot_open_socket"] = p.stdout.strip() or p.stderr.strip()
    os.chmod(SOCK, 0o600)

    # CHAP through the daemon at debug log level: the secret must not reach the log
    lio.target(IQN_CHAP, "/var/tmp/lio/chap.img", chap=("alice", SECRET))
    r = call("login", **{**node(), "target": IQN_CHAP, "username": "alice", "password": SECRET})
    out["chap_login"] = r
    if "ok" in r:
        out["chap_logout"] = call("logout", sid=r["ok"]["sid"])
    with open("/tmp/iscsikitd-a.log", "rb") as f:
        out["secret_in_log"] = SECRET.encode() in f.read()

    # restart: SIGKILL the daemon during I/O; the session must stay; the new daemon adopts it untouched
    before = open(f"/sys/class/iscsi_connection/connection{sid}:0/local_port").read().strip() \
        if os.path.exists(f"/sys/class/iscsi_connection/connection{sid}:0/local_port") else None
    io_errors = []
    io_stop = threading.Event()

    def io_across_kill():
        fd = os.open(f"/dev/{disk}", os.O_RDWR | os.O_DIRECT)
        buf = mmap.mmap(-1, 65536)
        n = 0
        while not io_stop.is_set():
            try:
                os.pwritev(fd, [buf], (n % 256) * 65536)
                os.preadv(fd, [buf], (n % 256) * 65536)
            except OSError as e:
                io_errors.append(str(e))
            n += 1
        os.close(fd)
        out["io_across_kill_ops"] = n

    io_thread = threading.Thread(target=io_across_kill)
    io_thread.start()
    time.sleep(1)
    d.send_signal(signal.SIGKILL)
    d.wait()
    time.sleep(1)
    out["state_while_down"] = sysfs.session(sid).state
    out["call_while_down"] = call("sessions")
    d = start_daemon("b")
    after = open(f"/sys/class/iscsi_connection/connection{sid}:0/local_port").read().strip() \
        if before is not None else None
    out["same_tcp_connection"] = before == after and before is not None
    out["after_restart"] = call("sessions")
    time.sleep(1)
    io_stop.set()
    io_thread.join()
    out["io_errors_across_kill"] = io_errors

    # recovery: 64 KiB O_DIRECT writes with checksums while the portal is off for 10 s
    stop = threading.Event()
    stats = {"writes": 0, "errors": 0, "verify_bad": 0}
    written = {}

    def load():
        fd = os.open(f"/dev/{disk}", os.O_RDWR | os.O_DIRECT)
        buf = mmap.mmap(-1, 65536)
        i = 0
        while not stop.is_set():
            off = (i % 512) * 65536
            data = os.urandom(65536)
            buf.seek(0)
            buf.write(data)
            try:
                os.pwritev(fd, [buf], off)
                written[off] = hashlib.sha256(data).hexdigest()
                stats["writes"] += 1
            except OSError as e:
                stats["errors"] += 1
                stats["last_error"] = str(e)
            i += 1
        for off, digest in written.items():
            try:
                os.preadv(fd, [buf], off)
            except OSError:
                stats["read_errors"] = stats.get("read_errors", 0) + 1
                continue
            if hashlib.sha256(buf[:]).hexdigest() != digest:
                stats["verify_bad"] += 1
        os.close(fd)

    t = threading.Thread(target=load)
    t.start()
    time.sleep(2)
    tpg.enable = False
    t_off = time.monotonic()
    time.sleep(10)
    tpg.enable = True
    t_on = time.monotonic()
    # wait for the daemon to bring the session back
    state = None
    end = time.monotonic() + 60
    while time.monotonic() < end:
        sess = call("sessions").get("ok", [])
        state = next((x["state"] for x in sess if x["sid"] == sid), None)
        if state == "LOGGED_IN" and sysfs.session(sid).state == "LOGGED_IN":
            break
        time.sleep(0.2)
    resumed = time.monotonic() - t_on
    w0 = stats["writes"]
    time.sleep(3)
    stop.set()
    t.join()
    stats["writes_after_return"] = stats["writes"] - w0
    out["recovery"] = {**stats, "state": state, "resumed_after_portal_back_s": round(resumed, 2),
                       "recoveries": next((x["recoveries"] for x in call("sessions").get("ok", []) if x["sid"] == sid), None)}

    out["logout"] = call("logout", sid=sid)
    out["sessions_after_logout"] = sysfs.session_ids()
    out["logout_again"] = call("logout", sid=sid)
finally:
    with open("/tmp/iscsikitd-b.log", "rb") as f:
        out["log_tail"] = f.read()[-3000:].decode(errors="replace") if os.path.exists("/tmp/iscsikitd-b.log") else ""
    d.terminate()
    d.wait(timeout=30)
    lio.clear()
print(json.dumps(out))

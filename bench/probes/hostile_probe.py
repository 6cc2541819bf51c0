"""Run in the guest: every hostile case (tests/unit/hostile_target.py) against open-iscsi
(iscsid + /usr/sbin/iscsiadm) and then iscsikit (iscsikitd + the forwarding iscsiadm), never
both daemons at once; per case the exit code, the time, whether the daemon still runs and
what was left in sysfs. A command still running after BENCH_KILL seconds is killed."""

import json
import os
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "vm", "probes"))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "unit"))
import lio  # noqa: E402
import hostile_target as ht  # noqa: E402

from iscsikit.kernel.sysfs import Sysfs  # noqa: E402

KILL = float(os.environ.get("BENCH_KILL", "60"))
VENV = os.path.dirname(sys.executable)
IQN = "iqn.2026-11.org.iscsikit.test:hostile"
LOGIN_TIMEOUT = 3
DISCOVERY = [c for c in ht.CASES if c != "chap_bad_ident"]
LOGIN = ["silent", "trickle", "close", "garbage", "huge_segment", "never_final", "nop_during_login",
         "redirect_loop", "redirect_bad_port", "redirect_nonascii_port", "bad_key", "chap_bad_ident"]
sysfs = Sysfs()


class Tool:
    def __init__(self, name, adm, env):
        self.name, self.adm, self.env = name, adm, env

    def run(self, *args, timeout=KILL):
        start = time.monotonic()
        try:
            p = subprocess.run([self.adm, *args], capture_output=True, text=True, env=self.env, timeout=timeout)
            rc, err = p.returncode, p.stderr
        except subprocess.TimeoutExpired as e:
            rc, err = "killed", (e.stderr or b"").decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        return {"rc": rc, "s": round(time.monotonic() - start, 2), "err": err[-600:]}

    def node(self, port, **keys):
        self.run("-m", "node", "-o", "new", "-T", IQN, "-p", f"127.0.0.1:{port}")
        for k, v in keys.items():
            self.run("-m", "node", "-T", IQN, "-p", f"127.0.0.1:{port}", "-o", "update", "-n", k, "-v", str(v))

    def clean(self):
        left = sysfs.session_ids()
        if left:
            self.run("-m", "node", "-u")
            lio.until(lambda: not sysfs.session_ids(), 30)
        self.run("-m", "node", "-o", "delete")
        self.run("-m", "discoverydb", "-t", "st", "-p", "127.0.0.1", "-o", "delete")
        return left


def io_ok(sid):
    return lio.write_read_ok(sysfs, sid)


def up_again(sid):
    return bool(lio.until(lambda: (s := sysfs.session(sid, luns=False)) and s.state == "LOGGED_IN", 60, 0.2)) \
        and io_ok(sid)


def run_all(tool, daemon, tpg, ports):
    res = {"discovery": {}, "login": {}, "broken": {}}
    for case in DISCOVERY:
        with ht.HostileTarget(case) as t:
            r = tool.run("-m", "discovery", "-t", "st", "-p", f"127.0.0.1:{t.port}")
        r.update(daemon_alive=daemon.poll() is None, left=tool.clean())
        res["discovery"][case] = r
    for case in LOGIN:
        with ht.HostileTarget(case) as t:
            keys = {"node.conn[0].timeo.login_timeout": LOGIN_TIMEOUT}
            if case == "chap_bad_ident":
                keys.update({"node.session.auth.authmethod": "CHAP", "node.session.auth.username": "alice",
                             "node.session.auth.password": "never-logged-7"})
            tool.node(t.port, **keys)
            r = tool.run("-m", "node", "-T", IQN, "-p", f"127.0.0.1:{t.port}", "--login")
            r.update(daemon_alive=daemon.poll() is None, left=tool.clean())
        res["login"][case] = r
    # a redirecting target in front of LIO (0x0101, then 0x0102), then the TPG bounced
    red_port, proxy_port = ports
    red = ht.HostileTarget(ht.redirector("127.0.0.1:3260,1"), red_port)
    tool.node(red_port)
    r = tool.run("-m", "node", "-T", IQN, "-p", f"127.0.0.1:{red_port}", "--login")
    sids = sysfs.session_ids()
    if sids:
        tpg.enable = False
        time.sleep(1)
        tpg.enable = True
        r["recovered"] = up_again(sids[0])
    r.update(redirector_connections=red.connections, left=tool.clean())
    red.close()
    res["broken"]["redirect"] = r
    # one corrupted header digest right after the login
    proxy = ht.HostileTarget(ht.digest_corrupter(3260), proxy_port)
    tool.node(proxy_port, **{"node.conn[0].iscsi.HeaderDigest": "CRC32C"})
    r = tool.run("-m", "node", "-T", IQN, "-p", f"127.0.0.1:{proxy_port}", "--login")
    sids = sysfs.session_ids()
    r["recovered"] = bool(sids) and up_again(sids[0])
    r.update(proxy_connections=proxy.connections, left=tool.clean())
    proxy.close()
    res["broken"]["digest"] = r
    # LIO's TPG disabled as soon as the session is logged in (during the scan)
    tool.node(3260)
    box = {}
    th = threading.Thread(target=lambda: box.update(tool.run("-m", "node", "-T", IQN, "-p", "127.0.0.1:3260",
                                                             "--login")))
    th.start()
    lio.until(lambda: any((s := sysfs.session(i, luns=False)) and s.state == "LOGGED_IN"
                          for i in sysfs.session_ids()), 30, 0.001)
    tpg.enable = False
    time.sleep(3)
    tpg.enable = True
    th.join(KILL + 10)
    sids = sysfs.session_ids()
    box["recovered"] = bool(sids) and up_again(sids[0])
    box["left"] = tool.clean()
    res["broken"]["tpg_disabled"] = box
    return res


os.makedirs("/etc/target", exist_ok=True)
os.makedirs("/var/tmp/lio", exist_ok=True)
os.makedirs("/run/lock/iscsi", exist_ok=True)
os.makedirs("/etc/iscsi", exist_ok=True)
with open("/etc/iscsi/initiatorname.iscsi", "w") as f:
    f.write(f"InitiatorName={lio.INITIATOR}\n")
lio.clear()
tpg = lio.target(IQN, "/var/tmp/lio/hostile.img")
out = {"kill_after_s": KILL, "login_timeout": LOGIN_TIMEOUT}

iscsid = subprocess.Popen(["/usr/sbin/iscsid", "-f"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          start_new_session=True)   # iscsid signals its own process group on exit
time.sleep(1)
try:
    out["open_iscsi"] = run_all(Tool("open-iscsi", "/usr/sbin/iscsiadm", dict(os.environ)), iscsid, tpg, (3262, 3263))
    # the first half survives a failure of the second
    print(json.dumps({"partial": out}), file=sys.stderr, flush=True)
finally:
    subprocess.run(["/usr/sbin/iscsiadm", "-m", "node", "-u"], capture_output=True, timeout=120)
    iscsid.terminate()
    iscsid.wait(timeout=60)
lio.until(lambda: not sysfs.session_ids(), 30)

env = {**os.environ, "ISCSIKIT_DB_ROOT": "/tmp/iscsikit-db"}
os.makedirs(env["ISCSIKIT_DB_ROOT"], exist_ok=True)
ours = subprocess.Popen([f"{VENV}/iscsikitd", "--log-level", "info"], stdout=open("/tmp/iscsikitd-bench.log", "wb"),
                        stderr=subprocess.STDOUT)
lio.until(lambda: os.path.exists("/run/iscsikit/iscsikitd.sock"), 120)
try:
    out["iscsikit"] = run_all(Tool("iscsikit", f"{VENV}/iscsiadm", env), ours, tpg, (3264, 3265))
finally:
    ours.terminate()
    ours.wait(timeout=60)
lio.clear()
print(json.dumps(out))

"""Run in the guest: hostile and breaking targets against iscsikitd on the real kernel, as JSON.

- hostile logins (tests/unit/hostile_target.py, on 127.0.0.1): each `iscsiadm --login` ends
  with its exit code within the record's login_timeout, the daemon still answers, sysfs is empty;
- a redirecting target in front of LIO: 0x0101 on the first login, 0x0102 on the reconnect;
- a proxy that corrupts one header digest right after the login (during the scan): recovered;
- LIO's TPG disabled right after the login, during the scan: recovered;
in both of the last two, `--login` answers within login_timeout.
"""

import json
import os
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "unit"))
import lio  # noqa: E402
import hostile_target as ht  # noqa: E402

from iscsikit.initiator.client import Client, MgmtError  # noqa: E402
from iscsikit.kernel.sysfs import Sysfs  # noqa: E402

IQN = "iqn.2026-11.org.iscsikit.test:hostile"
SOCK = "/run/iscsikit/hostile.sock"
DB = "/tmp/hostile-db"
BIN = os.path.dirname(sys.executable)
ENV = {**os.environ, "ISCSIKIT_SOCKET": SOCK, "ISCSIKIT_DB_ROOT": DB}
os.environ["ISCSIKIT_SOCKET"] = SOCK
HOSTILE_LOGIN_TIMEOUT = 3
CASES = tuple(ht.LOGIN_PHASE)     # the cases the host test runs too, with the same answers
sysfs = Sysfs()
out = {"cases": {}}


def adm(*args, timeout=120):
    start = time.monotonic()
    p = subprocess.run([os.path.join(BIN, "iscsiadm"), *args], capture_output=True, text=True, env=ENV,
                       timeout=timeout)
    return {"rc": p.returncode, "out": p.stdout, "err": p.stderr, "seconds": round(time.monotonic() - start, 3)}


def record(port, **keys):
    adm("-m", "node", "-o", "new", "-T", IQN, "-p", f"127.0.0.1:{port}")
    for k, v in keys.items():
        adm("-m", "node", "-T", IQN, "-p", f"127.0.0.1:{port}", "-o", "update", "-n", k, "-v", str(v))


def login(port):
    return adm("-m", "node", "-T", IQN, "-p", f"127.0.0.1:{port}", "--login")


def answers():
    try:
        return Client(timeout=10).version()["protocol"]
    except MgmtError as e:
        return f"{e.exit_code} {e}"


def managed(sid):
    for s in Client(timeout=10).sessions():
        if s["sid"] == sid:
            return s
    return None


def recovered(sid, timeout=60):
    return lio.until(lambda: (m := managed(sid)) and m["recoveries"] >= 1 and m["state"] == "LOGGED_IN"
                     and sysfs.session(sid, luns=False).state == "LOGGED_IN" and m, timeout, 0.2)


def io_ok(sid):
    return lio.write_read_ok(sysfs, sid)


def conn_port(sid):
    try:
        return int(open(f"/sys/class/iscsi_connection/connection{sid}:0/port").read())
    except OSError:
        return None


def logout_all():
    r = adm("-m", "node", "-u")
    return {"rc": r["rc"], "left": sysfs.session_ids()}


os.makedirs(DB, exist_ok=True)
os.makedirs("/etc/target", exist_ok=True)
os.makedirs("/var/tmp/lio", exist_ok=True)
lio.clear()
tpg = lio.target(IQN, "/var/tmp/lio/hostile.img")
log = open("/tmp/iscsikitd-hostile.log", "wb")
d = subprocess.Popen([os.path.join(BIN, "iscsikitd"), "--socket", SOCK, "--log-level", "info"],
                     stdout=log, stderr=log)
lio.until(lambda: answers() == 2, 60)
try:
    # ---- hostile logins through the real kernel ----------------------------------------------
    for case in CASES:
        with ht.HostileTarget(case) as t:
            # one attempt, which is what each case bounds (initial_login_retry_max would try a
            # retryable failure again for 4 x login_timeout; os-brick sets 0 likewise)
            record(t.port, **{"node.conn[0].timeo.login_timeout": HOSTILE_LOGIN_TIMEOUT,
                              "node.session.initial_login_retry_max": "0"})
            # the CLI's own cost right now (a forwarded call that reads the record): the guest
            # is emulated and shared, so a fixed allowance would measure the load, not the bound
            cost = adm("-m", "node", "-T", IQN, "-p", f"127.0.0.1:{t.port}")["seconds"]
            r = login(t.port)
            r["cost"] = cost
            r.update(answers=answers(), sysfs=sysfs.session_ids())
            adm("-m", "node", "-o", "delete", "-T", IQN, "-p", f"127.0.0.1:{t.port}")
        out["cases"][case] = r

    # ---- a redirecting target: 0x0101 first, 0x0102 on the reconnect ----------------------------
    red = ht.HostileTarget(ht.redirector("127.0.0.1:3260,1"), 3262)
    record(3262)
    r = login(3262)
    sids = sysfs.session_ids()
    r.update(sids=sids, conn_port=conn_port(sids[0]) if sids else None,
             persistent_port=sysfs.session(sids[0], luns=False).port if sids else None)
    if sids:
        r["io_before"] = io_ok(sids[0])
        tpg.enable = False          # LIO drops the connection; the reconnect goes to 3262 again
        time.sleep(1)
        tpg.enable = True
        m = recovered(sids[0])
        r.update(recovered=bool(m), state=m and m["state"], conn_port_after=conn_port(sids[0]),
                 io_after=io_ok(sids[0]) if m else False)
    r["redirector_connections"] = red.connections
    r["logout"] = logout_all()
    red.close()
    adm("-m", "node", "-o", "delete", "-T", IQN, "-p", "127.0.0.1:3262")
    out["redirect"] = r

    # ---- one corrupted header digest right after the login (during the scan) -----------------------
    proxy = ht.HostileTarget(ht.digest_corrupter(3260), 3263)
    record(3263, **{"node.conn[0].iscsi.HeaderDigest": "CRC32C"})
    r = login(3263)
    sids = sysfs.session_ids()
    r["sids"] = sids
    if sids:
        m = recovered(sids[0])
        r.update(recovered=bool(m), recoveries=m and m["recoveries"], io_after=io_ok(sids[0]) if m else False,
                 digest=open(f"/sys/class/iscsi_connection/connection{sids[0]}:0/header_digest").read().strip())
    r["proxy_connections"] = proxy.connections
    r["logout"] = logout_all()
    proxy.close()
    adm("-m", "node", "-o", "delete", "-T", IQN, "-p", "127.0.0.1:3263")
    out["digest"] = r

    # ---- LIO's TPG disabled right after the login, while the scan runs ------------------------------
    record(3260)
    result = {}
    t = threading.Thread(target=lambda: result.update(login(3260)))
    t.start()
    hit = lio.until(lambda: any(sysfs.session(s, luns=False) and sysfs.session(s, luns=False).state == "LOGGED_IN"
                                for s in sysfs.session_ids()), 30, 0.001)
    tpg.enable = False
    disabled_at = time.monotonic()
    time.sleep(3)
    tpg.enable = True
    t.join(120)
    sids = sysfs.session_ids()
    result.update(saw_logged_in=bool(hit), sids=sids, tpg_off_s=round(time.monotonic() - disabled_at, 2))
    if sids:
        m = recovered(sids[0])
        result.update(recovered=bool(m), io_after=io_ok(sids[0]) if m else False)
    result["logout"] = logout_all()
    out["tpg_disabled"] = result
    out["answers_at_end"] = answers()
finally:
    d.terminate()
    d.wait(timeout=30)
    log.close()
    with open("/tmp/iscsikitd-hostile.log", "rb") as f:
        out["log"] = f.read()[-12000:].decode(errors="replace")
    lio.clear()
print(json.dumps(out))

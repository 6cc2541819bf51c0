"""Run in the guest: issue 15's proofs of kmod/iscsikit_lio against the real LIO, one report (JSON).

Phases, in one boot and one Python start:
  symbols   each probed function is in /proc/kallsyms as its own [iscsi_target_mod] symbol;
  refuse    a missing symbol (also_probe=) makes insmod fail with one kernel log line;
  fallback  without the module, `sessions --follow --json` says so in one line and polls configfs;
  stories   with it, a follower (`iscsikit-target sessions --follow --json`) sees open-iscsi's and
            iscsikit's logins with their fields, logout, a killed connection, a wrong CHAP secret,
            an initiator not in the ACL, and 32 concurrent logins;
  slow      a reader with a tiny socket buffer that sleeps counts exactly what it lost;
  cycles    100 loads/unloads of the module while sessions come and go, iscsi_target_mod unloaded
            and reloaded under it and loaded after it; then the kernel log is read for oopses
            (and the guest is left with no initiator session).
"""

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
import lio  # noqa: E402

CHECKOUT = Path(__file__).resolve().parents[3]
KO = str(CHECKOUT / "kmod" / "iscsikit_lio.ko")
BIN = os.path.dirname(sys.executable)
SHELL = os.path.join(BIN, "iscsikit-target")
PREFIX = "iqn.2026-11.org.iscsikit.ev"
T_OPEN, T_CHAP = f"{PREFIX}:open", f"{PREFIX}:chap"
INIT_OI, INIT_IK, STRANGER = f"{PREFIX}:oi", f"{PREFIX}:ik", f"{PREFIX}:stranger"
CHAP_USER, CHAP_SECRET, WRONG_SECRET = "evuser", "ev-secret-12345", "wrong-secret-987"
HOOKS = ["iscsi_post_login_handler", "iscsit_thread_get_cpumask", "iscsit_tx_login_rsp",
         "iscsit_close_connection", "iscsit_close_session"]
WORK = "/var/tmp/ikev"
out = {"phases": {}}
_t_phase = [time.monotonic()]


def phase(name):
    now = time.monotonic()
    out["phases"][name] = round(now - _t_phase[0], 1)
    _t_phase[0] = now


def sh(cmd, timeout=120, check=True):
    p = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode:
        raise RuntimeError(f"{cmd}: rc={p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def dmesg_lines():
    return sh("dmesg").stdout.splitlines()


def loaded():
    return any(l.startswith("iscsikit_lio ") for l in open("/proc/modules"))


# ---- symbols ----------------------------------------------------------------------------
t0 = time.monotonic()
syms = {}
for line in open("/proc/kallsyms"):
    parts = line.split()
    if len(parts) >= 4 and parts[3] == "[iscsi_target_mod]" and parts[2] in HOOKS:
        syms[parts[2]] = parts[1]
out["symbols"] = syms

phase("symbols")
# ---- refuse -----------------------------------------------------------------------------
before = len(dmesg_lines())
p = sh(f"insmod {shlex.quote(KO)} also_probe=iscsi_no_such_function", check=False)
new = [l for l in dmesg_lines()[before:] if "iscsikit_lio" in l and "taint" not in l]
out["refuse"] = {"rc": p.returncode, "stderr": p.stderr.strip(), "log": new, "loaded_after": loaded()}

phase("refuse")
# ---- fallback ---------------------------------------------------------------------------
os.makedirs(WORK, exist_ok=True)
os.makedirs("/etc/target", exist_ok=True)
os.makedirs("/etc/iscsi", exist_ok=True)
with open("/etc/iscsi/initiatorname.iscsi", "w") as f:
    f.write(f"InitiatorName={INIT_OI}\n")
sh("ip link set lo up; modprobe tcp_diag", check=False)
lio.clear()
batch = []
for name, t in (("ev_open", T_OPEN), ("ev_chap", T_CHAP)):
    batch += [f"/backstores/fileio create {name} {WORK}/{name}.img 16M write_back=false",
              f"/iscsi create {t}", f"/iscsi/{t}/tpg1/luns create /backstores/fileio/{name}"]
batch += [f"/iscsi/{T_OPEN}/tpg1/acls create {INIT_OI}", f"/iscsi/{T_OPEN}/tpg1/acls create {INIT_IK}",
          f"/iscsi/{T_CHAP}/tpg1/acls create {INIT_IK}",
          f"/iscsi/{T_CHAP}/tpg1 set attribute authentication=1",
          f"/iscsi/{T_CHAP}/tpg1/acls/{INIT_IK} set auth userid={CHAP_USER} password={CHAP_SECRET}"]
p = subprocess.run([SHELL, "--save-file", f"{WORK}/saveconfig.json"], input="\n".join(batch) + "\n",
                   capture_output=True, text=True, timeout=300)
assert p.returncode == 0, p.stderr
phase("targets")

from iscsikit.initiator import login_io  # noqa: E402
from iscsikit.initiator.session import Initiator, NodeConfig, isid_for  # noqa: E402
from iscsikit.kernel.sysfs import Sysfs  # noqa: E402
from iscsikit.proto.chap import ChapCredentials  # noqa: E402
from iscsikit.target import events  # noqa: E402

ISID = 0x400001370000


class Follower:
    """`iscsikit-target sessions --follow --json` with every stdout line timestamped on arrival."""

    def __init__(self):
        self.proc = subprocess.Popen([SHELL, "sessions", "--follow", "--json"], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1)
        self.lines = []
        self.err = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self.err.extend(self.proc.stderr), daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), json.loads(line)))

    def wait(self, pred, timeout=20, start=0):
        def found():
            return [(t, e) for t, e in self.lines[start:] if pred(e)]
        return lio.until(found, timeout, interval=0.01)

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.proc.returncode


def ik_login(target, isid, name=INIT_IK, chap=None, **kw):
    return login_io.login(("127.0.0.1", 3260), target, initiator_name=name, isid=isid, chap=chap, **kw)


fb = Follower()
lio.until(lambda: fb.err, 60, interval=0.05)      # its one line about the fallback
time.sleep(1.5)                                     # its first configfs snapshot is taken
s = ik_login(T_OPEN, ISID + 0x99)
hits = fb.wait(lambda e: e.get("event") == "login" and e.get("initiator") == INIT_IK, 10)
s.logout()
fb.wait(lambda e: e.get("event") == "session_close", 10)
out["fallback"] = {"stderr": [l.rstrip("\n") for l in fb.err], "events": [e for _, e in fb.lines],
                   "login_seen": bool(hits), "rc": fb.stop()}

phase("fallback")
# ---- stories ----------------------------------------------------------------------------
p = sh(f"insmod {shlex.quote(KO)}", check=False)
out["insmod"] = {"rc": p.returncode, "stderr": p.stderr.strip(),
                 "log": [l for l in dmesg_lines()[-5:] if "iscsikit_lio" in l]}
fo = Follower()
# a first event proves the follower has joined: a login to a target that does not exist
marker = None
while not marker and fo.proc.poll() is None:
    try:
        ik_login(f"{PREFIX}:nowhere", ISID + 0x98).close()
    except login_io.LoginError:
        pass
    marker = fo.wait(lambda e: e.get("event") == "login_failed" and e.get("target") == f"{PREFIX}:nowhere", 3)
out["follower_ready"] = bool(marker)
out["follower_stderr"] = fo.err


def new_ports(before):
    now = set(re.findall(r"127\.0\.0\.1:(\d+)\s+127\.0\.0\.1:3260\b",
                         sh("ss -Htn state established '( dport = :3260 )'").stdout))
    return sorted(int(x) for x in now - before)


def ports():
    return set(re.findall(r"127\.0\.0\.1:(\d+)\s+127\.0\.0\.1:3260\b",
                          sh("ss -Htn state established '( dport = :3260 )'").stdout))


def sysfs_of(sid):
    base = f"/sys/class/iscsi_session/session{sid}"
    conn = f"/sys/class/iscsi_connection/connection{sid}:0"
    def rd(p):
        try:
            return open(p).read().strip()
        except OSError:
            return None
    return {"targetname": rd(f"{base}/targetname"), "initiatorname": rd(f"{base}/initiatorname"),
            "tpgt": rd(f"{base}/tpgt"), "isid": rd(f"{base}/isid"), "tsid": rd(f"{base}/tsid"),
            "header_digest": rd(f"{conn}/header_digest"), "data_digest": rd(f"{conn}/data_digest")}


def configfs_session(target, initiator):
    from iscsikit.target import sessions
    for x in sessions.list_sessions():
        if x.target == target and x.initiator == initiator:
            return x.to_dict()
    return None


stories = {}
# open-iscsi: discovery, login (the fields checked), logout
iscsid = None if sh("pgrep -x iscsid", check=False).returncode == 0 else \
    subprocess.Popen(["iscsid", "-f"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True)     # its SIGTERM handler signals its whole group
time.sleep(0.5)
sh("iscsiadm -m discovery -t st -p 127.0.0.1", timeout=60)
mark = len(fo.lines)
before = ports()
sh(f"iscsiadm -m node -T {T_OPEN} -p 127.0.0.1 --login", timeout=60)
t_ret = time.monotonic()
hit = fo.wait(lambda e: e.get("event") == "login" and e.get("initiator") == INIT_OI, 10, mark)
sid_oi = int(lio.until(lambda: [s for s in os.listdir("/sys/class/iscsi_session")], 5)[0].removeprefix("session"))
stories["open_iscsi"] = {"event": hit[0][1] if hit else None, "after_return": hit[0][0] - t_ret if hit else None,
                         "ports": new_ports(before), "sysfs": sysfs_of(sid_oi),
                         "configfs": configfs_session(T_OPEN, INIT_OI)}
sh("iscsiadm -m node -U all; iscsiadm -m node -o delete; "
   "iscsiadm -m discoverydb -t st -p 127.0.0.1 -o delete", timeout=120, check=False)
if iscsid:
    iscsid.terminate()
    iscsid.wait()

# a connection reset under LIO (ss -K sends the RST, as a killed initiator's kernel does): iscsikit's
# own login socket, so no initiator daemon reconnects and reinstates the session before LIO's RX
# thread has seen the reset
mark = len(fo.lines)
victim = ik_login(T_OPEN, ISID + 0x95)
vport = victim.socket.getsockname()[1]
fo.wait(lambda e: e.get("event") == "login" and e.get("initiator_port") == vport, 10, mark)
sh(f"ss -K -tn state established '( sport = :{vport} and dport = :3260 )'", check=False)
fo.wait(lambda e: e.get("event") == "session_close" and e.get("isid") == f"{ISID + 0x95:012x}", 15, mark)
stories["drop"] = {"events": [e for _, e in fo.lines[mark:] if e.get("isid") == f"{ISID + 0x95:012x}"]}
victim.close()

# iscsikit: a kernel session with header digests, then logout
sysfs = Sysfs()
ini = Initiator(sysfs)
mark = len(fo.lines)
before = ports()
ks = ini.login(NodeConfig(target=T_OPEN, address="127.0.0.1", port=3260, initiator_name=INIT_IK,
                          header_digest="CRC32C", scan="manual"))
t_ret = time.monotonic()
hit = fo.wait(lambda e: e.get("event") == "login" and e.get("initiator") == INIT_IK, 10, mark)
stories["iscsikit"] = {"event": hit[0][1] if hit else None, "after_return": hit[0][0] - t_ret if hit else None,
                       "ports": new_ports(before), "sysfs": sysfs_of(ks.sid),
                       "isid": f"{isid_for(ks.sid):012x}", "tsih": getattr(ks, "tsih", None),
                       "configfs": configfs_session(T_OPEN, INIT_IK)}
mark = len(fo.lines)
ini.logout(ks.sid)
fo.wait(lambda e: e.get("event") == "session_close" and e.get("initiator") == INIT_IK, 10, mark)
stories["logout"] = {"events": [e for _, e in fo.lines[mark:] if e.get("initiator") == INIT_IK]}

# a wrong CHAP secret; an initiator not in the ACL
for name, target, who, chap in (("wrong_chap", T_CHAP, INIT_IK, ChapCredentials(CHAP_USER, WRONG_SECRET.encode())),
                                ("not_in_acl", T_OPEN, STRANGER, None)):
    mark = len(fo.lines)
    try:
        ik_login(target, ISID + 0x97, name=who, chap=chap).close()
        err = None
    except login_io.LoginError as e:
        err = int(e.exit_code)
    hit = fo.wait(lambda e: e.get("event") == "login_failed" and e.get("initiator") == who, 10, mark)
    stories[name] = {"exit_code": err, "event": hit[0][1] if hit else None}
# the right secret logs in with auth CHAP
mark = len(fo.lines)
ik_login(T_CHAP, ISID + 0x96, chap=ChapCredentials(CHAP_USER, CHAP_SECRET.encode())).logout()
hit = fo.wait(lambda e: e.get("event") == "login" and e.get("target") == T_CHAP, 10, mark)
stories["chap"] = {"event": hit[0][1] if hit else None}

# 32 concurrent logins, then 32 concurrent logouts
N = 32
mark = len(fo.lines)
barrier = threading.Barrier(N)
held, errors = [None] * N, []


def one(i):
    barrier.wait()
    try:
        held[i] = ik_login(T_OPEN, ISID + 0x100 + i)
    except Exception as e:  # noqa: BLE001
        errors.append(repr(e))


threads = [threading.Thread(target=one, args=(i,)) for i in range(N)]
for t in threads:
    t.start()
for t in threads:
    t.join()
isids = {f"{ISID + 0x100 + i:012x}" for i in range(N)}
fo.wait(lambda e: e.get("event") == "login" and e.get("isid") in isids and
        sum(1 for _, x in fo.lines[mark:] if x.get("event") == "login" and x.get("isid") in isids) >= N, 30, mark)
time.sleep(1.0)     # anything duplicated or late would show now
logins = [e for _, e in fo.lines[mark:] if e.get("event") == "login" and e.get("isid") in isids]
mark2 = len(fo.lines)
threads = [threading.Thread(target=h.logout) for h in held if h]
for t in threads:
    t.start()
for t in threads:
    t.join()
fo.wait(lambda e: sum(1 for _, x in fo.lines[mark2:] if x.get("event") == "session_close"
                      and x.get("isid") in isids) >= N, 30, mark2)
closes = [e for _, e in fo.lines[mark2:] if e.get("event") == "session_close" and e.get("isid") in isids]
stories["concurrent"] = {"errors": errors, "logins": len(logins), "distinct_isids": len({e["isid"] for e in logins}),
                         "distinct_seq": len({e["seq"] for e in logins}),
                         "tsihs": len({e["tsih"] for e in logins}), "closes": len(closes),
                         "close_reasons": sorted({e.get("reason") for e in closes}),
                         "dropped_lines": [e for _, e in fo.lines[mark:] if e.get("event") == "dropped"]}
stories["all_seq"] = [e["seq"] for _, e in fo.lines if "seq" in e]
stories["secrets_seen"] = [s for s in (CHAP_SECRET, WRONG_SECRET)
                           if any(s in json.dumps(e) for _, e in fo.lines)]
stories["follower_rc"] = fo.stop()
stories["follower_stderr"] = fo.err
out["stories"] = stories

phase("stories")
# ---- slow -------------------------------------------------------------------------------
slow = events.Reader(rcvbuf=4096)
start = slow.status.seq
M = 24
hs = []
for i in range(M):
    hs.append(ik_login(T_OPEN, ISID + 0x200 + i))
for h in hs:
    h.logout()
time.sleep(2.0)             # the sleeping reader: its buffer overflows meanwhile
end = events.module_status().seq
got, dropped_msgs = [], []
for ev in slow.events(timeout=2.0):
    (dropped_msgs if isinstance(ev, events.Dropped) else got).append(ev)
slow.close()
out["slow"] = {"produced": end - start, "received": len(got), "dropped": sum(d.count for d in dropped_msgs),
               "dropped_messages": len(dropped_msgs),
               "received_seq_unique": len({e.seq for e in got}) == len(got),
               "lines": [d.line() for d in dropped_msgs][:3]}

phase("slow")
# ---- cycles -----------------------------------------------------------------------------
stop = threading.Event()
churn = {"logins": 0, "errors": 0}


def churner():
    i = 0
    while not stop.is_set():
        try:
            ik_login(T_OPEN, ISID + 0x300 + (i % 16)).logout()
            churn["logins"] += 1
        except Exception:  # noqa: BLE001
            churn["errors"] += 1
        i += 1
        time.sleep(0.1)     # sessions keep coming and going; the cycles keep most of the CPU


log_mark = len(dmesg_lines())
th = threading.Thread(target=churner, daemon=True)
th.start()
t_cyc = time.monotonic()
p = sh(f"ok=0; for i in $(seq 100); do rmmod iscsikit_lio && insmod {shlex.quote(KO)} && ok=$((ok+1)); done; "
       "echo $ok", timeout=600, check=False)
cycles = {"ok": int((p.stdout.split() or ["0"])[-1]), "seconds": round(time.monotonic() - t_cyc, 1),
          "churn_during": dict(churn)}
stop.set()
th.join()
# iscsi_target_mod unloaded and reloaded under the loaded module, twice; then loaded after it
reload = []
for round_ in range(3):
    lio.clear()
    sh("rmdir /sys/kernel/config/target/iscsi 2>/dev/null; true")
    r = sh("rmmod iscsi_target_mod", check=False)
    st_gone = events.module_status() if loaded() else None
    if round_ == 2:
        sh("rmmod iscsikit_lio; true", check=False)
        ins = sh(f"insmod {shlex.quote(KO)}", check=False)
        st_waiting = events.module_status()
    sh("modprobe iscsi_target_mod")
    st_back = events.module_status()
    lio.target(T_OPEN, f"{WORK}/ev_open.img", size=16 << 20)
    tpg_ok = True
    with events.Reader() as rd:
        try:
            ik_login(T_OPEN, ISID + 0x400 + round_, name=lio.INITIATOR).logout()
        except Exception:  # noqa: BLE001
            tpg_ok = False
        seen = [e.kind for e in rd.events(timeout=3.0) if isinstance(e, events.Event)]
    row = {"rmmod_target_rc": r.returncode, "armed_while_gone": st_gone.armed if st_gone else None,
           "armed_back": st_back.armed if st_back else None, "login_ok": tpg_ok, "seen": seen}
    if round_ == 2:
        row.update(insmod_before_target_rc=ins.returncode, armed_waiting=st_waiting.armed if st_waiting else None)
    reload.append(row)
cycles["reload"] = reload
phase("cycles")
lio.clear()
p = sh("rmmod iscsikit_lio", check=False)
cycles["final_rmmod_rc"] = p.returncode
log = dmesg_lines()[log_mark:]
cycles["bad_log"] = [l for l in log if re.search(r"Oops|BUG|WARNING|general protection|Call Trace|refcount_t", l)]
cycles["ik_log"] = [l for l in log if "iscsikit_lio" in l][-6:]
out["cycles"] = cycles
out["sessions_left"] = sorted(os.listdir("/sys/class/iscsi_session"))
out["seconds"] = round(time.monotonic() - t0, 1)
print(json.dumps(out))

"""Run in the guest: dm-multipath over two iscsikit sessions to one LIO LUN, reported as JSON.

Network: the target lives in its own network namespace (LIO opens a portal's listening
socket in the namespace of the process that makes it), reached over two veth pairs from the
documentation ranges: mpa0 192.0.2.2 <-> mpb0 192.0.2.1, mpa1 198.51.100.2 <-> mpb1
198.51.100.1. So traffic really leaves through a netdev and its counters show it.

Target (iscsikit-target, one batch): one fileio LUN exported by tpg1 (192.0.2.1) and tpg2
(198.51.100.1); ALUA groups ao (Active/Optimized) and ano (Active/NonOptimized), tpg1's LUN
in ao, tpg2's in ano; saveconfig.

Initiator (the forwarding iscsiadm against iscsikitd): iface pa bound by net_ifacename to
mpa0, pb by hwaddress to mpa1's MAC, pc to a netdev that does not exist. Then:
 1. binding: bound discovery; each session's writes show on its own netdev's counters, also
    pb's session to tpg1's portal, which routing alone would send out mpa0; the host's sysfs
    iface attributes; pc fails with exit 4 naming iface and netdev; mpa1 down fails only pb's
    session, which recovers when it is up again;
 2. several sessions: -I pb --login beside pa's session to the same portal; nr_sessions=2;
    -m session -r SID --op new; the logout of one leaves the others;
 3. multipathd (group_by_prio, ALUA prio, failback immediate): one map, two path groups, the
    optimized one active; >= 95% of the I/O on it; sg_rtpg; WWID and by-path links;
 4. ROUNDS cuts of the optimized path (tpg1 disabled CUT seconds) under a checksummed O_DIRECT
    writer on the map, replacement_timeout 5: errors, verify errors, failover and failback s.

argv: [ROUNDS [CUT [STACK]]] (default 2 10 iscsikit; bench/bench_multipath.py passes more).
STACK open-iscsi runs Debian's iscsid and iscsiadm instead of ours for the two sessions (same
ifaces, same timeouts, same multipath.conf) and skips parts 1 and 2: the reference for the
failover and failback seconds.
"""

import hashlib
import json
import mmap
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import lio  # noqa: E402

from iscsikit.initiator.client import Client, MgmtError  # noqa: E402
from iscsikit.kernel.sysfs import Sysfs  # noqa: E402

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 2
CUT = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
STACK = sys.argv[3] if len(sys.argv) > 3 else "iscsikit"
# MP_TIMELINE=1 (bench/bench_multipath.py --profile): each round also gets path_timeline's steps
TIMELINE = bool(os.environ.get("MP_TIMELINE"))
IQN = "iqn.2026-11.org.iscsikit.test:mpath"
A, B = "192.0.2.1", "198.51.100.1"
BIN = os.path.dirname(sys.executable)
ADM = os.path.join(BIN, "iscsiadm")           # the forwarding client
SOCK = "/run/iscsikit/mp.sock"
DB = "/tmp/mp-db"
BACKING = "/tmp/mp.img"
TPG1 = f"/sys/kernel/config/target/iscsi/{IQN}/tpgt_1/enable"
ENV = {**os.environ, "ISCSIKIT_SOCKET": SOCK, "ISCSIKIT_DB_ROOT": DB}
os.environ.update(ISCSIKIT_SOCKET=SOCK, ISCSIKIT_DB_ROOT=DB)
out: dict = {"rounds_asked": ROUNDS, "cut_s": CUT, "stack": STACK}
sysfs = Sysfs()
procs: dict[str, subprocess.Popen] = {}


def sh(cmd, check=True, timeout=120, env=None, stdin=None):
    r = subprocess.run(cmd, shell=isinstance(cmd, str), capture_output=True, text=True, timeout=timeout,
                       env=env or ENV, input=stdin)
    if check and r.returncode != 0:
        raise SystemExit(f"{cmd!r} failed ({r.returncode}): {r.stdout[-2000:]} {r.stderr[-2000:]}")
    return r


def adm(*args):
    r = sh([ADM, *args], check=False)
    return {"rc": r.returncode, "out": r.stdout, "err": r.stderr}


def net(name, what):
    with open(f"/sys/class/net/{name}/{what}") as f:
        return f.read().strip()


def tx(name):
    return int(net(name, "statistics/tx_bytes"))


def sessions_to(address, iface):
    return sorted(s.sid for s in sysfs.sessions(luns=False) if s.address == address and s.iface_name == iface)


def disk_of(sid):
    return lio.wait_disk(sysfs, sid, 30)


def write_direct(dev, total=4 << 20, block=256 << 10, seed=7):
    rng = random.Random(seed)
    buf = mmap.mmap(-1, block)
    buf.write(rng.randbytes(block))
    fd = os.open(f"/dev/{dev}" if not dev.startswith("/") else dev, os.O_WRONLY | os.O_DIRECT)
    try:
        for i in range(total // block):
            os.pwritev(fd, [buf], i * block)
    finally:
        os.close(fd)


def write_sectors(dev):
    with open(f"/sys/block/{dev}/stat") as f:
        return int(f.read().split()[6])


def host_attr(sid, name):
    s = sysfs.session(sid, luns=False)
    return sysfs.attr("iscsi_host", f"host{s.host_no}", name)


def setup_network():
    sh("ip link set lo up")
    sh("ip netns add mptgt")
    sh("ip -n mptgt link set lo up")
    for i, (ini, tgt, net_) in enumerate((("192.0.2.2", A, 24), ("198.51.100.2", B, 24))):
        sh(f"ip link add mpa{i} type veth peer name mpb{i} netns mptgt")
        sh(f"ip addr add {ini}/{net_} dev mpa{i} && ip link set mpa{i} up")
        sh(f"ip -n mptgt addr add {tgt}/{net_} dev mpb{i} && ip -n mptgt link set mpb{i} up")
    # pb's session to A leaves through mpa1 (SO_BINDTODEVICE, on-link): the target's side
    # answers ARP for A on mpb1 too, and its replies to 198.51.100.2 go back through mpb1


def setup_target():
    with open(BACKING, "wb") as f:
        f.truncate(64 << 20)
    demo = "authentication=0 generate_node_acls=1 demo_mode_write_protect=0 cache_dynamic_acls=1"
    batch = "\n".join([
        f"/backstores/fileio create mp {BACKING} 64M write_back=false",
        f"/iscsi create {IQN}",
        f"/iscsi/{IQN}/tpg1/portals delete 0.0.0.0 3260",
        f"/iscsi/{IQN}/tpg1/portals create {A} 3260",
        f"/iscsi/{IQN} create 2",
        f"/iscsi/{IQN}/tpg2/portals create {B} 3260",
        f"/iscsi/{IQN}/tpg1/luns create /backstores/fileio/mp",
        f"/iscsi/{IQN}/tpg2/luns create /backstores/fileio/mp",
        f"/iscsi/{IQN}/tpg1 set attribute {demo}",
        f"/iscsi/{IQN}/tpg2 set attribute {demo}",
        f"/iscsi/{IQN}/tpg2 enable",
        "/backstores/fileio/mp/alua create ao 10",
        "/backstores/fileio/mp/alua create ano 20",
        "/backstores/fileio/mp/alua/ao set alua alua_access_type=1 alua_access_state=0 preferred=1",
        "/backstores/fileio/mp/alua/ano set alua alua_access_type=1 alua_access_state=1",
        f"/iscsi/{IQN}/tpg1/luns/lun0 set alua alua_tg_pt_gp_name=ao",
        f"/iscsi/{IQN}/tpg2/luns/lun0 set alua alua_tg_pt_gp_name=ano",
        "saveconfig /tmp/mp-save.json",
    ]) + "\n"
    # the portals' sockets are made in the target's namespace: only the network one is entered
    # (ip netns exec would mount a new /sys and hide configfs)
    r = sh(["nsenter", "--net=/run/netns/mptgt", os.path.join(BIN, "iscsikit-target")], stdin=batch,
           check=False, timeout=300)
    out["target_setup"] = {"rc": r.returncode, "err": r.stderr[-1500:]}
    if r.returncode:
        raise SystemExit(f"target setup failed: {r.stdout[-1500:]} {r.stderr[-1500:]}")
    with open("/tmp/mp-save.json") as f:
        saved = json.load(f)
    so = next(s for s in saved["storage_objects"] if s["name"] == "mp")
    t = next(t for t in saved["targets"] if t["wwn"] == IQN)
    out["saved_alua"] = {g["name"]: [g["tg_pt_gp_id"], g["alua_access_state"], g["preferred"]]
                         for g in so["alua_tpgs"]}
    out["saved_lun_groups"] = {tp["tag"]: [l["alua_tg_pt_gp_name"] for l in tp["luns"]] for tp in t["tpgs"]}


def start_daemon(wait=True):
    """iscsikitd on SOCK; `wait=False` starts it only (its start under TCG is ~20 s: the
    network and target are made meanwhile), wait_daemon() waits for it."""
    if "iscsikitd" not in procs:
        log = open("/tmp/mp-iscsikitd.log", "wb")
        procs["iscsikitd"] = subprocess.Popen([os.path.join(BIN, "iscsikitd"), "--socket", SOCK,
                                               "--log-level", "debug"], stdout=log, stderr=log, env=ENV)
    if wait:
        wait_daemon()


def wait_daemon():
    if not lio.until(lambda: _reachable(), 90):
        raise SystemExit("iscsikitd did not answer within 90 s")


def _reachable():
    try:
        Client(SOCK, timeout=5).version()
        return True
    except MgmtError:
        return False


def start_udevd():
    procs["udevd"] = subprocess.Popen(["/lib/systemd/systemd-udevd"], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
    lio.until(lambda: subprocess.run(["udevadm", "control", "--ping"], capture_output=True).returncode == 0, 30)


def two_bound_paths(run, *extra_ifaces):
    """What both stacks get alike: ifaces pa (mpa0 by name) and pb (mpa1 by MAC), discovery
    through each, the multipath timeouts (replacement_timeout 5, NOP-Out every 2 s, 2 s to
    answer) on every record, and the logins pa -> A and pb -> B. `run(*argv)`: its iscsiadm."""
    for name, key, value in (("pa", "iface.net_ifacename", "mpa0"), ("pb", "iface.hwaddress", net("mpa1", "address")),
                             *extra_ifaces):
        run("-m", "iface", "-I", name, "-o", "new")
        run("-m", "iface", "-I", name, "-o", "update", "-n", key, "-v", value)
    out["discovery_a"] = run("-m", "discovery", "-t", "st", "-p", A, "-I", "pa")
    out["discovery_b"] = run("-m", "discovery", "-t", "st", "-p", B, "-I", "pb")
    for key, value in (("node.session.timeo.replacement_timeout", "5"),
                       ("node.conn[0].timeo.noop_out_interval", "2"), ("node.conn[0].timeo.noop_out_timeout", "2")):
        run("-m", "node", "-o", "update", "-n", key, "-v", value)
    out["login_a"] = run("-m", "node", "-T", IQN, "-p", f"{A}:3260", "-I", "pa", "--login")
    out["login_b"] = run("-m", "node", "-T", IQN, "-p", f"{B}:3260", "-I", "pb", "--login")


def binding_and_sessions():
    mac1 = net("mpa1", "address")
    two_bound_paths(adm, ("pc", "iface.net_ifacename", "nosuch0"))
    out["discovery_c"] = adm("-m", "discovery", "-t", "st", "-p", A, "-I", "pc")
    # proof 5: a second iface to the same target and portal is a second session (once exit 15)
    out["login_b_to_a"] = adm("-m", "node", "-T", IQN, "-p", f"{A}:3260", "-I", "pb", "--login")
    adm("-m", "node", "-T", IQN, "-p", f"{A}:3260", "-I", "pc", "-o", "new")
    out["login_c"] = adm("-m", "node", "-T", IQN, "-p", f"{A}:3260", "-I", "pc", "--login")
    [s1], [s2], [s3] = sessions_to(A, "pa"), sessions_to(B, "pb"), sessions_to(A, "pb")
    out["sids"] = {"a": s1, "b": s2, "b_to_a": s3}
    out["host_attrs"] = {k: {a: host_attr(sid, a) for a in ("netdev", "hwaddress", "ipaddress")}
                         for k, sid in (("a", s1), ("b", s2))}
    out["mac1"] = mac1
    traffic = {}
    for key, sid in (("a", s1), ("b", s2), ("b_to_a", s3)):
        dev = disk_of(sid)
        before = (tx("mpa0"), tx("mpa1"))
        write_direct(dev)
        traffic[key] = [tx("mpa0") - before[0], tx("mpa1") - before[1]]
    out["traffic"] = traffic
    out["session_P1_b"] = adm("-m", "session", "-r", str(s2), "-P", "1")["out"]

    # nr_sessions=2 on pa's record: one more session; a second --login finds both present
    adm("-m", "node", "-T", IQN, "-p", f"{A}:3260", "-I", "pa", "-o", "update",
        "-n", "node.session.nr_sessions", "-v", "2")
    out["login_nr2"] = adm("-m", "node", "-T", IQN, "-p", f"{A}:3260", "-I", "pa", "--login")
    out["pa_sessions_nr2"] = sessions_to(A, "pa")
    out["login_nr2_again"] = adm("-m", "node", "-T", IQN, "-p", f"{A}:3260", "-I", "pa", "--login")
    extra = [s for s in sessions_to(A, "pa") if s != s1]
    for sid in extra:
        adm("-m", "session", "-r", str(sid), "-u")
    out["pa_after_logout_of_extra"] = sessions_to(A, "pa")
    out["s1_state_after"] = sysfs.session(s1, luns=False).state
    out["op_new"] = adm("-m", "session", "-r", str(s1), "--op", "new")
    out["pa_after_op_new"] = sessions_to(A, "pa")
    for sid in [s for s in sessions_to(A, "pa") if s != s1] + [s3]:
        adm("-m", "session", "-r", str(sid), "-u")
    adm("-m", "node", "-T", IQN, "-p", f"{A}:3260", "-I", "pa", "-o", "update",
        "-n", "node.session.nr_sessions", "-v", "1")

    # mpa1 down: only pb's session fails; its reconnects name the down netdev; up: it returns
    sh("ip link set mpa1 down")
    failed = lio.until(lambda: sysfs.session(s2, luns=False).state == "FAILED", 30)
    out["down"] = {"b_failed": bool(failed), "a_state": sysfs.session(s1, luns=False).state}
    lio.until(lambda: "iface pb: netdev mpa1 is down" in open("/tmp/mp-iscsikitd.log").read(), 20, 0.3)
    out["down"]["P1"] = adm("-m", "session", "-r", str(s2), "-P", "1")["out"]
    with open("/tmp/mp-iscsikitd.log") as f:
        out["down"]["netdev_named"] = "iface pb: netdev mpa1 is down" in f.read()
    sh("ip link set mpa1 up")
    back = lio.until(lambda: sysfs.session(s2, luns=False).state == "LOGGED_IN", 40)
    out["down"]["b_back"] = bool(back)
    return s1, s2


def open_iscsi_sessions():
    """The reference: the same two bound sessions made by Debian's open-iscsi 2.1.8."""
    ref = "/usr/sbin/iscsiadm"
    log = open("/tmp/mp-iscsid.log", "wb")
    # its own session: iscsid's shutdown signals its whole process group, this probe included
    procs["iscsid"] = subprocess.Popen(["/usr/sbin/iscsid", "-f"], stdout=log, stderr=log, start_new_session=True)
    time.sleep(1)

    def oadm(*args):
        r = sh([ref, *args], check=False, env={k: v for k, v in os.environ.items() if not k.startswith("ISCSIKIT")})
        return {"rc": r.returncode, "out": r.stdout, "err": r.stderr}
    two_bound_paths(oadm)
    [s1], [s2] = sessions_to(A, "pa"), sessions_to(B, "pb")
    return s1, s2


MPCONF = """defaults {
    find_multipaths yes
    user_friendly_names no
    polling_interval 1
}
devices {
    device {
        vendor "LIO-ORG"
        product ".*"
        path_grouping_policy group_by_prio
        prio alua
        hardware_handler "1 alua"
        path_checker tur
        failback immediate
        no_path_retry 30
    }
}
"""


def start_multipathd():
    sh("modprobe -a dm_multipath scsi_dh_alua")
    with open("/etc/multipath.conf", "w") as f:
        f.write(MPCONF)
    os.makedirs("/etc/multipath", exist_ok=True)
    log = open("/tmp/mp-multipathd.log", "wb")
    procs["multipathd"] = subprocess.Popen(["multipathd", "-d", "-s"], stdout=log, stderr=log)
    lio.until(lambda: sh(["multipathd", "show", "status"], check=False).returncode == 0, 30, 0.3)


def multipath(s1, s2):
    d1, d2 = disk_of(s1), disk_of(s2)
    out["disks"] = [d1, d2]
    sh("udevadm settle -t 30", check=False)
    out["wwids"] = [sh(["/lib/udev/scsi_id", "-g", "-u", "-d", f"/dev/{d}"], check=False).stdout.strip()
                    for d in (d1, d2)]
    out["by_path"] = {a: os.path.realpath(f"/dev/disk/by-path/ip-{a}:3260-iscsi-{IQN}-lun-0")
                      for a in (A, B)}
    out["rtpg"] = sh(["sg_rtpg", "-d", f"/dev/{d1}"], check=False).stdout
    # the NOP-Out timers the kernel got for the optimized path (iscsid and we pass the record's
    # noop_out_timeout / noop_out_interval as PING_TMO / RECV_TMO)
    out["conn_timers"] = {k: sysfs.attr("iscsi_connection", f"connection{s1}:0", k) for k in ("ping_tmo", "recv_tmo")}
    out["recovery_tmo"] = sysfs.attr("iscsi_session", f"session{s1}", "recovery_tmo")
    start_multipathd()
    wwid = out["wwids"][0]
    if not lio.until(lambda: os.path.exists(f"/dev/mapper/{wwid}"), 60):
        out["multipath_v3"] = sh(["multipath", "-v3"], check=False).stdout[-4000:]
        raise SystemExit(f"no map /dev/mapper/{wwid}")
    lio.until(lambda: sh(["multipath", "-ll", wwid], check=False).stdout.count("policy=") == 2, 20, 0.3)
    ll = sh(["multipath", "-ll", wwid], check=False).stdout
    out["multipath_ll"] = ll
    groups = re.findall(r"policy='[^']*' prio=(\d+) status=(\w+)\n((?:.*\n?)*?)(?=.*policy=|\Z)", ll)
    out["groups"] = [[int(p), st, re.findall(r"\b(sd[a-z]+)\b", body)] for p, st, body in groups]
    # I/O share while both paths are up
    before = (write_sectors(d1), write_sectors(d2))
    write_direct(f"/dev/mapper/{wwid}", total=16 << 20)
    w1, w2 = write_sectors(d1) - before[0], write_sectors(d2) - before[1]
    out["io_share_optimized"] = round(w1 / max(1, w1 + w2), 4)
    return wwid, d1


def path_state(dev):
    r = sh(["multipathd", "show", "paths", "format", "%d %t"], check=False)
    for line in r.stdout.splitlines():
        f = line.split()
        if f and f[0] == dev:
            return f[1]
    return None


def cut_rounds(wwid, d1, s1):
    mapdev = f"/dev/mapper/{wwid}"
    timeline = None
    if TIMELINE:
        import path_timeline
        timeline = path_timeline.Timeline("mpa0", s1, d1, wwid).start()
    stop = threading.Event()
    stats = {"writes": 0, "errors": 0, "verify_errors": 0, "max_stall_s": 0.0}
    expect = {}
    block = 64 << 10

    def writer():
        rng = random.Random(3)
        buf = mmap.mmap(-1, block)
        fd = os.open(mapdev, os.O_RDWR | os.O_DIRECT)
        try:
            while not stop.is_set():
                off = rng.randrange((32 << 20) // block) * block
                data = rng.randbytes(block)
                buf.seek(0)
                buf.write(data)
                t = time.monotonic()
                try:
                    os.pwritev(fd, [buf], off)
                    os.preadv(fd, [buf], off)
                except OSError:
                    stats["errors"] += 1
                    continue
                stats["max_stall_s"] = max(stats["max_stall_s"], time.monotonic() - t)
                digest = hashlib.sha256(data).digest()
                if hashlib.sha256(buf[:]).digest() != digest:
                    stats["verify_errors"] += 1
                expect[off] = digest
                stats["writes"] += 1
        finally:
            os.close(fd)

    th = threading.Thread(target=writer, daemon=True)
    th.start()
    rounds = []
    for _ in range(ROUNDS):
        time.sleep(1)
        t0 = time.monotonic()
        with open(TPG1, "w") as f:
            f.write("0")
        failed = lio.until(lambda: path_state(d1) == "failed", 60, 0.2)
        failover = time.monotonic() - t0
        time.sleep(max(0.0, t0 + CUT - time.monotonic()))
        with open(TPG1, "w") as f:
            f.write("1")
        t1 = time.monotonic()
        s0 = write_sectors(d1)
        back = lio.until(lambda: path_state(d1) == "active" and write_sectors(d1) > s0, 120, 0.2)
        t2 = time.monotonic()
        rounds.append({"failover_s": round(failover, 2), "failed_seen": bool(failed),
                       "failback_s": round(t2 - t1, 2), "back": bool(back)})
        if timeline is not None:
            time.sleep(0.3)
            rounds[-1]["restore_at"] = round(t1 - t0, 3)
            rounds[-1]["timeline"] = timeline.window(t0, t2 + 0.3)
    stop.set()
    if timeline is not None:
        timeline.close()
    th.join(60)
    bad = 0
    fd = os.open(mapdev, os.O_RDONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, block)
    try:
        for off, digest in expect.items():
            os.preadv(fd, [buf], off)
            if hashlib.sha256(buf[:]).digest() != digest:
                bad += 1
    finally:
        os.close(fd)
    stats["final_verify_errors"] = bad
    stats["blocks"] = len(expect)
    out["rounds"] = rounds
    out["writer"] = stats


T0 = time.monotonic()


def phase(name):
    out.setdefault("phases_s", {})[name] = round(time.monotonic() - T0, 1)


def stop(name):
    p = procs.pop(name, None)
    if p is not None:
        p.terminate()
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()


def teardown():
    """The map first (multipathd would hold the paths), then the sessions, then the daemons."""
    for name, key in (("/tmp/mp-iscsikitd.log", "log_tail"), ("/tmp/mp-multipathd.log", "multipathd_log")):
        try:
            with open(name, "rb") as f:
                out[key] = f.read()[-3000:].decode(errors="replace")
        except OSError:
            pass
    stop("multipathd")
    if shutil.which("multipath"):
        sh("multipath -F", check=False)
    if "iscsid" in procs:
        sh(["/usr/sbin/iscsiadm", "-m", "node", "-U", "all"], check=False)
        sh(["/usr/sbin/iscsiadm", "-m", "node", "-o", "delete"], check=False)
        for name in ("pa", "pb"):
            sh(["/usr/sbin/iscsiadm", "-m", "iface", "-I", name, "-o", "delete"], check=False)
        stop("iscsid")
    for s in sysfs.sessions(luns=False):
        adm("-m", "session", "-r", str(s.sid), "-u")
    stop("iscsikitd")
    stop("udevd")
    sh([os.path.join(BIN, "iscsikit-target"), "clearconfig", "confirm=true"], check=False)
    sh("ip netns del mptgt; ip link del mpa0; ip link del mpa1", check=False)


def main():
    try:
        if STACK != "open-iscsi":
            start_daemon(wait=False)
        setup_network()
        setup_target()
        phase("target")
        start_udevd()
        if STACK == "open-iscsi":
            s1, s2 = open_iscsi_sessions()
        else:
            wait_daemon()
            phase("daemon")
            s1, s2 = binding_and_sessions()
        phase("sessions")
        wwid, d1 = multipath(s1, s2)
        phase("multipath")
        cut_rounds(wwid, d1, s1)
        phase("rounds")
        out["ll_after"] = sh(["multipath", "-ll", wwid], check=False).stdout
    except BaseException:        # the report still goes out: the tests name what is missing
        import traceback
        out["error"] = traceback.format_exc()[-3000:]
    finally:
        teardown()
    print(json.dumps(out))


if __name__ == "__main__":
    main()

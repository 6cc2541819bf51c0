"""Issue 16's proofs, in one guest process: iSER through soft-RoCE end to end.

The guest has soft-RoCE up (lab/soft_roce.py: rxe on a guest-only veth pair,
the target side at 192.0.2.2). The target is built with iscsikit-target (iser
enabled on its portal through the shell, saved and restored); iscsikitd and
iscsikit-adm discover over TCP and log in over iser; then Debian's open-iscsi
does the same (never both daemons at once). The last stdout line is the JSON
report the test checks.
"""

import json
import os
import random
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import lio  # noqa: E402

from iscsikit.initiator.client import Client, MgmtError  # noqa: E402
from iscsikit.kernel.sysfs import Sysfs  # noqa: E402
from iscsikit.lab import soft_roce  # noqa: E402

BIN = os.path.dirname(sys.executable)
DEBIAN_ADM = "/usr/sbin/iscsiadm"      # open-iscsi 2.1.8, the reference
IQN = "iqn.2026-11.org.iscsikit.test:iser"
IQN_TCP_ONLY = "iqn.2026-11.org.iscsikit.test:tcponly"
ADDR = soft_roce.TARGET_ADDRESS
USER, SECRET = "iseruser", "iser-secret-1234"
SOCK = "/run/iscsikit/iser.sock"
DB = "/tmp/iser-db"
BACKING = "/tmp/iser-lun.img"
SAVE = "/tmp/iser-saveconfig.json"
CHAP_TRIES = 3
ENV = {**os.environ, "ISCSIKIT_SOCKET": SOCK, "ISCSIKIT_DB_ROOT": DB, "NO_COLOR": "1"}
os.environ.update(ISCSIKIT_SOCKET=SOCK, ISCSIKIT_DB_ROOT=DB)
DAEMON_LOG = "/tmp/iscsikitd-iser.log"
ADOPTING_LOG = "/tmp/iscsikitd-iser-adopting.log"     # the daemon restarted under a logged-in session
# the wrong-CHAP logins' record: one retry fits the window (2 x 5 s; a lost try lasts its
# login_timeout, then DefaultTime2Wait 2 s), so a login makes 1 or 2 tries, never more
CHAP_RECORD = (("node.conn[0].timeo.login_timeout", "5"), ("node.session.initial_login_retry_max", "2"))
DEFAULT_RECORD = (("node.conn[0].timeo.login_timeout", "15"), ("node.session.initial_login_retry_max", "4"))
# the redirect: tgtd's iSER portal (RDMA port 3260, all addresses) sends the login to LIO's
# iSER portal moved to 3264 at the target's address (tgtd 1.0.85 does not redirect an
# initiator to its own address: usr/iscsi/target.c target_redirected compares the
# redirect address with the connection's peer, which is 192.0.2.1 over the wire)
REDIRECT_TO = (soft_roce.TARGET_ADDRESS, 3264)
TGTD_PORT = "17"
sysfs = Sysfs()
out = {}


def run(argv, timeout=120, env=ENV):
    t0 = time.monotonic()
    try:
        p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired as e:     # reported, not a crash of the whole story
        return {"rc": None, "out": str(e.stdout or ""), "err": f"timed out after {timeout} s",
                "s": round(time.monotonic() - t0, 3)}
    return {"rc": p.returncode, "out": p.stdout, "err": p.stderr, "s": round(time.monotonic() - t0, 3)}


def tgt(*lines):
    """iscsikit-target with `lines` piped on stdin: one process for many commands (TCG)."""
    t0 = time.monotonic()
    p = subprocess.run([os.path.join(BIN, "iscsikit-target"), "--save-file", SAVE], input="\n".join(lines) + "\n",
                       capture_output=True, text=True, env=ENV, timeout=300)
    if p.returncode != 0:
        raise SystemExit(f"iscsikit-target: {p.stderr}{p.stdout}")
    return {"out": p.stdout, "s": round(time.monotonic() - t0, 3)}


def adm(*args, timeout=120):
    # the forwarding iscsiadm (C): the CLI runs in the warm daemon
    return run([os.path.join(BIN, "iscsiadm"), *args], timeout=timeout)


def leftovers():
    """What the kernel still has: sessions, connections, iSCSI hosts, endpoints."""
    def ls(kind):
        try:
            return sorted(os.listdir(f"/sys/class/{kind}"))
        except OSError:
            return []
    return {k: ls(k) for k in ("iscsi_session", "iscsi_connection", "iscsi_host", "iscsi_endpoint")}


def iser_flag(port):
    return open(f"/sys/kernel/config/target/iscsi/{IQN}/tpgt_1/np/0.0.0.0:{port}/iser").read().strip()


def build_target():
    with open(BACKING, "wb") as f:
        f.truncate(64 << 20)
    tpg = f"/iscsi/{IQN}/tpg1"
    built = tgt(
        f"/backstores/fileio create iserlun {BACKING} 64M write_back=false",
        f"/iscsi create {IQN}",
        f"{tpg}/luns create /backstores/fileio/iserlun",
        f"{tpg} set attribute authentication=1 generate_node_acls=1 demo_mode_write_protect=0 cache_dynamic_acls=1",
        f"{tpg} set auth userid={USER} password={SECRET}",
        f"{tpg}/portals/0.0.0.0:3260 enable_iser true",
        # a target with a TCP portal only: ep_connect there finds no iSER listener
        f"/iscsi create {IQN_TCP_ONLY}",
        f"/iscsi/{IQN_TCP_ONLY}/tpg1/portals delete 0.0.0.0 3260",
        f"/iscsi/{IQN_TCP_ONLY}/tpg1/portals create 0.0.0.0 3261",
        "saveconfig",
        f"{tpg}/portals ls")
    saved = json.load(open(SAVE))
    portals = {t["wwn"]: [p for tp in t["tpgs"] for p in tp["portals"]] for t in saved["targets"]}
    out["target"] = {"iser_configfs": iser_flag(3260), "saved_portals": portals, "ls": built["out"],
                     "build_s": built["s"]}
    # the saved file makes the same tree again: clear, restore, and iser is on in the kernel
    again = tgt("clearconfig confirm=true", "ls /iscsi", f"restoreconfig {SAVE}")["out"]
    out["target"].update(cleared_gone="[Targets: 0]" in again, restored_iser_configfs=iser_flag(3260))


def start_daemon(log=DAEMON_LOG):
    return lio.start_iscsikitd(SOCK, log, "--log-level", "debug")


DAEMON = None


def restart():
    global DAEMON
    DAEMON = start_daemon(ADOPTING_LOG)


def set_chap(tool, target, portal, iface, secret, env=ENV):
    for key, value in (("node.session.auth.authmethod", "CHAP"), ("node.session.auth.username", USER),
                       ("node.session.auth.password", secret)):
        r = run([tool, "-m", "node", "-T", target, "-p", portal, "-I", iface, "-o", "update", "-n", key,
                 "-v", value], env=env)
        assert r["rc"] == 0, r


def new_node(tool, target, portal, iface, env=ENV):
    r = run([tool, "-m", "node", "-T", target, "-p", portal, "-I", iface, "-o", "new"], env=env)
    assert r["rc"] == 0, r


class Writer(threading.Thread):
    """Checksummed sequential O_DIRECT writes (each 64 KiB block carries its number and a
    digest), over and over across the disk until stopped; then every block written is verified."""

    BLOCK = 64 << 10

    def __init__(self, dev, blocks):
        super().__init__(daemon=True)
        self.dev, self.blocks = dev, blocks
        self.stop = threading.Event()
        self.errors, self.written, self.last = 0, {}, {}
        self.max_stall = 0.0
        self.count = 0

    def run(self):
        import hashlib
        import mmap
        buf = mmap.mmap(-1, self.BLOCK)
        fd = os.open(self.dev, os.O_RDWR | os.O_DIRECT)
        rng = random.Random(7)
        n = 0
        try:
            while not self.stop.is_set():
                i = n % self.blocks
                data = rng.randbytes(self.BLOCK)
                buf.seek(0)
                buf.write(data)
                t0 = time.monotonic()
                try:
                    os.pwritev(fd, [buf], i * self.BLOCK)
                    self.written[i] = hashlib.sha256(data).hexdigest()
                except OSError:
                    self.errors += 1
                self.max_stall = max(self.max_stall, time.monotonic() - t0)
                n += 1
                self.count = n
            os.fsync(fd)
        finally:
            os.close(fd)

    def verify(self):
        import hashlib
        import mmap
        buf = mmap.mmap(-1, self.BLOCK)
        fd = os.open(self.dev, os.O_RDONLY | os.O_DIRECT)
        bad = 0
        try:
            for i, digest in self.written.items():
                os.preadv(fd, [buf], i * self.BLOCK)
                bad += hashlib.sha256(buf[:]).hexdigest() != digest
        finally:
            os.close(fd)
        return bad


def outage(sid, disk, kind, enable_path=None, seconds=10, wait=60, reset=False, ours=True):
    """A checksummed writer on the disk while the path is cut for `seconds`; what it saw.
    kind: "tpg" (the target's portal group disabled), "wire" (the veth between the two rxe
    ports drops every packet both ways: soft_roce.Link.cut_command) or "netdev" (the
    target's netdev itself down). `reset`: when the session is not back `wait` s after the
    path returned, make the target side's rxe device again (soft_roce.Link.reset_command)
    and wait as long once more. `ours`: the session is our daemon's (else sysfs alone says
    it is back: open-iscsi's)."""
    w = Writer(f"/dev/{disk}", blocks=256)
    w.start()
    time.sleep(2)
    client = Client(timeout=5) if ours else None
    link = soft_roce.Link()
    commands = {"wire": (link.cut_command(), link.mend_command()),
                "netdev": (link.down_command(), link.up_command())}

    def cut(on):
        if kind == "tpg":
            with open(enable_path, "w") as f:
                f.write("0" if on else "1")
        else:
            subprocess.run(commands[kind][0 if on else 1], shell=True, check=True)
    cut(True)
    time.sleep(seconds)
    t_back = time.monotonic()
    cut(False)

    def logged_in():
        if client and {s["sid"]: s["state"] for s in client.sessions()}.get(sid) != "LOGGED_IN":
            return False
        return getattr(sysfs.session(sid, luns=False), "state", "") == "LOGGED_IN"
    up = lio.until(logged_in, wait, 0.2)
    back_s = round(time.monotonic() - t_back, 1)
    rxe_before_reset = rxe_counters(link)
    after_reset_s = None
    if not up and reset:
        t_reset = time.monotonic()
        subprocess.run(link.reset_command(), shell=True, check=True)
        up = lio.until(logged_in, wait, 0.2)
        after_reset_s = round(time.monotonic() - t_reset, 1)
    n0 = len(w.written)
    lio.until(lambda: len(w.written) > n0 + 16, 20)   # the writer runs again after the recovery
    w.stop.set()
    w.join(120)
    return {"recovered": bool(up), "recovered_after_s": back_s, "io_errors": w.errors,
            "rxe_when_given_up": rxe_before_reset, "recovered_after_reset_s": after_reset_s,
            "verify_errors": verified(w) if up else None, "writes": w.count,
            "max_stall_s": round(w.max_stall, 1), "eps": leftovers()["iscsi_endpoint"],
            "wire_packets": wire_packets(link)}


def verified(w):
    """The writer's blocks that did not read back as written, or why none could be read (a
    disk the SCSI layer took offline: reported, so that one test fails, not the whole story)."""
    try:
        return w.verify()
    except OSError as e:
        return f"cannot read {w.dev}: {e}"


def wire_packets(link):
    """Packets each end of the veth sent so far: RDMA that crosses the wire counts here."""
    return {d: int(open(f"/sys/class/net/{d}/statistics/tx_packets").read())
            for d in (link.initiator_netdev, link.target_netdev)}


def rxe_counters(link):
    """The target side's rxe packet counters: after the link cut, CM REQs count as sent, never as received."""
    return {k: int(open(f"/sys/class/infiniband/rxe_{link.target_netdev}/ports/1/hw_counters/{k}").read())
            for k in ("sent_pkts", "rcvd_pkts")}


def lio_refusals():
    """How many logins LIO refused so far (one dmesg line per try that reached it: over iSER
    the refusal itself may never reach the initiator)."""
    return subprocess.run(["dmesg"], capture_output=True, text=True).stdout.count("Security negotiation failed")


def update(iqn, portal, pairs):
    for key, value in pairs:
        adm("-m", "node", "-T", iqn, "-p", portal, "-I", "iser", "-o", "update", "-n", key, "-v", value)


def one_attempt(iqn, portal):
    adm("-m", "node", "-T", iqn, "-p", portal, "-I", "iser", "-o", "update",
        "-n", "node.session.initial_login_retry_max", "-v", "0")


def ours():
    portal = f"{ADDR}:3260"
    disc = adm("-m", "discovery", "-t", "st", "-p", ADDR, "-I", "iser")
    out["discovery"] = disc
    set_chap(os.path.join(BIN, "iscsiadm"), IQN, portal, "iser", SECRET)
    # 3. failures unwind: wrong CHAP, no route, no iSER listener
    set_chap(os.path.join(BIN, "iscsiadm"), IQN, portal, "iser", "wrong-secret-999")
    update(IQN, portal, CHAP_RECORD)
    tries = []
    for _ in range(CHAP_TRIES):
        before = lio_refusals()
        r = adm("-m", "node", "-T", IQN, "-p", portal, "-I", "iser", "--login")
        tries.append({"rc": r["rc"], "s": r["s"], "err": r["err"][-300:], "left": leftovers(),
                      "target_tries": lio_refusals() - before})
    out["wrong_chap"] = {"rcs": [t["rc"] for t in tries], "tries": tries,
                         "left": leftovers(), "retried": open(DAEMON_LOG).read().count("trying again")}
    update(IQN, portal, DEFAULT_RECORD)
    set_chap(os.path.join(BIN, "iscsiadm"), IQN, portal, "iser", SECRET)
    # one attempt each (initial_login_retry_max 0, as os-brick sets it): the unwind of one
    # failed connect is what these prove, not the retry window (4 x login_timeout by default)
    new_node(os.path.join(BIN, "iscsiadm"), IQN, "198.51.100.77:3260", "iser")
    one_attempt(IQN, "198.51.100.77:3260")
    r = adm("-m", "node", "-T", IQN, "-p", "198.51.100.77:3260", "-I", "iser", "--login")
    out["no_route"] = {"rc": r["rc"], "err": r["err"], "s": r["s"], "left": leftovers()}
    new_node(os.path.join(BIN, "iscsiadm"), IQN_TCP_ONLY, f"{ADDR}:3261", "iser")
    one_attempt(IQN_TCP_ONLY, f"{ADDR}:3261")
    r = adm("-m", "node", "-T", IQN_TCP_ONLY, "-p", f"{ADDR}:3261", "-I", "iser", "--login")
    out["no_iser_listener"] = {"rc": r["rc"], "err": r["err"], "s": r["s"], "left": leftovers()}

    # 1. login over iser → a disk
    r = adm("-m", "node", "-T", IQN, "-p", portal, "-I", "iser", "--login")
    out["login"] = r
    sid = next(iter(sysfs.session_ids()), None)
    out["sid"] = sid
    disk = lio.wait_disk(sysfs, sid) if sid is not None else None
    out["disk"] = disk
    out["during"] = leftovers()
    out["ours_p3"] = adm("-m", "session", "-P", "3")["out"]
    out["ours_p0"] = adm("-m", "session")["out"]
    out["debian_on_ours_p3"] = run([DEBIAN_ADM, "-m", "session", "-P", "3"])["out"]
    out["negotiated"] = {a: open(f"/sys/class/iscsi_connection/connection{sid}:0/{a}").read().strip()
                         for a in ("max_recv_dlength", "max_xmit_dlength", "header_digest", "data_digest")}
    out["io"] = lio.verified_io(f"/dev/{disk}", BACKING) if disk else None

    # 2. recovery under a checksummed writer: the target's portal group disabled for 10 s
    # (LIO drops the connection, refuses logins meanwhile: our daemon stops, disconnects the
    # endpoint and reconnects a new one until the target is back)
    out["recovery"] = outage(sid, disk, "tpg", f"/sys/kernel/config/target/iscsi/{IQN}/tpgt_1/enable")
    # 2. the wire between the two rxe ports cut for 10 s under the writer (proof 2): the
    # connection dies on retry timeouts, the daemon reconnects a new endpoint once it returns
    out["link_cut"] = outage(sid, disk, "wire")
    # and the target's netdev itself down 10 s (its rxe port goes down with it). Not back
    # 20 s after: the rxe device is made again (6.1's deaf device, the test's docstring)
    out["netdev_down"] = outage(sid, disk, "netdev", wait=20, reset=True)

    # the daemon restarted under the session: it adopts it, with its endpoint (the record the
    # first daemon kept beside its socket, checked against /sys/class/iscsi_endpoint)
    adopt = out["adoption"] = {"eps_before": leftovers()["iscsi_endpoint"]}
    Client(timeout=10).stop()
    DAEMON.wait(30)
    restart()
    adopt["sessions"] = [{k: s[k] for k in ("sid", "adopted", "state")} for s in Client(timeout=10).sessions()]

    # logout → disk, session, endpoint gone
    r = adm("-m", "node", "-T", IQN, "-p", portal, "-I", "iser", "--logout")
    out["logout"] = {"rc": r["rc"], "out": r["out"], "err": r["err"],
                     "disk_gone": lio.until(lambda: not os.path.exists(f"/dev/{disk}"), 10), "left": leftovers()}
    log = open(ADOPTING_LOG).read()
    adopt["log"] = [line for line in log.splitlines() if "endpoint ep-" in line or "endpoint is ep-" in line]


def debian():
    """Debian's open-iscsi over iser to the same target (its own database, the same initiator name)."""
    os.makedirs("/run/lock/iscsi", exist_ok=True)
    env = dict(os.environ)
    # iscsid signals its own process group on exit: its own session, not ours
    iscsid = subprocess.Popen(["/usr/sbin/iscsid", "-f"], stdout=subprocess.DEVNULL,
                              stderr=open("/tmp/iscsid-iser.log", "wb"), start_new_session=True)
    try:
        time.sleep(1)
        run([DEBIAN_ADM, "-m", "discovery", "-t", "st", "-p", ADDR, "-I", "iser"], env=env)
        set_chap(DEBIAN_ADM, IQN, f"{ADDR}:3260", "iser", SECRET, env=env)
        r = run([DEBIAN_ADM, "-m", "node", "-T", IQN, "-p", f"{ADDR}:3260", "-I", "iser", "--login"], env=env)
        out["debian_login"] = r
        sid = next(iter(sysfs.session_ids()), None)
        disk = lio.wait_disk(sysfs, sid)
        out["debian_p3"] = run([DEBIAN_ADM, "-m", "session", "-P", "3"], env=env)["out"]
        out["ours_on_debian_p3"] = adm("-m", "session", "-P", "3")["out"]
        # the same wire cut under open-iscsi (the reference: what a 10 s cut costs its session)
        out["debian_link_cut"] = outage(sid, disk, "wire", ours=False)
        r = run([DEBIAN_ADM, "-m", "node", "-T", IQN, "-p", f"{ADDR}:3260", "-I", "iser", "--logout"], env=env)
        out["debian_logout"] = {"rc": r["rc"], "left": lio.until(lambda: not any(leftovers().values()) and leftovers(), 10)
                                or leftovers()}
        run([DEBIAN_ADM, "-m", "node", "-o", "delete"], env=env)
    finally:
        iscsid.terminate()
        iscsid.wait(10)


def tgtadm(*args):
    return run(["tgtadm", "-C", TGTD_PORT, "--lld", "iser", *args], env=dict(os.environ))


def redirect():
    """A login to a portal that redirects over iSER: tgtd (userspace iSER through librdmacm on
    rxe) answers 0x0101 with TargetAddress=192.0.2.2:3264, where LIO's iSER portal now is.
    LIO itself sends no redirect (iscsi_target_login.c has no TargetAddress redirect)."""
    from rtslib import RTSRoot, NetworkPortal
    for tpg in RTSRoot().tpgs:
        if tpg.parent_target.wwn == IQN:
            for np in list(tpg.network_portals):
                np.delete()
            NetworkPortal(tpg, "0.0.0.0", REDIRECT_TO[1]).iser = True
    subprocess.run(["modprobe", "-a", "ib_uverbs", "rdma_ucm"], check=True)
    # pool_sz_mb: its 1 GiB default does not fit the guest (and any parameter keeps tgtd from
    # parsing a port, which 1.0.85 refuses on a stale errno): the RDMA listener is port 3260
    tgtd = subprocess.Popen(["tgtd", "-f", "-C", TGTD_PORT, "--iser", "pool_sz_mb=128"], stdout=subprocess.DEVNULL,
                            stderr=open("/tmp/tgtd-iser.log", "wb"), start_new_session=True)
    res = out["redirect"] = {}
    try:
        lio.until(lambda: tgtadm("--op", "show", "--mode", "target")["rc"] == 0, 30)
        tgtadm("--op", "new", "--mode", "target", "--tid", "1", "-T", IQN)
        tgtadm("--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL")
        for name, value in (("RedirectAddress", REDIRECT_TO[0]), ("RedirectPort", str(REDIRECT_TO[1])),
                            ("RedirectReason", "Temporary")):
            tgtadm("--op", "update", "--mode", "target", "--tid", "1", "--name", name, "--value", value)
        portal = f"{ADDR}:3260"

        def one(tool, env):
            r = run([tool, "-m", "node", "-T", IQN, "-p", portal, "-I", "iser", "--login"], env=env)
            sid = next(iter(sysfs.session_ids()), None)
            got = {"rc": r["rc"], "err": r["err"][-400:], "s": r["s"],
                   "p1": run([tool, "-m", "session", "-P", "1"], env=env)["out"],
                   "io_ok": sid is not None and lio.write_read_ok(sysfs, sid)}
            lo = run([tool, "-m", "node", "-T", IQN, "-p", portal, "-I", "iser", "--logout"], env=env)
            got.update(logout_rc=lo["rc"], left=lio.until(lambda: not any(leftovers().values()) and leftovers(), 10)
                       or leftovers())
            return got
        d = start_daemon()
        try:
            res["ours"] = one(os.path.join(BIN, "iscsiadm"), ENV)
        finally:
            Client(timeout=10).stop()
            d.wait(30)
        os.makedirs("/run/lock/iscsi", exist_ok=True)
        iscsid = subprocess.Popen(["/usr/sbin/iscsid", "-f"], stdout=subprocess.DEVNULL,
                                  stderr=open("/tmp/iscsid-iser-redirect.log", "wb"), start_new_session=True)
        try:
            lio.until(lio.iscsid_ready, 30)
            env = dict(os.environ)
            run([DEBIAN_ADM, "-m", "node", "-T", IQN, "-p", portal, "-I", "iser", "-o", "new"], env=env)
            set_chap(DEBIAN_ADM, IQN, portal, "iser", SECRET, env=env)    # LIO, behind the redirect, asks
            run([DEBIAN_ADM, "-m", "node", "-T", IQN, "-p", portal, "-I", "iser", "-o", "update",
                 "-n", "node.conn[0].timeo.login_timeout", "-v", "15"], env=env)
            res["debian"] = one(DEBIAN_ADM, env)
            run([DEBIAN_ADM, "-m", "node", "-o", "delete"], env=env)
        finally:
            iscsid.terminate()
            iscsid.wait(10)
    finally:
        # tgtd leaves on this, not on SIGTERM while it holds targets
        tgtadm_system = run(["tgtadm", "-C", TGTD_PORT, "--op", "delete", "--mode", "system"], env=dict(os.environ))
        try:
            tgtd.wait(20)
        except subprocess.TimeoutExpired:
            tgtd.kill()
            tgtd.wait(10)
        res["tgtd_stopped_rc"] = tgtadm_system["rc"]


def main():
    os.makedirs(DB, exist_ok=True)
    os.makedirs("/etc/target", exist_ok=True)     # rtslib's dbroot (lio.clear at the end)
    # the same initiator name for both initiators, so their -P 3 can be compared
    with open("/etc/iscsi/initiatorname.iscsi") as f, open(os.path.join(DB, "initiatorname.iscsi"), "w") as g:
        g.write(f.read())
    phases = out["phases_s"] = {}     # where the story's time goes (issue 16: make it cheaper)
    t = time.monotonic()

    def phase(name):
        nonlocal t
        phases[name] = round(time.monotonic() - t, 1)
        t = time.monotonic()
    build_target()
    phase("target")
    global DAEMON
    DAEMON = start_daemon()
    try:
        ours()
    finally:
        Client(timeout=10).stop()
        DAEMON.wait(30)
    phase("iscsikit")
    out["daemon_log_has_secret"] = any(SECRET in open(p).read() for p in (DAEMON_LOG, ADOPTING_LOG)
                                       if os.path.exists(p))
    debian()
    phase("open_iscsi")
    redirect()
    phase("redirect")
    lio.clear()
    phase("clear")
    print(json.dumps(out))


if __name__ == "__main__":
    try:
        main()
    except BaseException as e:  # the report says what broke, with the daemon's log
        import traceback
        out["error"] = traceback.format_exc()
        try:
            out["daemon_log"] = open(DAEMON_LOG).read()[-6000:]
        except OSError:
            pass
        print(json.dumps(out))

"""Guest-side helpers: a LIO target built with rtslib-fb, and a verified O_DIRECT workload."""

import hashlib
import mmap
import os
import random
import subprocess
import time

from rtslib import LUN, TPG, FabricModule, FileIOStorageObject, NetworkPortal, NodeACL, RTSRoot, Target

INITIATOR = "iqn.2026-11.org.iscsikit.test:initiator"


def clear():
    RTSRoot().clear_existing(confirm=True)


def reset_db():
    """Empty the guest's /etc/iscsi record folders (its overlay: the host's stay), so each
    implementation of a differential starts from the same empty database."""
    import shutil
    for d in ("nodes", "send_targets", "static", "isns", "fw", "ifaces"):
        shutil.rmtree(f"/etc/iscsi/{d}", ignore_errors=True)


def target(name, path, size=64 << 20, port=3260, chap=None, mutual=None, digests_required=False):
    """One fileio LUN behind iqn `name` on 127.0.0.1:port; CHAP (user, secret) with an ACL when given."""
    with open(path, "ab") as f:   # rtslib records the size but leaves a new file empty
        f.truncate(size)
    so = FileIOStorageObject(name.rsplit(":", 1)[-1], path, size=size, write_back=False)
    tpg = TPG(Target(FabricModule("iscsi"), name), 1)
    NetworkPortal(tpg, "127.0.0.1", port)
    LUN(tpg, 0, so)
    if chap:
        tpg.set_attribute("authentication", "1")
        tpg.set_attribute("generate_node_acls", "0")
        acl = NodeACL(tpg, INITIATOR)
        acl.chap_userid, acl.chap_password = chap
        if mutual:
            acl.chap_mutual_userid, acl.chap_mutual_password = mutual
        from rtslib import MappedLUN
        MappedLUN(acl, 0, tpg_lun=0)
    else:
        tpg.set_attribute("authentication", "0")
        tpg.set_attribute("generate_node_acls", "1")
        tpg.set_attribute("demo_mode_write_protect", "0")
        tpg.set_attribute("cache_dynamic_acls", "1")
    if digests_required:
        tpg.set_parameter("HeaderDigest", "CRC32C")
        tpg.set_parameter("DataDigest", "CRC32C")
    tpg.enable = True
    return tpg


def start_iscsikitd(sock, log_path, *args):
    """iscsikitd from this interpreter's folder on `sock`, once it answers (SystemExit if not in 60 s)."""
    import subprocess
    import sys
    from iscsikit.initiator.client import Client, MgmtError
    log = open(log_path, "wb")
    p = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "iscsikitd"), "--socket", sock, *args],
                         stdout=log, stderr=log)
    end = time.monotonic() + 60
    while time.monotonic() < end:
        try:
            Client(sock, timeout=5).version()
            return p
        except MgmtError:
            time.sleep(0.1)
    raise SystemExit(f"daemon did not come up: {open(log_path).read()}")


def iscsid_ready():
    """open-iscsi's iscsid answers on its abstract socket (usr/mgmt_ipc.c ISCSIADM_NAMESPACE).
    Before that, Debian's iscsiadm tries to start it through systemd and says so on stderr."""
    import socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect("\0ISCSIADM_ABSTRACT_NAMESPACE")
            return True
        except OSError:
            return False


def until(pred, timeout, interval=0.1):
    """pred()'s first truthy value, polled every `interval` for `timeout` seconds; else its last value."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if v := pred():
            return v
        time.sleep(interval)
    return pred()


def wait_disk(sysfs, sid, timeout=30):
    """The block device of the session's first LUN once its node exists, or None."""
    def disk():
        s = sysfs.session(sid)
        if s and s.luns and s.luns[0].block and os.path.exists(f"/dev/{s.luns[0].block}"):
            return s.luns[0].block
        return None
    return until(disk, timeout)


def write_read_ok(sysfs, sid, timeout=30):
    """64 KiB written with O_DIRECT to the session's first disk and read back equal."""
    disk = wait_disk(sysfs, sid, timeout)
    if not disk:
        return False
    buf, back = mmap.mmap(-1, 65536), mmap.mmap(-1, 65536)
    buf.write(os.urandom(65536))

    def opened():
        # the node can exist a moment before sd has the disk (ENXIO): retried, not failed
        try:
            return os.open(f"/dev/{disk}", os.O_RDWR | os.O_DIRECT)
        except OSError:
            return None
    fd = until(opened, timeout)
    if fd is None:
        return False
    try:
        os.pwritev(fd, [buf], 0)
        os.preadv(fd, [back], 0)
        return back[:] == buf[:]
    except OSError:
        return False
    finally:
        os.close(fd)


def verified_io(dev, backing, total=32 << 20, block=64 << 10, seed=1):
    """Write `total` bytes at random block-aligned offsets with O_DIRECT, read back; compare with the backing file."""
    size = os.path.getsize(backing)
    rng = random.Random(seed)
    expect = {}
    buf = mmap.mmap(-1, block)
    fd = os.open(dev, os.O_RDWR | os.O_DIRECT)
    try:
        for _ in range(total // block):
            off = rng.randrange(size // block) * block
            data = rng.randbytes(block)
            buf.seek(0)
            buf.write(data)
            assert os.pwritev(fd, [buf], off) == block
            expect[off] = hashlib.sha256(data).hexdigest()
        os.fsync(fd)
        bad_dev = 0
        for off, digest in expect.items():
            assert os.preadv(fd, [buf], off) == block
            if hashlib.sha256(buf[:]).hexdigest() != digest:
                bad_dev += 1
    finally:
        os.close(fd)
    bad_file = 0
    with open(backing, "rb") as f:
        for off, digest in expect.items():
            f.seek(off)
            if hashlib.sha256(f.read(block)).hexdigest() != digest:
                bad_file += 1
    return {"blocks": len(expect), "written": total, "bad_dev": bad_dev, "bad_file": bad_file}


def start_iscsid():
    """Debian's iscsid in the foreground, in its own session (at shutdown it signals its whole
    process group: kill(0, SIGTERM)); returned once iscsiadm can reach it."""
    import subprocess
    iscsid = subprocess.Popen(["/usr/sbin/iscsid", "-f"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    until(lambda: os.path.exists("/run/iscsid.pid") or subprocess.run(
        ["iscsiadm", "-m", "session"], capture_output=True).returncode in (0, 21), 60)
    return iscsid


class LoopbackTcp:
    """IPv4 TCP segments on the loopback wire, read by an AF_PACKET socket in a thread while
    something runs: `segment(sport, dport, flags, payload)` is called once for each (every
    loopback frame passes twice, once outgoing); close() stops the reader."""

    def __init__(self, segment):
        import socket
        import threading
        self.segment = segment
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        self.sock.bind(("lo", 0))
        self.sock.settimeout(0.2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        import socket
        while not self.stop.is_set():
            try:
                frame, meta = self.sock.recvfrom(70000)
            except socket.timeout:
                continue
            if meta[2] == socket.PACKET_OUTGOING:
                continue
            ip = frame[14:]
            if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 6:
                continue
            tcp = ip[(ip[0] & 0xF) * 4:]
            self.segment(int.from_bytes(tcp[0:2], "big"), int.from_bytes(tcp[2:4], "big"), tcp[13],
                         tcp[(tcp[12] >> 4) * 4:])

    def close(self):
        self.stop.set()
        self.thread.join()
        self.sock.close()

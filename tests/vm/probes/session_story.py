"""Run in the guest: log in to LIO with our own kernel bridge, in every way issue 4 asks, and report JSON."""

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import lio  # noqa: E402

from iscsikit.initiator import login_io  # noqa: E402
from iscsikit.initiator.session import Initiator, NodeConfig, SessionError  # noqa: E402
from iscsikit.kernel.sysfs import Sysfs  # noqa: E402
from iscsikit.proto.chap import ChapCredentials  # noqa: E402

IQN = "iqn.2026-11.org.iscsikit.test:disk"
out = {}
sysfs = Sysfs()
ini = Initiator(sysfs)


def wait_disk(sid, timeout=30):
    return lio.wait_disk(sysfs, sid, timeout)


def wait_gone(path, timeout=20):
    return lio.until(lambda: not os.path.exists(path), timeout)


def case(name, node, backing, io=True, by_path=False, iscsiadm=False):
    res = {}
    t0 = time.monotonic()
    try:
        ks = ini.login(node)
    except SessionError as e:
        res.update(error=str(e), exit_code=e.exit_code, sessions_left=sysfs.session_ids(),
                   hosts_left=sorted(os.listdir("/sys/class/iscsi_host")))
        out[name] = res
        return
    res["login_seconds"] = round(time.monotonic() - t0, 3)
    s = sysfs.session(ks.sid)
    res.update(sid=ks.sid, target=s.target, address=s.address, port=s.port, state=s.state,
               conn_state=s.conn_state, tpgt=s.tpgt, initiator=s.initiator_name,
               header_digest=open(f"/sys/class/iscsi_connection/connection{ks.sid}:0/header_digest").read().strip(),
               data_digest=open(f"/sys/class/iscsi_connection/connection{ks.sid}:0/data_digest").read().strip())
    disk = wait_disk(ks.sid, timeout=3 if node.scan == "manual" else 30)
    res["disk"] = disk
    if by_path:
        link = f"/dev/disk/by-path/ip-{node.address}:{node.port}-iscsi-{node.target}-lun-0"
        subprocess.run(["udevadm", "settle", "-t", "20"])
        res["by_path"] = os.path.realpath(link) if os.path.exists(link) else None
    if iscsiadm:
        p = subprocess.run(["iscsiadm", "-m", "session", "-P", "3"], capture_output=True, text=True)
        res["iscsiadm_rc"], res["iscsiadm_out"] = p.returncode, p.stdout
    if disk and io:
        res["io"] = lio.verified_io(f"/dev/{disk}", backing)
    t0 = time.monotonic()
    ini.logout(ks.sid)
    res["logout_seconds"] = round(time.monotonic() - t0, 3)
    res["disk_gone"] = wait_gone(f"/dev/{disk}") if disk else None
    res["sessions_after_logout"] = sysfs.session_ids()
    out[name] = res


def node(**kw):
    return NodeConfig(target=IQN, address="127.0.0.1", port=3260, initiator_name=lio.INITIATOR, **kw)


os.makedirs("/var/tmp/lio", exist_ok=True)
os.makedirs("/etc/target", exist_ok=True)   # rtslib keeps its dbroot there
backing = "/var/tmp/lio/disk.img"
udevd = subprocess.Popen(["/lib/systemd/systemd-udevd"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    subprocess.run(["udevadm", "trigger", "--action=add", "--subsystem-match=block"], check=False)
    lio.clear()
    lio.target(IQN, backing)
    found = login_io.discover(("127.0.0.1", 3260), initiator_name=lio.INITIATOR)
    out["discovery"] = [[t.name, [[p.host, p.port, p.tpgt] for p in t.portals]] for t in found]
    case("noauth", node(), backing, by_path=True, iscsiadm=True)
    case("scan_manual", node(scan="manual"), backing, io=False)
    lio.clear()

    lio.target(IQN, backing, chap=("alice", "alice-secret-12"))
    case("chap", node(chap=ChapCredentials("alice", b"alice-secret-12")), backing)
    case("chap_wrong", node(chap=ChapCredentials("alice", b"wrong-secret-99")), backing)
    lio.clear()

    lio.target(IQN, backing, chap=("alice", "alice-secret-12"), mutual=("target", "target-secret-34"))
    case("mutual", node(chap=ChapCredentials("alice", b"alice-secret-12", "target", b"target-secret-34")), backing)
    case("mutual_wrong", node(chap=ChapCredentials("alice", b"alice-secret-12", "target", b"not-the-target-5")),
         backing)
    lio.clear()

    lio.target(IQN, backing, digests_required=True)
    case("digests", node(header_digest="CRC32C", data_digest="CRC32C"), backing)
    lio.clear()
finally:
    udevd.terminate()
    udevd.wait()
print(json.dumps(out))

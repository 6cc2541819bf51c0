"""Run in the guest: issue 14's negotiation matrix against LIO, reported as JSON.

The target is made and changed through iscsikit's target/ code (Manager: the TPG's
parameters per row); the initiator side is a node record changed with `iscsiadm -m node
-o update` (the C forwarder into a running iscsikitd), logged in and out with iscsiadm.
For each row: the negotiated values in the initiator's sysfs and in LIO's ACL param/
(the target's view of the same session), then 8 MiB written with O_DIRECT in mixed block
sizes (4 KiB ... 1 MiB), read back through the disk and from the backing file.

MATRIX_ROWS=pairwise (default) or full (the bench); MATRIX_LIMIT=N runs the first N rows;
MATRIX_TOOLS=iscsikit,open-iscsi also runs every row through Debian's open-iscsi 2.1.8
(iscsid + /usr/sbin/iscsiadm, /etc/iscsi) after iscsikit's pass, never both daemons at once.
"""

import json
import mmap
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import lio  # noqa: E402
import matrix  # noqa: E402

BIN = os.path.dirname(sys.executable)
SCRATCH = "/tmp/iscsikit-matrix"
SOCK = "/run/iscsikit/matrix.sock"
DB_ROOT = f"{SCRATCH}/iscsi"
ENV = {"ISCSIKIT_SOCKET": SOCK, "ISCSIKIT_DB_ROOT": DB_ROOT}
os.environ.update(ENV)

from iscsikit.kernel.sysfs import Sysfs  # noqa: E402
from iscsikit.target import saveconfig, validate  # noqa: E402
from iscsikit.target.manager import Manager  # noqa: E402

IQN = "iqn.2026-11.org.iscsikit.test:matrix"
BACKING = "/var/tmp/lio/matrix.img"
SIZE = 64 << 20
PORTAL = "127.0.0.1:3260"
sysfs = Sysfs()
manager = Manager(save_file=f"{SCRATCH}/saveconfig.json", lock_file=f"{SCRATCH}/target.lock")


ADM = {"iscsikit": f"{BIN}/iscsiadm", "open-iscsi": "/usr/sbin/iscsiadm"}
tool = "iscsikit"


def adm(*argv, timeout=120):
    p = subprocess.run([ADM[tool], *argv], capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def start_iscsid():
    for d in ("nodes", "send_targets", "static", "isns", "fw", "ifaces"):
        shutil.rmtree(f"/etc/iscsi/{d}", ignore_errors=True)
    os.makedirs("/run/lock/iscsi", exist_ok=True)
    # its own session: at shutdown iscsid signals its whole process group (kill(0, SIGTERM))
    p = subprocess.Popen(["/usr/sbin/iscsid", "-f"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    lio.until(lio.iscsid_ready, 60)
    return p


def start_daemon():
    return lio.start_iscsikitd(SOCK, f"{SCRATCH}/iscsikitd.log")


def make_target():
    with open(BACKING, "ab") as f:
        f.truncate(SIZE)
    cfg = saveconfig.from_dict({
        "storage_objects": [{"plugin": "fileio", "name": "matrix", "dev": BACKING, "size": SIZE,
                             "write_back": False}],
        "targets": [{"wwn": IQN, "fabric": "iscsi", "tpgs": [{
            "tag": 1, "enable": True,
            "attributes": {"authentication": 0, "generate_node_acls": 0},
            "luns": [{"index": 0, "storage_object": "/backstores/fileio/matrix"}],
            "portals": [{"ip_address": "127.0.0.1", "port": 3260}],
            "node_acls": [{"node_wwn": name, "mapped_luns": [{"index": 0, "tpg_lun": 0, "write_protect": False}]}
                          for name in initiator_names()],
        }]}],
    })
    manager.apply(cfg)


def tpg_values(values):
    """The TPG parameters for one side's values. LIO answers an initiator's declared
    MaxRecvDataSegmentLength with its own MaxXmitDataSegmentLength parameter, not its
    MaxRecvDataSegmentLength one (iscsi_target_parameters.c, iscsi_check_acceptor_state):
    the value the target declares is set in both."""
    return {**values, "MaxXmitDataSegmentLength": values[matrix.MRDSL]}


def initiator_names():
    """Ours (the scratch database's) and open-iscsi's (/etc/iscsi), each with its own ACL."""
    names = [lio.INITIATOR]
    try:
        theirs = open("/etc/iscsi/initiatorname.iscsi").read().split("InitiatorName=")[1].split()[0]
    except (OSError, IndexError):
        return names
    return names if theirs == lio.INITIATOR else names + [theirs]


def set_target(values):
    def change(cfg):
        tpg = cfg.targets[IQN].tpgs[1]
        for k, v in tpg_values(values).items():
            tpg.parameters[k] = validate.tpg_parameter(k, str(v), f"{IQN} tpg1")
    manager.edit(change, targets={IQN}, sos=set())


def tpg_params():
    d = f"/sys/kernel/config/target/iscsi/{IQN}/tpgt_1/param"
    return {k: open(f"{d}/{k}").read().strip() for k in (*matrix.KEYS, "MaxXmitDataSegmentLength")}


def acl_params():
    """LIO's view of the live session: the ACL's read-only param/ files hold the session's
    negotiated values (the per-connection MaxRecvDataSegmentLength is not among them)."""
    acls = f"/sys/kernel/config/target/iscsi/{IQN}/tpgt_1/acls"
    out = {}
    for name in initiator_names():
        try:
            values = {k: open(f"{acls}/{name}/param/{k}").read().strip() for k in matrix.NEGOTIATED}
        except OSError as e:
            return {"error": str(e)}
        if not any("No Active" in v for v in values.values()):
            out = values
    return out


def kernel_params(sid):
    s, c = f"/sys/class/iscsi_session/session{sid}", f"/sys/class/iscsi_connection/connection{sid}:0"
    yes_no = {"1": "Yes", "0": "No"}
    read = lambda p: open(p).read().strip()  # noqa: E731
    return {
        "initial_r2t": yes_no.get(read(f"{s}/initial_r2t"), read(f"{s}/initial_r2t")),
        "immediate_data": yes_no.get(read(f"{s}/immediate_data"), read(f"{s}/immediate_data")),
        "first_burst_len": int(read(f"{s}/first_burst_len")),
        "max_burst_len": int(read(f"{s}/max_burst_len")),
        "max_recv_dlength": int(read(f"{c}/max_recv_dlength")),
        "max_xmit_dlength": int(read(f"{c}/max_xmit_dlength")),
    }


def workload(dev, seed):
    """8 MiB in mixed block sizes with O_DIRECT, read back through the disk and from the file."""
    ext = matrix.extents()
    buf = mmap.mmap(-1, max(matrix.BLOCKS))
    view = memoryview(buf)
    t0 = time.monotonic()
    fd = os.open(dev, os.O_RDWR | os.O_DIRECT)
    try:
        for off, length in ext:
            buf[:length] = matrix.pattern(seed, off, length)
            assert os.pwritev(fd, [view[:length]], off) == length
        os.fsync(fd)
        written = time.monotonic() - t0
        bad_dev = []
        for off, length in ext:
            assert os.preadv(fd, [view[:length]], off) == length
            if buf[:length] != matrix.pattern(seed, off, length):
                bad_dev.append(off)
    finally:
        os.close(fd)
    read = time.monotonic() - t0 - written
    bad_file = []
    with open(BACKING, "rb") as f:
        for off, length in ext:
            f.seek(off)
            if f.read(length) != matrix.pattern(seed, off, length):
                bad_file.append(off)
    view.release()
    buf.close()
    return {"extents": len(ext), "bytes": sum(n for _, n in ext), "bad_dev": bad_dev, "bad_file": bad_file,
            "write_s": round(written, 2), "read_s": round(read, 2)}


def run_row(index, row):
    res = {"row": row, "label": matrix.label(row), "expected": matrix.expected(row)}
    sides = matrix.sides(row)
    t0 = time.monotonic()
    set_target(sides["target"])
    res["tpg"] = tpg_params()
    pairs = [a for key, value in sides["initiator"].items() for a in ("-n", matrix.RECORD_KEYS[key], "-v", str(value))]
    rc, _, err = adm("-m", "node", "-T", IQN, "-p", PORTAL, "-o", "update", *pairs)
    if rc:
        res["error"] = f"update: {rc} {err}"
        return res
    res["setup_s"] = round(time.monotonic() - t0, 2)
    t0 = time.monotonic()
    rc, _, err = adm("-m", "node", "-T", IQN, "-p", PORTAL, "--login")
    res["login_rc"] = rc
    if rc:
        res["error"] = f"login: {err.strip()[-500:]}"
        return res
    res["login_s"] = round(time.monotonic() - t0, 2)
    try:
        sid = next(s.sid for s in sysfs.sessions() if s.target == IQN)
        res["kernel"] = kernel_params(sid)
        res["lio"] = acl_params()
        disk = lio.wait_disk(sysfs, sid, 30)
        res["disk"] = disk
        if disk:
            res["io"] = workload(f"/dev/{disk}", index)
    finally:
        t0 = time.monotonic()
        rc, _, err = adm("-m", "node", "-T", IQN, "-p", PORTAL, "--logout")
        res["logout_rc"], res["logout_s"] = rc, round(time.monotonic() - t0, 2)
        if rc:
            res["logout_err"] = err[-300:]
        res["sessions_left"] = [s.sid for s in sysfs.sessions() if s.target == IQN]
    return res


def main():
    os.makedirs(SCRATCH, exist_ok=True)
    os.makedirs(DB_ROOT, exist_ok=True)
    os.makedirs("/etc/target", exist_ok=True)   # rtslib keeps its dbroot there
    os.makedirs("/var/tmp/lio", exist_ok=True)
    with open(f"{DB_ROOT}/initiatorname.iscsi", "w") as f:
        f.write(f"InitiatorName={lio.INITIATOR}\n")
    rows = matrix.full_matrix() if os.environ.get("MATRIX_ROWS") == "full" else matrix.pairwise()
    if os.environ.get("MATRIX_LIMIT"):
        rows = rows[:int(os.environ["MATRIX_LIMIT"])]
    global tool
    out = {}
    udevd = subprocess.Popen(["/lib/systemd/systemd-udevd"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        subprocess.run(["udevadm", "trigger", "--action=add", "--subsystem-match=block"], check=False)
        lio.clear()
        make_target()
        for tool in os.environ.get("MATRIX_TOOLS", "iscsikit").split(","):
            prefix = "" if tool == "iscsikit" else "open_iscsi_"
            daemon = start_daemon() if tool == "iscsikit" else start_iscsid()
            try:
                rc, _, err = adm("-m", "node", "-o", "new", "-T", IQN, "-p", PORTAL)
                out[f"{prefix}new_rc"] = rc
                t_all = time.monotonic()
                out[f"{prefix}rows"] = [run_row(i, row) for i, row in enumerate(rows)]
                out[f"{prefix}total_s"] = round(time.monotonic() - t_all, 1)
            finally:
                adm("-m", "node", "-U", "all")
                daemon.terminate()
                daemon.wait(timeout=30)
    finally:
        udevd.terminate()
        udevd.wait()
        lio.clear()
    print(json.dumps(out))


main()

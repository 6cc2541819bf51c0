"""Guest-side helpers the login/throughput bench probes share: the timed login → disk →
dd → logout rounds of one tool, and starting each tool's daemon.

One copy for initiator_probe.py (tcp on loopback) and iser_probe.py (iSER over soft-RoCE):
both compare open-iscsi and iscsikit with the same rounds in the same boot, so they must
time the same steps the same way.
"""

import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests", "vm", "probes"))
import lio  # noqa: E402

from iscsikit.kernel.sysfs import Sysfs  # noqa: E402

VENV = os.path.dirname(sys.executable)
SOCKET = "/run/iscsikit/iscsikitd.sock"     # the default: the forwarding iscsiadm finds it there
sysfs = Sysfs()


def wait(pred, timeout=60):
    """pred()'s first truthy value within `timeout`, else the probe ends (a bench times, it does not judge)."""
    return lio.until(pred, timeout, interval=0.02) or sys.exit("timed out")


def disk():
    """The first logged-in LUN's block device once its node exists."""
    for s in sysfs.sessions():
        for lun in s.luns:
            if lun.block and os.path.exists(f"/dev/{lun.block}"):
                return lun.block
    return None


def dd(args, mib):
    """`mib` MiB through dd with 1 MiB blocks; MiB/s."""
    t0 = time.monotonic()
    subprocess.run(["dd", *args, "bs=1M", f"count={mib}", "status=none"], check=True)
    return mib / (time.monotonic() - t0)


def run_tool(adm, start_daemon, iqn, portal, *, rounds, mib, dd_rounds=3, iface=None, gone=None):
    """One tool's rounds: discovery once, then `rounds` × (login, disk, dd write/read in the
    first `dd_rounds`, logout, wait until `gone()`: by default no session in sysfs).
    Medians and the samples."""
    iface_args = ["-I", iface] if iface else []
    gone = gone or (lambda: not sysfs.session_ids())
    node = [adm, "-m", "node", "-T", iqn, "-p", portal, *iface_args]
    daemon = start_daemon()
    res = {"login_s": [], "login_to_disk_s": [], "write_mib_s": [], "read_mib_s": []}
    queue = None
    try:
        subprocess.run([adm, "-m", "discovery", "-t", "st", "-p", portal, *iface_args], check=True,
                       capture_output=True)
        for i in range(rounds):
            t0 = time.monotonic()
            subprocess.run([*node, "--login"], check=True, capture_output=True)
            res["login_s"].append(time.monotonic() - t0)
            dev = wait(disk)
            res["login_to_disk_s"].append(time.monotonic() - t0)
            if i == 0:
                queue = queue_limits(dev)
            if i < dd_rounds:
                res["write_mib_s"].append(dd(["if=/dev/zero", f"of=/dev/{dev}", "oflag=direct"], mib))
                res["read_mib_s"].append(dd([f"if=/dev/{dev}", "of=/dev/null", "iflag=direct"], mib))
            subprocess.run([*node, "--logout"], check=True, capture_output=True)
            wait(gone)
        subprocess.run([adm, "-m", "node", "-o", "delete"], capture_output=True)   # the next tool discovers
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
    return {k: (statistics.median(v) if v else None) for k, v in res.items()} | {"samples": res, "queue": queue}


def queue_limits(dev):
    """What the block and SCSI layers let one disk have in flight, and how large: two tools'
    throughput is comparable only when these are the same (they come from the record's
    cmds_max/queue_depth and the transport's limits)."""
    def read(path):
        try:
            return open(path).read().strip()
        except OSError:
            return None
    host = os.path.basename(os.path.realpath(f"/sys/block/{dev}/device/../../.."))
    return {"can_queue": read(f"/sys/class/scsi_host/{host}/can_queue"),
            "queue_depth": read(f"/sys/block/{dev}/device/queue_depth"),
            "max_sectors_kb": read(f"/sys/block/{dev}/queue/max_sectors_kb"),
            "nr_requests": read(f"/sys/block/{dev}/queue/nr_requests")}


def start_iscsid():
    return lio.start_iscsid()


def start_iscsikitd():
    return lio.start_iscsikitd(SOCKET, "/tmp/bench-iscsikitd.log", "--log-level", "warning")


def filled_backing(path, mib):
    """A backing file of `mib` + 16 MiB written out first: the guest's tmpfs allocates its pages
    now, so neither tool pays for that (the first writer would otherwise look slower)."""
    with open(path, "wb") as f:
        for _ in range(mib + 16):
            f.write(b"\0" * (1 << 20))
    return (mib + 16) << 20

"""Run in the guest, whose firmware left an iBFT (tests/vm/ibft_table.py, QEMU -acpitable):
iscsi_ibft shows it in /sys/firmware/ibft; the same `-m fw` / `-m discovery -t fw` command
lines, logins from the table included, run through Debian's open-iscsi 2.1.8 and through
iscsikit against one LIO target whose ACL is the table's initiator name with the table's
mutual CHAP. Prints both transcripts, the sysfs view and what each login reached, as JSON.

$IK_IBFT_FACTS: the table's facts as JSON (initiator, nic, target), so probe and test share one."""

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import lio  # noqa: E402
from transcripts import run_steps  # noqa: E402

from iscsikit.kernel.sysfs import Sysfs  # noqa: E402

FACTS = json.loads(os.environ["IK_IBFT_FACTS"])
T = FACTS["target"]
NIC = FACTS["nic"]
VENV = os.path.dirname(sys.executable)
NETDEV = "ibft0"
SYSFS = Sysfs()
PORTAL = f"{T['address']}:{T['port']}"

STEPS = [
    ["-m", "fw"],
    ["-m", "discovery", "-t", "fw"],
    ["-m", "node"],
    ["-m", "node", "-T", T["name"], "-p", PORTAL, "-o", "show"],
    ["-m", "discovery", "-t", "fw", "-l"],
    ["-m", "session"],
    ("lio", "disk"),
    # -U skips a firmware record's session (a boot disk); the explicit logout does not
    ["-m", "node", "-U", "all"],
    ["-m", "session"],
    ["-m", "node", "-T", T["name"], "-p", PORTAL, "--logout"],
    ["-m", "node", "-o", "delete"],
    # -m fw -l: the table's target logged in with no record written
    ["-m", "fw", "-l"],
    ["-m", "session"],
    ("lio", "disk"),
    ["-m", "node"],
    ["-m", "session", "-u"],
    ["-m", "session"],
]


def sessions():
    """Each session's names as the kernel shows them (the CHAP files need root)."""
    fs = Sysfs()
    return [{k: fs.attr("iscsi_session", f"session{sid}", k)
             for k in ("targetname", "initiatorname", "username", "username_in")} for sid in fs.session_ids()]


def disk_read():
    """The boot LUN's first MiB, read back through the session's disk (O_DIRECT)."""
    sids = SYSFS.session_ids()
    disk = lio.wait_disk(SYSFS, sids[0]) if sids else None
    if not disk:
        return None
    p = subprocess.run(["dd", f"if=/dev/{disk}", "of=/dev/null", "bs=1M", "count=1", "iflag=direct"],
                       capture_output=True, text=True)
    return {"rc": p.returncode, "sessions": sessions()}


def run_all(cmd):
    """The steps' rows, and what each ("lio", "disk") step read through the session's disk."""
    disks = []
    rows = run_steps(cmd, STEPS, action=lambda _: disks.append(disk_read()))
    return rows, disks


def sh(*argv):
    subprocess.run(argv, check=True, capture_output=True)


report = {}
sh("modprobe", "iscsi_ibft")
try:
    report["sysfs"] = {}
    for root, _, files in os.walk("/sys/firmware/ibft"):
        for f in files:
            path = os.path.join(root, f)
            report["sysfs"][os.path.relpath(path, "/sys/firmware/ibft")] = open(path).read().strip()
    # the boot NIC, found by its MAC as iscsiadm finds it (fwparam_sysfs.c)
    sh("ip", "link", "add", NETDEV, "address", NIC["mac"], "type", "dummy")
    sh("ip", "addr", "add", f"{NIC['address']}/{NIC['prefix']}", "dev", NETDEV)
    sh("ip", "link", "set", NETDEV, "up")
    os.makedirs("/etc/target", exist_ok=True)
    os.makedirs("/var/tmp/lio", exist_ok=True)
    os.makedirs("/run/lock/iscsi", exist_ok=True)
    lio.INITIATOR = FACTS["initiator"]
    lio.clear()
    lio.target(T["name"], "/var/tmp/lio/boot.img", port=T["port"], chap=tuple(T["chap"]),
               mutual=tuple(T["reverse_chap"]))

    lio.reset_db()
    iscsid = lio.start_iscsid()
    try:
        report["open_iscsi"], report["open_iscsi_disks"] = run_all(["iscsiadm"])
    finally:
        subprocess.run(["iscsiadm", "-m", "session", "-u"], capture_output=True)
        iscsid.terminate()
        iscsid.wait(timeout=30)

    lio.reset_db()
    sock = "/run/iscsikit/fw.sock"
    os.environ["ISCSIKIT_SOCKET"] = sock
    ours = lio.start_iscsikitd(sock, "/tmp/iscsikitd-fw.log", "--log-level", "debug")
    try:
        report["iscsikit"], report["iscsikit_disks"] = run_all([f"{VENV}/iscsiadm"])
    finally:
        subprocess.run([f"{VENV}/iscsiadm", "-m", "session", "-u"], capture_output=True)
        ours.terminate()
        ours.wait(timeout=30)
    report["daemon_log"] = open("/tmp/iscsikitd-fw.log").read()[-3000:]
finally:
    lio.reset_db()
    lio.clear()
    subprocess.run(["ip", "link", "del", NETDEV], capture_output=True)
    # the table stays in the firmware; the module that shows it goes, so the other tests see
    # a machine without an iBFT ("Could not get list of targets from firmware")
    subprocess.run(["rmmod", "iscsi_ibft"], capture_output=True)
    time.sleep(0)
print(json.dumps(report))

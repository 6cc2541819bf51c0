"""The lab's own promises, checked against the real guest kernel."""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from iscsikit.lab.guest import Guest
from iscsikit.lab.errors import GuestError


def test_transport_tcp_registers_with_caps_0x39(guest):
    r = guest.run("cat /sys/class/iscsi_transport/tcp/caps", check=True)
    assert r.out.strip() == "0x39"


def test_configfs_target_tree_exists(guest):
    r = guest.run("test -d /sys/kernel/config/target && cat /sys/kernel/config/target/version")
    assert r.rc == 0 and "Target Engine Core" in r.out


def test_netlink_iscsi_socket_opens(guest):
    r = guest.run([sys.executable, "-I", "-S", "-c",
                   "import socket; s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 8); "
                   "s.bind((0, 0)); print(s.getsockname()[0] > 0)"], check=True)
    assert r.out.strip() == "True"


def test_guest_writes_do_not_reach_the_host(guest, tmp_path):
    # tmp_path is on the host root, which the guest sees read-only under its overlay.
    name = f"guest-write-{uuid.uuid4().hex}"
    for where in (tmp_path / name, Path("/tmp") / name, Path(__file__).parent / name):
        guest.run(["sh", "-c", 'echo from-guest > "$1" && cat "$1"', "-", str(where)], check=True)
        assert guest.run(["cat", str(where)]).out == "from-guest\n"
        assert not where.exists(), f"{where} leaked to the host"


def test_guest_sees_host_files(guest, tmp_path):
    probe = tmp_path / "from-host"
    probe.write_text("host data\n")
    assert guest.run(["cat", str(probe)], check=True).out == "host data\n"


def test_rc_stdout_stderr_are_separate(guest):
    r = guest.run("echo to-out; echo to-err >&2; exit 7")
    assert (r.rc, r.out, r.err, r.timed_out) == (7, "to-out\n", "to-err\n", False)


def test_hanging_command_times_out_and_guest_goes_on(guest):
    t0 = time.monotonic()
    r = guest.run("sleep 300", timeout=2)
    assert r.timed_out and not r.ok
    assert time.monotonic() - t0 < 30
    assert guest.run("echo alive").out == "alive\n"


def test_commands_run_concurrently(guest):
    # Each sleeps 3 s; served one after another they would take 12 s or more.
    t0 = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: guest.run(f"sleep 3; echo {i}"), range(4)))
    assert [r.out.strip() for r in results] == ["0", "1", "2", "3"]
    assert time.monotonic() - t0 < 11


def test_guest_modules_are_the_guest_kernels(guest):
    r = guest.run('modinfo -F vermagic iscsi_tcp; uname -r', check=True)
    vermagic, release = r.out.splitlines()
    assert vermagic.split()[0] == release


# ---- the lab as a user meets it: boot failures and interruption ------------

def _qemu_children(pid):
    kids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        if ppid == pid and comm.startswith("qemu-system"):
            kids.append(int(entry.name))
    return kids


def _alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"


def _start_lab_and_find_qemu():
    proc = subprocess.Popen([sys.executable, "-m", "iscsikit.cli.main", "lab"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        kids = _qemu_children(proc.pid)
        if kids:
            return proc, kids[0]
        time.sleep(0.05)
    proc.kill()
    pytest.fail("iscsikit lab did not start QEMU within 60 s")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_interrupting_the_lab_leaves_no_qemu(sig):
    proc, qemu = _start_lab_and_find_qemu()
    time.sleep(1.0)   # mid-boot
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    if sig != signal.SIGKILL:
        assert proc.returncode == 130 and "interrupted" in err
    deadline = time.monotonic() + 10
    while _alive(qemu) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(qemu), f"QEMU {qemu} outlived `iscsikit lab` after signal {sig}"


def test_kernel_that_cannot_boot_is_reported(tmp_path, guest):
    bad = tmp_path / "root"
    ver = guest.kernel.version
    (bad / "boot").mkdir(parents=True)
    (bad / "boot" / f"vmlinuz-{ver}").write_bytes(b"\0" * 4096)
    (bad / "lib" / "modules").mkdir(parents=True)
    os.symlink(guest.kernel.modules, bad / "lib" / "modules" / ver)
    g = Guest(kernel=str(bad), boot_timeout=60)
    with pytest.raises(GuestError) as e:
        g.start()
    g.close()
    assert "QEMU exit" in str(e.value).splitlines()[0] and "console" in str(e.value).splitlines()[0]
    assert g.pid is None or not _alive(g.pid)


def test_agent_that_never_starts_is_reported():
    # The kernel boots, but the agent cannot start: the guest powers off and we say so, with the console.
    g = Guest(extra_append="ik.agent=/nonexistent/agent.py", boot_timeout=120)
    with pytest.raises(GuestError) as e:
        g.start()
    g.close()
    assert "before its agent answered" in str(e.value)
    assert "console.log" in str(e.value)
    assert not _alive(g.pid)


def test_lab_command_runs_the_whole_story():
    """The README's first command: boot, inspect, export, discover, log in, verify, log out, clear."""
    proc = subprocess.run([sys.executable, "-m", "iscsikit.cli.main", "lab", "--json"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    report = json.loads(proc.stdout)
    assert {"name": "tcp", "caps": "0x39"}.items() <= report["facts"]["transports"][0].items()
    assert report["facts"]["configfs_target"] is True
    assert report["facts"]["boot_seconds"] > 0
    assert [s["name"] for s in report["steps"]] == ["kernel", "initramfs", "boot", "modules", "kmod", "inspect",
                                                    "target", "daemon", "discover", "login", "verify", "logout",
                                                    "clear"]
    # .ci/setup built kmod/ for this kernel: the lab loads it
    assert report["facts"]["kmod"] == "loaded", [s["detail"] for s in report["steps"] if s["name"] == "kmod"]
    assert report["facts"]["verified_mib"] == 32 and report["facts"]["disk"].startswith("sd")

"""`iscsikit lab` as a list of named steps, each timed.

A step is a function of the shared `Story` state that returns a one-line
detail for the summary. After booting and inspecting the kernel, the story
exports a disk with iscsikit-target, starts iscsikitd, discovers and logs in
with iscsikit-adm, writes and reads back through the kernel's session, logs
out and clears LIO: each a row in STEPS, all in one guest.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from pathlib import Path
from dataclasses import dataclass, field

from . import initramfs
from .errors import LabError
from .guest import Guest
from .kernel import Kernel, resolve

# What the data plane needs on both sides of a session.
LAB_MODULES = ("configfs", "target_core_mod", "iscsi_target_mod", "target_core_file", "iscsi_tcp", "sd_mod")

# One guest round trip reads everything the summary shows: under TCG every command costs.
INSPECT = r"""
echo "kernel $(uname -r)"
for t in /sys/class/iscsi_transport/*; do
  [ -e "$t" ] && echo "transport $(basename "$t") $(cat "$t/handle") $(cat "$t/caps")"
done
if [ -d /sys/kernel/config/target ]; then
  echo "configfs-target yes $(head -n1 /sys/kernel/config/target/version 2>/dev/null)"
else
  echo "configfs-target no"
fi
"""


@dataclass
class Story:
    kernel_spec: str | None = None
    accel: str | None = None
    init: str = "shell"
    kernel: Kernel | None = None
    guest: Guest | None = None
    facts: dict = field(default_factory=dict)
    timings: list[tuple[str, float, str]] = field(default_factory=list)


def step_kernel(s: Story) -> str:
    s.kernel = resolve(s.kernel_spec)
    return f"{s.kernel.version} ({s.kernel.origin})"


def step_initramfs(s: Story) -> str:
    return initramfs.build(s.kernel).name


def step_boot(s: Story) -> str:
    g = Guest(kernel=s.kernel, init=s.init, **({"accel": s.accel} if s.accel else {}))
    s.guest = g
    g.start()
    s.facts["boot_seconds"] = g.boot_seconds
    s.facts["guest_uptime"] = g.guest_uptime
    return f"agent ready after {g.boot_seconds:.1f} s wall, {g.guest_uptime:.1f} s guest uptime ({g.accel_used})"


def step_modules(s: Story) -> str:
    s.guest.modprobe(*LAB_MODULES)
    return " ".join(LAB_MODULES)


# kmod/'s events module, built by .ci/setup against the lab kernel's headers (kmod/Makefile)
KMOD = Path(__file__).resolve().parents[3] / "kmod" / "iscsikit_lio.ko"


def step_kmod(s: Story) -> str:
    """Load kmod/iscsikit_lio.ko when it was built for this kernel; without it only a warning:
    `iscsikit-target sessions --follow` then polls configfs."""
    if not KMOD.is_file():
        s.facts["kmod"] = "missing"
        return f"warning: {KMOD} not built (run .ci/setup); target events fall back to polling configfs"
    r = s.guest.run(f"grep -q '^iscsikit_lio ' /proc/modules || insmod {shlex.quote(str(KMOD))}", timeout=60)
    if not r.ok:
        s.facts["kmod"] = "refused"
        why = (r.err.strip().splitlines() or ["no message"])[-1]
        return f"warning: {KMOD.name} did not load ({why}); target events fall back to polling configfs"
    s.facts["kmod"] = "loaded"
    return f"{KMOD.name} loaded: target events over generic netlink (iscsikit_lio)"


def step_inspect(s: Story) -> str:
    out = s.guest.run(INSPECT, check=True).out
    transports = []
    for line in out.splitlines():
        key, _, rest = line.partition(" ")
        if key == "kernel":
            s.facts["kernel"] = rest
        elif key == "transport":
            name, handle, caps = rest.split()
            transports.append({"name": name, "handle": handle, "caps": caps})
        elif key == "configfs-target":
            present, _, version = rest.partition(" ")
            s.facts["configfs_target"] = present == "yes"
            s.facts["lio_version"] = version
    s.facts["transports"] = transports
    return f"{len(transports)} transport(s), configfs target {'present' if s.facts.get('configfs_target') else 'MISSING'}"


# ---- the whole story: export a disk, discover, log in, write, read back, log out ----
LAB_IQN = "iqn.2026-11.org.iscsikit.lab:disk0"
LAB_INITIATOR = "iqn.2026-11.org.iscsikit.lab:initiator"
LAB_BACKING = "/var/tmp/iscsikit-lab/disk0.img"
LAB_MIB = 32


def _venv_bin(name: str) -> str:
    import os
    import sys
    return os.path.join(os.path.dirname(sys.executable), name)


def _guest(s: Story, cmd: str, timeout: float = 300.0) -> str:
    return s.guest.run(cmd, check=True, timeout=timeout).out


def step_target(s: Story) -> str:
    """LIO through iscsikit-target, one process for the whole batch (Python starts slowly under TCG)."""
    tpg = f"/iscsi/{LAB_IQN}/tpg1"
    script = "\n".join([
        f"/backstores/fileio create disk0 {LAB_BACKING} {LAB_MIB + 8}M write_back=false",
        f"/iscsi create {LAB_IQN}",
        f"{tpg}/luns create /backstores/fileio/disk0",
        f"{tpg}/acls create {LAB_INITIATOR}",
    ]) + "\n"
    _guest(s, f"mkdir -p /var/tmp/iscsikit-lab /etc/iscsi /etc/target && "
              f"echo InitiatorName={LAB_INITIATOR} > /etc/iscsi/initiatorname.iscsi")
    s.guest.run([_venv_bin("iscsikit-target"), "--save-file", "/var/tmp/iscsikit-lab/saveconfig.json"],
                input=script, check=True, timeout=300)
    return f"{LAB_IQN}: fileio {LAB_MIB + 8} MiB, ACL for {LAB_INITIATOR}, portal 0.0.0.0:3260"


def step_daemon(s: Story) -> str:
    s.guest.spawn([_venv_bin("iscsikitd")], log="/var/tmp/iscsikit-lab/iscsikitd.log")
    _guest(s, "for i in $(seq 300); do [ -S /run/iscsikit/iscsikitd.sock ] && exit 0; sleep 0.1; done; exit 1")
    return "iscsikitd serving /run/iscsikit/iscsikitd.sock"


def step_discover(s: Story) -> str:
    out = _guest(s, f"{_venv_bin('iscsikit-adm')} -m discovery -t st -p 127.0.0.1").strip()
    if LAB_IQN not in out:
        raise LabError(f"discovery did not find {LAB_IQN} (got {out!r})", "see the target step")
    return out.splitlines()[0]


def step_login(s: Story) -> str:
    _guest(s, f"{_venv_bin('iscsikit-adm')} -m node -T {LAB_IQN} -p 127.0.0.1 --login")
    disk = _guest(s, f"for i in $(seq 100); do d=$({_venv_bin('iscsikit-adm')} -m session -P 3 | "
                     "awk '/Attached scsi disk/{print $4; exit}'); "
                     "[ -n \"$d\" ] && [ -b /dev/$d ] && echo $d && exit 0; sleep 0.2; done; exit 1").strip()
    s.facts["disk"] = disk
    return f"session up, /dev/{disk}"


def step_verify(s: Story) -> str:
    disk = s.facts["disk"]
    _guest(s, f"head -c {LAB_MIB}M /dev/urandom > /tmp/lab-pattern && "
              f"dd if=/tmp/lab-pattern of=/dev/{disk} bs=1M oflag=direct status=none && "
              f"dd if=/dev/{disk} of=/tmp/lab-back bs=1M count={LAB_MIB} iflag=direct status=none && "
              f"cmp /tmp/lab-pattern /tmp/lab-back && cmp -n {LAB_MIB << 20} /tmp/lab-pattern {LAB_BACKING}")
    s.facts["verified_mib"] = LAB_MIB
    return f"{LAB_MIB} MiB written with O_DIRECT, read back and found in the backing file: identical"


def step_logout(s: Story) -> str:
    _guest(s, f"{_venv_bin('iscsikit-adm')} -m node -T {LAB_IQN} -p 127.0.0.1 --logout")
    _guest(s, "for i in $(seq 100); do [ -z \"$(ls /sys/class/iscsi_session)\" ] && exit 0; sleep 0.1; done; exit 1")
    return "session and disk gone"


def step_clear(s: Story) -> str:
    s.guest.run([_venv_bin("iscsikit-target"), "--save-file", "/var/tmp/iscsikit-lab/saveconfig.json"],
                input="clearconfig confirm=true\n", check=True, timeout=300)
    _guest(s, "pkill -TERM -x iscsikitd || true")
    return "LIO cleared, daemon stopped"


STEPS: list[tuple[str, Callable[[Story], str]]] = [
    ("kernel", step_kernel),
    ("initramfs", step_initramfs),
    ("boot", step_boot),
    ("modules", step_modules),
    ("kmod", step_kmod),
    ("inspect", step_inspect),
    ("target", step_target),
    ("daemon", step_daemon),
    ("discover", step_discover),
    ("login", step_login),
    ("verify", step_verify),
    ("logout", step_logout),
    ("clear", step_clear),
]


def run(story: Story, steps=STEPS, progress: Callable[[str, float, str], None] | None = None) -> Story:
    """Run the steps in order; the guest is always stopped, whatever happens."""
    try:
        for name, func in steps:
            t0 = time.monotonic()
            detail = func(story)
            took = time.monotonic() - t0
            story.timings.append((name, took, detail))
            if progress:
                progress(name, took, detail)
    finally:
        if story.guest is not None:
            story.guest.close()
    return story

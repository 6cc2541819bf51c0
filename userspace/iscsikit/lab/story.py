"""`iscsikit lab` as a list of named steps, each timed.

A step is a function of the shared `Story` state that returns a one-line
detail for the summary. Later stories (export a disk, log in, write, read
back, log out) are more rows in STEPS, not more code paths.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from . import initramfs
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
  echo "configfs-target yes $(head -n1 /sys/kernel/config/target/version 2>/dev/null | tr ' ' '_')"
else
  echo "configfs-target no"
fi
"""


@dataclass
class Story:
    kernel_spec: str | None = None
    accel: str | None = None
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
    g = Guest(kernel=s.kernel, **({"accel": s.accel} if s.accel else {}))
    s.guest = g
    g.start()
    s.facts["boot_seconds"] = g.boot_seconds
    s.facts["guest_uptime"] = g.guest_uptime
    return f"agent ready after {g.boot_seconds:.1f} s wall, {g.guest_uptime:.1f} s guest uptime ({g.accel_used})"


def step_modules(s: Story) -> str:
    s.guest.modprobe(*LAB_MODULES)
    return " ".join(LAB_MODULES)


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
            s.facts["lio_version"] = version.replace("_", " ")
    s.facts["transports"] = transports
    return f"{len(transports)} transport(s), configfs target {'present' if s.facts.get('configfs_target') else 'MISSING'}"


STEPS: list[tuple[str, Callable[[Story], str]]] = [
    ("kernel", step_kernel),
    ("initramfs", step_initramfs),
    ("boot", step_boot),
    ("modules", step_modules),
    ("inspect", step_inspect),
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

"""The guest's initramfs: busybox-static and the few modules that reach the host's root.

It is built once per kernel (and per version of the init script) and cached.
Its /init mounts the host's root read-only over 9p, lays a tmpfs overlay on it
so the guest can write without touching the host (or, with `ik.upper=disk`, an overlay
whose upper layer is the ext4 disk the host hands the guest, so that a reboot into a new
QEMU finds what the first boot wrote: Guest(root_disk=True).reboot()), binds the guest kernel's
modules over /lib/modules/<version> (with a tmpfs overlay of their own, so DKMS
can add a module and depmod can index it), and switch_roots into the agent
(`agent.py`) with which the host runs commands: PID 1 is then a shell, or with
`ik.init=systemd` systemd itself, which starts the agent as a unit.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from . import cache
from .errors import LabError
from .kernel import Kernel

# What /init needs before the host's root is reachable: virtio transport, 9p,
# overlayfs, and the virtio console the agent talks on.
BOOT_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay", "virtio_console")
# The upper layer on a disk (ik.upper=disk): virtio's block driver and ext4, loaded only then
DISK_MODULES = ("virtio_blk", "ext4")
# the disk as the guest sees it: the first virtio block device (-drive if=virtio)
DISK_DEVICE = "/dev/vda"
BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")

# Where /init mounts a filesystem of its own over the host's root (besides the guest kernel's
# /lib/modules/<version>): what the guest runs from the host (its Python, the agent, a
# checkout and its venv) must lie elsewhere, or the guest cannot see it. guest.py refuses such
# a path; tests/unit/test_lab_initramfs.py keeps this list and the script's mounts equal.
COVERED = ("/proc", "/sys", "/dev", "/run")

# Tags QEMU's -virtfs exports go under; guest.py and /init must agree.
ROOT_TAG = "ikroot"
SHARE_TAG = "ikshare"
# the agent's unit under ik.init=systemd (only in the guest's overlay; guest.py reads its failure)
AGENT_UNIT = "iscsikit-lab-agent.service"

INIT = r"""#!/bin/sh
# iscsikit lab /init: host root over 9p, tmpfs overlay, then the agent.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
die() { echo "iscsikit-init: $*" > /dev/console; echo o > /proc/sysrq-trigger; sleep 60; }
while read -r m; do insmod "/mods/$m" || die "insmod $m failed"; done < /mods/order
for a in $(cat /proc/cmdline); do
  case "$a" in
    ik.modules=*) hostmods="${a#ik.modules=}" ;;
    ik.python=*) python="${a#ik.python=}" ;;
    ik.agent=*) agent="${a#ik.agent=}" ;;
    ik.share=*) share="${a#ik.share=}" ;;
    ik.init=*) init="${a#ik.init=}" ;;
    ik.mask=*) masks="${a#ik.mask=}" ;;
    ik.upper=*) upper="${a#ik.upper=}" ;;
  esac
done
kver=$(uname -r)
mkdir -p /lower /up /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose @ROOT_TAG@ /lower || die "cannot mount the host root over 9p"
if [ "$upper" = disk ]; then
  # the same upper layer on every boot of this Guest: the host made the filesystem, this boot
  # may be its first or a reboot's (then u/ holds what the last one wrote)
  while read -r m; do insmod "/mods/$m" || die "insmod $m failed"; done < /mods/disk-order
  n=0
  while [ ! -b @DISK@ ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
  mount -t ext4 @DISK@ /up || die "cannot mount the root disk @DISK@"
  mkdir -p /up/u /up/w
else
  mount -t tmpfs -o mode=0755 tmpfs /up && mkdir /up/u /up/w
fi
mount -t overlay -o lowerdir=/lower,upperdir=/up/u,workdir=/up/w overlay /newroot || die "cannot mount the overlay"
mkdir -p "/newroot/lib/modules/$kver" /up/mu /up/mw
mount -t overlay -o "lowerdir=/lower$hostmods,upperdir=/up/mu,workdir=/up/mw" overlay "/newroot/lib/modules/$kver" || die "cannot lay the guest modules from $hostmods"
if [ "$init" = systemd ]; then
  # systemd-tmpfiles --boot --remove empties /tmp (tmpfiles.d/tmp.conf's "D /tmp"): on the
  # overlay that is a whiteout for every file the host has there (minutes under TCG), and it
  # would hide what the guest runs from the host when that lives under /tmp (a checkout, its
  # venv, pytest's folders). /tmp stays the host's, as under the shell init: the rule is
  # switched off in the overlay's /etc (no tmpfs over /tmp either, see COVERED)
  mkdir -p /newroot/etc/tmpfiles.d && ln -sf /dev/null /newroot/etc/tmpfiles.d/tmp.conf || die "cannot keep /tmp"
fi
if [ -n "$share" ]; then
  mkdir -p "/newroot$share"
  mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 @SHARE_TAG@ "/newroot$share" || die "cannot mount the share"
fi
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
mount --move /dev /newroot/dev
mount -t tmpfs -o mode=0755 tmpfs /newroot/run
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts
mount -t tmpfs tmpfs /newroot/dev/shm
ip link set lo up
hostname iscsikit-lab
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
cd /
if [ "$init" = systemd ]; then
  # systemd as PID 1 on the overlay root; the agent is a unit, started once multi-user.target is
  # reached (the boot's jobs are done); the unit lives in the overlay only, never on the host
  # a host that is itself a container has /.dockerenv: systemd would then take the guest for
  # one and ignore the kernel's command line (systemd.unit=, journald's forward_to_console);
  # and its policy-rc.d (exit 101) would stop every maintainer script from starting or
  # stopping a unit: the guest is a real boot, so neither is kept in its overlay
  rm -f /newroot/.dockerenv /newroot/run/.containerenv /newroot/usr/sbin/policy-rc.d
  units=/newroot/etc/systemd/system
  mkdir -p "$units/multi-user.target.wants"
  # the units the host names in ik.mask= (comma-separated) are masked in the overlay's /etc
  IFS=,
  for u in $masks; do ln -sf /dev/null "$units/$u"; done
  unset IFS
  # the generators make units from the host's /etc/fstab, init.d scripts, its databases' ...
  # on every boot and daemon-reload (seconds each under TCG); the lab needs none of them
  mkdir -p /newroot/etc/systemd/system-generators
  for g in /newroot/lib/systemd/system-generators/* /newroot/usr/lib/systemd/system-generators/*; do
    if [ -e "$g" ]; then ln -sf /dev/null "/newroot/etc/systemd/system-generators/${g##*/}"; fi
  done
  printf '%s\n' '[Unit]' "Description=iscsikit lab agent: runs the host's commands" 'After=multi-user.target' \
    '[Service]' 'Environment=HOME=/root LANG=C.UTF-8' "ExecStart=$python -I -S $agent" \
    > "$units/@AGENT_UNIT@"
  ln -sf ../@AGENT_UNIT@ "$units/multi-user.target.wants/@AGENT_UNIT@"
  exec switch_root /newroot /lib/systemd/systemd
fi
# PID 1 stays a shell so that orphans are reaped; when the agent goes, the guest powers off.
exec switch_root /newroot /bin/sh -c '"$0" -I -S "$1"; echo o > /proc/sysrq-trigger; sleep 60' "$python" "$agent"
""".replace("@ROOT_TAG@", ROOT_TAG).replace("@SHARE_TAG@", SHARE_TAG).replace("@AGENT_UNIT@", AGENT_UNIT).replace("@DISK@", DISK_DEVICE)


def covered(path: str | os.PathLike) -> str | None:
    """The mount point of COVERED under which `path` lies in the guest, or None."""
    p = os.path.normpath(os.path.abspath(path))
    for top in COVERED:
        if p == top or p.startswith(top + "/"):
            return top
    return None


def _busybox() -> str:
    for cand in BUSYBOX_CANDIDATES:
        if os.path.isfile(cand):
            return cand
    raise LabError("busybox not found", "install Debian's busybox-static package")


def _module_files(kernel: Kernel, wanted: tuple[str, ...] = BOOT_MODULES, skip: tuple[Path, ...] = ()) -> list[Path]:
    """The .ko files of `wanted` and their dependencies, in load order, each once (none of `skip`)."""
    if shutil.which("modprobe") is None:
        raise LabError("modprobe not found (needed to order the guest's boot modules)", "install Debian's kmod package")
    ordered: list[Path] = []
    for mod in wanted:
        proc = subprocess.run(
            ["modprobe", "-d", str(kernel.root), "-S", kernel.version, "--show-depends", mod],
            capture_output=True, text=True,
        )
        if proc.returncode != 0:
            raise LabError(f"kernel {kernel.version} has no module {mod} ({proc.stderr.strip()})",
                           "use a kernel built with 9p, virtio and overlayfs as modules or built in")
        for line in proc.stdout.splitlines():
            parts = line.split()
            if parts[:1] == ["insmod"]:
                path = Path(parts[1])
                if path not in ordered and path not in skip:
                    ordered.append(path)
    return ordered


def _key(kernel: Kernel, modules: list[Path], busybox: str) -> str:
    h = hashlib.sha256(INIT.encode())
    h.update(str(os.stat(busybox).st_size).encode())
    for m in modules:
        h.update(m.name.encode())
    return h.hexdigest()[:12]


def _write_tree(tree: Path, modules: list[Path], busybox: str, disk_modules: list[Path]) -> None:
    for d in ("bin", "proc", "sys", "dev", "mods"):
        (tree / d).mkdir()
    shutil.copy2(busybox, tree / "bin" / "busybox")
    for applet in ("sh", "mount", "insmod", "mkdir", "cat", "echo", "sleep", "switch_root", "ip", "hostname", "uname", "ln", "printf", "rm"):
        os.symlink("busybox", tree / "bin" / applet)
    for order, mods in (("order", modules), ("disk-order", disk_modules)):
        names = []
        for m in mods:
            name = m.name
            if name.endswith((".xz", ".zst", ".gz")):
                raise LabError(f"module {m} is compressed; busybox insmod wants plain .ko", "use a kernel with uncompressed modules")
            shutil.copy2(m, tree / "mods" / name)
            names.append(name)
        (tree / "mods" / order).write_text("".join(n + "\n" for n in names))
    init = tree / "init"
    init.write_text(INIT)
    init.chmod(0o755)


def build(kernel: Kernel, cache_dir: Path | None = None) -> Path:
    """Return the cached initramfs for `kernel`, building it first if needed."""
    busybox = _busybox()
    modules = _module_files(kernel)
    disk_modules = _module_files(kernel, DISK_MODULES, skip=tuple(modules))
    folder = (cache_dir or cache.cache_root()) / "initramfs"
    final = folder / f"{kernel.version}-{_key(kernel, modules + disk_modules, busybox)}.cpio.gz"
    if final.is_file():
        return final
    if shutil.which("cpio") is None:
        raise LabError("cpio not found (needed to build the guest's initramfs)", "install Debian's cpio package")
    cache.sweep_stale(folder)
    cache.ensure_space(folder, 50, "the guest's initramfs")
    with tempfile.TemporaryDirectory(prefix=cache.TMP_PREFIX, dir=folder) as scratch:
        tree = Path(scratch)
        _write_tree(tree, modules, busybox, disk_modules)
        names = sorted(str(p.relative_to(tree)) for p in tree.rglob("*"))
        proc = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=tree,
                              input="\n".join(names).encode(), capture_output=True)
    if proc.returncode != 0:
        raise LabError(f"cpio failed: {proc.stderr.decode(errors='replace').strip()}", "check the cpio package")
    with cache.building(final, is_dir=False) as tmp:
        with gzip.open(tmp, "wb", compresslevel=6) as f:
            f.write(proc.stdout)
    return final

"""The guest's /init hides no host path the guest runs from (issue 18: a checkout under /tmp
booted under systemd, whose /init then put a tmpfs on /tmp, and the agent's unit failed with
"Failed to locate executable" while the host waited 240 s)."""

import re
import sys
from pathlib import Path

import pytest

from iscsikit.lab import initramfs
from iscsikit.lab.errors import LabError
from iscsikit.lab.guest import LAB_MASKED, Guest


def mount_targets(script: str) -> list[str]:
    """Where each `mount` of the init script puts a filesystem in the new root (its last path)."""
    targets = []
    for line in script.splitlines():
        for cmd in re.split(r"&&|\|\|", line):
            words = cmd.split()
            if words[:1] == ["mount"]:
                paths = [w.strip('"') for w in words if w.strip('"').startswith("/newroot")]
                if paths:
                    targets.append(paths[-1])
    return targets


def test_every_mount_over_the_host_root_is_a_covered_folder():
    targets = mount_targets(initramfs.INIT)
    assert "/newroot/run" in targets and "/newroot/proc" in targets   # the parser sees the script's mounts
    for t in targets:
        inside = t[len("/newroot"):]
        if inside in ("", "$share", '/lib/modules/$kver'):
            continue      # the overlay root itself, the share at its own path, the guest kernel's modules
        assert initramfs.covered(inside), f"/init mounts over {inside}, which COVERED does not name"


@pytest.mark.parametrize("path", ["/tmp/X/checkout/.venv/bin/python", "/var/tmp/ck/.venv/bin/python",
                                  "/opt/ck/.venv/bin/python"])
def test_a_checkout_anywhere_but_under_a_covered_folder_is_visible(path):
    assert initramfs.covered(path) is None


def test_a_python_under_a_covered_folder_is_refused_before_boot(monkeypatch):
    monkeypatch.setattr(sys, "executable", "/run/venv/bin/python")
    with pytest.raises(LabError) as e:
        Guest._check_visible(Path("/opt/ck/agent.py"))
    assert "/run/venv/bin/python lies under /run" in str(e.value)
    with pytest.raises(LabError):
        Guest._check_visible(Path("/dev/shm/agent.py"))


def test_the_systemd_guest_keeps_the_hosts_tmp():
    # tmpfiles.d's "D /tmp" would empty it (whiteouts of the host's files) and tmp.mount hide it
    assert "ln -sf /dev/null /newroot/etc/tmpfiles.d/tmp.conf" in initramfs.INIT
    assert "tmp.mount" in LAB_MASKED


def test_a_failed_agent_unit_is_reported_from_the_console(tmp_path):
    g = Guest(init="systemd")
    g._workdir = tmp_path
    log = tmp_path / "console.log"
    log.write_text("[ 24.5] systemd[1]: Started iscsikit-lab-agent.service - iscsikit lab agent.\n")
    assert g._agent_unit_failed() == ""
    log.write_text(log.read_text() +
                   "[ 24.8] (python)[222]: iscsikit-lab-agent.service: Failed to locate executable /tmp/c/.venv/bin/python: No such file or directory\n"
                   "[ 24.9] systemd[1]: iscsikit-lab-agent.service: Failed with result 'exit-code'.\n")
    assert "Failed to locate executable /tmp/c/.venv/bin/python" in g._agent_unit_failed()
    assert Guest(init="shell")._agent_unit_failed() == ""


# ---- Guest(root_disk=True): the upper layer on a disk, so that reboot() finds the same root ----

def _kernel(tmp_path):
    from iscsikit.lab.kernel import Kernel
    return Kernel(version="6.1.0-0-amd64", image=tmp_path / "vmlinuz", modules=tmp_path / "lib/modules/6.1.0-0-amd64",
                  origin="path")


def test_root_disk_is_an_ext4_image_the_guest_boots_on(tmp_path):
    g = Guest(init="systemd", root_disk=True, root_disk_mb=64)
    g._workdir = tmp_path
    g._make_root_disk()
    image = tmp_path / "root.img"
    assert image.stat().st_size == 64 << 20
    assert image.stat().st_blocks * 512 < image.stat().st_size     # sparse
    sb = image.read_bytes()[1024:1024 + 0x78]
    assert sb[0x38:0x3A] == b"\x53\xef"                           # ext2/3/4's s_magic (0xEF53)
    argv = g._argv(_kernel(tmp_path), tmp_path / "initrd", tmp_path / "agent.sock")
    append = argv[argv.index("-append") + 1].split()
    assert "ik.upper=disk" in append
    assert f"file={image},format=raw,if=virtio,cache=unsafe" in argv
    plain = Guest(init="systemd")
    plain._workdir = tmp_path
    argv = plain._argv(_kernel(tmp_path), tmp_path / "initrd", tmp_path / "agent.sock")
    assert "ik.upper=disk" not in argv[argv.index("-append") + 1] and "-drive" not in argv


def test_the_init_mounts_the_disk_as_upper_layer_only_when_asked():
    script = initramfs.INIT
    disk = script.index('if [ "$upper" = disk ]')
    assert script.index("/mods/disk-order", disk) < script.index(f"mount -t ext4 {initramfs.DISK_DEVICE} /up", disk)
    assert script.index("mount -t tmpfs -o mode=0755 tmpfs /up", disk) > disk     # the else branch
    # the guest kernel's modules' upper layer (where DKMS puts a module) lies on /up too
    assert "upperdir=/up/mu" in script


def test_reboot_is_refused_where_it_would_lose_the_guests_writes():
    from iscsikit.lab.errors import GuestError
    with pytest.raises(GuestError, match="tmpfs"):
        Guest(init="systemd").reboot()
    with pytest.raises(GuestError, match="systemd"):
        Guest(init="shell", root_disk=True).reboot()

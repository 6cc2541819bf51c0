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

"""One guest per test session, shared by every vm test.

Tests leave the guest as they found it (unload nothing, but tear down the
targets, sessions and processes they made), so that one boot serves them all.
"""

import os
from pathlib import Path

import pytest

from iscsikit.lab import story
from iscsikit.lab.guest import Guest
from iscsikit.lab.errors import GuestCommandError

# What the lab story loads on both sides of a session, and iblock for block backstores.
LAB_MODULES = story.LAB_MODULES + ("target_core_iblock",)


@pytest.fixture(scope="session")
def guest():
    with Guest(kernel=os.environ.get("ISCSIKIT_LAB_KERNEL")) as g:
        g.modprobe(*LAB_MODULES)
        yield g


PROBES = Path(__file__).parent / "probes"


@pytest.fixture(scope="session")
def run_probe(guest):
    """run_probe(name): run probes/<name> in the guest (one Python start for many checks); its JSON report."""
    def run(name: str, timeout: float = 900) -> dict:
        try:
            return guest.run_probe(PROBES / name, timeout=timeout)
        except GuestCommandError as e:
            pytest.fail(e.result.err[-4000:])
    return run


@pytest.fixture(scope="module")
def soft_roce(guest):
    """Soft-RoCE up in the shared guest (rxe on a guest-only veth pair, 192.0.2.0/24) for one
    test module, and down after it: the multipath story routes 192.0.2.0/24 its own way;
    the test fails with lab/soft_roce.py's one line when the kernel lacks a module."""
    from iscsikit.lab import soft_roce as sr
    from iscsikit.lab.errors import LabError
    try:
        link = sr.up(guest)
    except LabError as e:
        pytest.fail(str(e))
    yield link
    sr.down(guest, link)

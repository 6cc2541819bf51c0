"""One guest per test session, shared by every vm test.

Tests leave the guest as they found it (unload nothing, but tear down the
targets, sessions and processes they made), so that one boot serves them all.
"""

import json
import os
import sys
from pathlib import Path

import pytest

from iscsikit.lab import story
from iscsikit.lab.guest import Guest

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
        r = guest.run([sys.executable, str(PROBES / name)], timeout=timeout)
        assert r.rc == 0, r.err[-4000:]
        return json.loads(r.out.strip().splitlines()[-1])
    return run

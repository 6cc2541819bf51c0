"""One guest per test session, shared by every vm test.

Tests leave the guest as they found it (unload nothing, but tear down the
targets, sessions and processes they made), so that one boot serves them all.
"""

import os
from pathlib import Path

import pytest

import ibft_table
from iscsikit.lab import story
from iscsikit.lab.guest import Guest
from iscsikit.lab.errors import GuestCommandError

# The boot firmware's table: initiator name, boot NIC, boot target (LIO in the guest, mutual CHAP)
BOOT_TABLE = ("iqn.2026-12.org.iscsikit.test:boot-initiator",
              ibft_table.BootNic("192.0.2.71", 24, "02:1b:f7:00:00:71", gateway="192.0.2.1"),
              ibft_table.BootTarget("iqn.2026-12.org.iscsikit.test:boot", "127.0.0.1", 3260, 0,
                                    chap=("bootuser", "boot-secret-1234"),
                                    reverse_chap=("boottarget", "boot-mutual-5678")))

# What the lab story loads on both sides of a session, and iblock for block backstores.
LAB_MODULES = story.LAB_MODULES + ("target_core_iblock",)


@pytest.fixture(scope="session")
def guest(tmp_path_factory):
    # the firmware leaves an iBFT, as an iSCSI boot ROM would; it shows only once a test loads
    # iscsi_ibft (test_fw_ibft.py), and is gone again after it
    table = tmp_path_factory.mktemp("firmware") / "ibft.bin"
    table.write_bytes(ibft_table.build(*BOOT_TABLE))
    with Guest(kernel=os.environ.get("ISCSIKIT_LAB_KERNEL"), acpi_tables=(str(table),)) as g:
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

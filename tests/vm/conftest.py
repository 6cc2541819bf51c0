"""One guest per test session, shared by every vm test.

Tests leave the guest as they found it (unload nothing, but tear down the
targets, sessions and processes they made), so that one boot serves them all.
"""

import os

import pytest

from iscsikit.lab.guest import Guest

# Everything the iSCSI tests need on both sides of a session in one guest.
LAB_MODULES = ("configfs", "target_core_mod", "iscsi_target_mod", "target_core_file",
               "target_core_iblock", "iscsi_tcp", "sd_mod")


@pytest.fixture(scope="session")
def guest():
    with Guest(kernel=os.environ.get("ISCSIKIT_LAB_KERNEL")) as g:
        g.modprobe(*LAB_MODULES)
        yield g

"""lab/soft_roce.py's errors: one line naming what the guest lacks (the guest's script is
the real one; only the guest answering it is a stand-in)."""

import pytest

from iscsikit.lab import soft_roce
from iscsikit.lab.errors import LabError


class Result:
    def __init__(self, rc, out="", err=""):
        self.rc, self.out, self.err = rc, out, err


class Guest:
    def __init__(self, result):
        self.result, self.scripts = result, []

    def run(self, script, timeout):
        self.scripts.append(script)
        return self.result


def test_a_missing_module_is_named_in_one_line():
    with pytest.raises(LabError) as e:
        soft_roce.up(Guest(Result(3, "missing-module rdma_rxe\n")))
    assert "no rdma_rxe module" in str(e.value) and "\n" not in str(e.value)


def test_a_missing_rdma_command_names_iproute2():
    with pytest.raises(LabError, match="iproute2"):
        soft_roce.up(Guest(Result(4, "missing-rdma\n")))


def test_up_checks_both_rxe_devices_and_uses_documentation_addresses():
    ok = "link rxe_isr0/1 state ACTIVE physical_state LINK_UP netdev isr0\n" \
         "link rxe_isr1/1 state ACTIVE physical_state LINK_UP netdev isr1\n"
    g = Guest(Result(0, ok))
    link = soft_roce.up(g)
    assert (link.initiator_address, link.target_address) == ("192.0.2.1", "192.0.2.2")
    assert "rdma link add" in g.scripts[0] and "type veth" in g.scripts[0]
    with pytest.raises(LabError, match="no rxe device on isr1"):
        soft_roce.up(Guest(Result(0, ok.splitlines()[0])))

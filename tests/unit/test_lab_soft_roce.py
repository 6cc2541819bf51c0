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


ROUTE = "route: 192.0.2.2 dev isr0 table 100 src 192.0.2.1 uid 0\n"
RXE = "link rxe_isr0/1 state ACTIVE physical_state LINK_UP netdev isr0\n" \
      "link rxe_isr1/1 state ACTIVE physical_state LINK_UP netdev isr1\n"


def test_up_checks_both_rxe_devices_and_uses_documentation_addresses():
    g = Guest(Result(0, ROUTE + RXE))
    link = soft_roce.up(g)
    assert (link.initiator_address, link.target_address) == ("192.0.2.1", "192.0.2.2")
    assert "rdma link add" in g.scripts[0] and "type veth" in g.scripts[0]
    with pytest.raises(LabError, match="no rxe device on isr1"):
        soft_roce.up(Guest(Result(0, ROUTE + RXE.splitlines()[0])))


def test_up_refuses_a_target_address_that_is_not_routed_over_the_wire():
    # the kernel's default for an address of its own: the local table, through lo
    with pytest.raises(LabError, match="not routed over isr0.*local 192.0.2.2 dev lo") as e:
        soft_roce.up(Guest(Result(0, "route: local 192.0.2.2 dev lo table local src 192.0.2.2 uid 0\n" + RXE)))
    assert "\n" not in str(e.value)


def test_the_wire_cut_drops_both_ways_and_is_mended_on_both_ends():
    link = soft_roce.Link()
    cut, mend = link.cut_command(), link.mend_command()
    assert "dev isr0 root netem loss 100%" in cut and "dev isr1 root netem loss 100%" in cut
    assert "tc qdisc del dev isr0 root" in mend and "tc qdisc del dev isr1 root" in mend

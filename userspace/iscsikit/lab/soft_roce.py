"""Soft-RoCE in the guest: rdma_rxe on a veth pair that exists only there, for iSER.

Debian's 6.1 kernel ships rdma_rxe, ib_iser and ib_isert as modules, and
iproute2 (Debian 12: 6.1) has the `rdma` command that makes an rxe device on a
netdev (`rdma link add NAME type rxe netdev DEV`; the rdma_rxe module's old
`add` parameter is gone in 6.1). The pair carries 192.0.2.1 and 192.0.2.2
(RFC 5737 documentation addresses); both ends stay in the guest.

Both addresses are the guest's own, and the kernel routes a packet to its own address
through the local table, so by default rdma_cm would bind both ends of a connection to
the rxe device that owns the target address and rxe would loop every packet back inside
itself (rxe_net.c marks a packet whose destination MAC is the device's own as loopback):
nothing would cross the veth, and no cut of the wire could be made. So up() routes each
address over the wire, the way two hosts on one cable would be:
- the local table's rule moves from priority 0 to 1000, and rules 10 and 11 send
  locally made packets for 192.0.2.2 out of isr0 and for 192.0.2.1 out of isr1
  (ip-rule(8); `iif lo` matches only packets this host makes, so what arrives on the
  pair is still delivered locally);
- each side's neighbour entry for the other's address is the peer's MAC, permanent;
- accept_local on both ends, so a packet whose source is one of the guest's own
  addresses is taken (fib_validate_source, net/ipv4/fib_frontend.c).
rdma_cm then resolves 192.0.2.2 through isr0: the initiator's connection is on
rxe_isr0, the target's on rxe_isr1, and every RoCEv2 packet (UDP 4791) crosses the veth.

`Link.cut_command()` cuts that wire: netem drops every packet both ways, the carrier and
both rxe ports stay up, as when a switch between two hosts stops forwarding. Taking a netdev
itself down (`down_command()`) is another fault: in 6.1 the rxe device whose link went
down under open RDMA connections stops receiving on its GSI QP (CM REQs counted as
sent, never as received), so no new RDMA connection is made through it until
`reset_command()` makes the device again (bench/results/iser.md, "The rxe link cut").

    with Guest() as g:
        link = soft_roce.up(g)          # LabError, one line, when the kernel lacks a module
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from .errors import LabError

MODULES = ("rdma_rxe", "ib_iser", "ib_isert", "veth", "sch_netem")
INITIATOR_NETDEV, TARGET_NETDEV = "isr0", "isr1"
INITIATOR_ADDRESS, TARGET_ADDRESS = "192.0.2.1", "192.0.2.2"
PREFIX = 24
# ip-rule(8) priorities: the local table's new place, and the two wire rules before it
LOCAL_RULE, WIRE_RULES = 1000, (10, 11)
WIRE_TABLES = (100, 101)


@dataclass(frozen=True)
class Link:
    initiator_netdev: str = INITIATOR_NETDEV
    target_netdev: str = TARGET_NETDEV
    initiator_address: str = INITIATOR_ADDRESS
    target_address: str = TARGET_ADDRESS

    def cut_command(self) -> str:
        """Cut the wire between the two rxe ports: every packet dropped both ways (netem)."""
        return " && ".join(f"tc qdisc add dev {shlex.quote(d)} root netem loss 100%"
                           for d in (self.initiator_netdev, self.target_netdev))

    def mend_command(self) -> str:
        return "; ".join(f"tc qdisc del dev {shlex.quote(d)} root 2>/dev/null"
                         for d in (self.initiator_netdev, self.target_netdev)) + "; true"

    def down_command(self) -> str:
        """The target's netdev itself down, its rxe port with it."""
        return f"ip link set {shlex.quote(self.target_netdev)} down"

    def up_command(self) -> str:
        """The target's netdev up again, and its wire route and neighbour entry with it: the
        kernel drops the routes and neighbours of a device that goes down."""
        return f"ip link set {shlex.quote(self.target_netdev)} up && {self.wire_command()}"

    def wire_command(self) -> str:
        """The routes and neighbour entries that send each address over the veth (the rules
        that pick these tables are made once, by up())."""
        q = shlex.quote
        i, t = q(self.initiator_netdev), q(self.target_netdev)
        return " && ".join((
            f"ip route replace {self.target_address} dev {i} src {self.initiator_address} table {WIRE_TABLES[0]}",
            f"ip route replace {self.initiator_address} dev {t} src {self.target_address} table {WIRE_TABLES[1]}",
            f'ip neigh replace {self.target_address} lladdr "$(cat /sys/class/net/{t}/address)" dev {i} nud permanent',
            f'ip neigh replace {self.initiator_address} lladdr "$(cat /sys/class/net/{i}/address)" dev {t} nud permanent'))

    def reset_command(self) -> str:
        """Delete and add the target side's rxe device again (what 6.1 needs after its netdev
        went down under open RDMA connections before new ones work again; ib_isert listens
        on the new one by itself)."""
        dev = shlex.quote(self.target_netdev)
        return f"rdma link delete rxe_{dev} && rdma link add rxe_{dev} type rxe netdev {dev}"


def _script(link: Link) -> str:
    q = shlex.quote
    return f"""
set -e
for m in {' '.join(MODULES)}; do
  modprobe "$m" 2>/dev/null || {{ echo "missing-module $m"; exit 3; }}
done
command -v rdma >/dev/null || {{ echo "missing-rdma"; exit 4; }}
ip link set lo up
if ! ip link show {q(link.initiator_netdev)} >/dev/null 2>&1; then
  ip link add {q(link.initiator_netdev)} type veth peer name {q(link.target_netdev)}
  ip addr add {link.initiator_address}/{PREFIX} dev {q(link.initiator_netdev)}
  ip addr add {link.target_address}/{PREFIX} dev {q(link.target_netdev)}
fi
ip link set {q(link.initiator_netdev)} up
ip link set {q(link.target_netdev)} up
for dev in {q(link.initiator_netdev)} {q(link.target_netdev)}; do
  rdma link show | grep -q "netdev $dev\\b" || rdma link add "rxe_$dev" type rxe netdev "$dev"
  sysctl -qw "net.ipv4.conf.$dev.accept_local=1"
done
# over the wire (the module's docstring): the local table after the wire rules; add the
# new rule before the old one goes, so there is never a moment without one
ip rule show pref {LOCAL_RULE} | grep -q . || ip rule add pref {LOCAL_RULE} table local
ip rule show pref 0 | grep -q "lookup local" && ip rule del pref 0 table local
ip rule show pref {WIRE_RULES[0]} | grep -q . || ip rule add pref {WIRE_RULES[0]} to {link.target_address} iif lo table {WIRE_TABLES[0]}
ip rule show pref {WIRE_RULES[1]} | grep -q . || ip rule add pref {WIRE_RULES[1]} to {link.initiator_address} iif lo table {WIRE_TABLES[1]}
{link.wire_command()}
echo "route: $(ip route get {link.target_address})"
rdma link show
"""


def up(guest, link: Link = Link()) -> Link:
    """Bring soft-RoCE up in `guest` (idempotent); LabError naming the cause when it cannot."""
    r = guest.run(_script(link), timeout=120)
    out = r.out
    if r.rc == 3:
        module = out.split("missing-module", 1)[1].split()[0]
        raise LabError(f"soft-RoCE: the guest kernel has no {module} module "
                       f"(iSER in the lab needs {', '.join(MODULES)}; Debian's 6.1 image has them: --kernel debian)")
    if r.rc == 4:
        raise LabError("soft-RoCE: no `rdma` command (iproute2's): install iproute2 (bash .ci/setup)")
    if r.rc != 0:
        raise LabError(f"soft-RoCE: setting up rxe on {link.initiator_netdev}/{link.target_netdev} failed: "
                       f"{(r.err or out).strip().splitlines()[-1:]}")
    for dev in (link.initiator_netdev, link.target_netdev):
        if f"netdev {dev}" not in out:
            raise LabError(f"soft-RoCE: no rxe device on {dev} after `rdma link add` ({out.strip()!r})")
    route = next((line for line in out.splitlines() if line.startswith("route: ")), "")
    if f"dev {link.initiator_netdev} " not in route + " ":
        raise LabError(f"soft-RoCE: {link.target_address} is not routed over {link.initiator_netdev} "
                       f"({route.removeprefix('route: ').strip() or 'no route'}): RDMA would loop back inside one rxe device")
    return link


def down(guest, link: Link = Link()) -> None:
    """Remove what up() made (the rxe devices and the veth pair), so later tests in the same
    guest that use the documentation ranges do not find its addresses and routes there."""
    guest.run(f"rdma link delete rxe_{shlex.quote(link.initiator_netdev)} 2>/dev/null; "
              f"rdma link delete rxe_{shlex.quote(link.target_netdev)} 2>/dev/null; "
              f"ip link delete {shlex.quote(link.initiator_netdev)} 2>/dev/null; "
              # the rules back as they were: the local table at 0 again before 1000 goes
              f"ip rule del pref {WIRE_RULES[0]} 2>/dev/null; ip rule del pref {WIRE_RULES[1]} 2>/dev/null; "
              f"ip rule show pref 0 | grep -q . || ip rule add pref 0 table local; "
              f"ip rule del pref {LOCAL_RULE} table local 2>/dev/null; "
              # ib_isert holds iscsi_target_mod, which other tests unload and load again
              # (rdma_ucm, ib_uverbs: tgtd's userspace iSER portal, if a test loaded them)
              "modprobe -r ib_isert ib_iser rdma_ucm ib_uverbs rdma_rxe sch_netem 2>/dev/null; true", timeout=60)

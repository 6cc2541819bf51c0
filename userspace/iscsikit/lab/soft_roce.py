"""Soft-RoCE in the guest: rdma_rxe on a veth pair that exists only there, for iSER.

Debian's 6.1 kernel ships rdma_rxe, ib_iser and ib_isert as modules, and
iproute2 (Debian 12: 6.1) has the `rdma` command that makes an rxe device on a
netdev (`rdma link add NAME type rxe netdev DEV`; the rdma_rxe module's old
`add` parameter is gone in 6.1). The pair carries 192.0.2.1 and 192.0.2.2
(RFC 5737 documentation addresses); both ends stay in the guest. An initiator
connects to TARGET_ADDRESS; taking `TARGET_NETDEV` down cuts the RDMA path
(both rxe ports go down with the veth pair) without touching anything else.

Both addresses are local to the guest, so rdma_cm binds both ends of a connection to
the rxe device that owns the target address (rxe_isr1) and rxe loops the packets back
inside itself: no RDMA packet crosses the veth, lo or netfilter (a packet filter on the
target address cuts nothing). In 6.1, taking the link down under live RDMA traffic leaves
that rxe device unable to receive on its GSI QP afterwards (its sent_pkts counter grows with
every CM REQ retry, rcvd_pkts stands still), so every new RDMA connection times out; a
bounce with no connection open does not. `reset_command()` makes the device again.

    with Guest() as g:
        link = soft_roce.up(g)          # LabError, one line, when the kernel lacks a module
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from .errors import LabError

MODULES = ("rdma_rxe", "ib_iser", "ib_isert", "veth")
INITIATOR_NETDEV, TARGET_NETDEV = "isr0", "isr1"
INITIATOR_ADDRESS, TARGET_ADDRESS = "192.0.2.1", "192.0.2.2"
PREFIX = 24


@dataclass(frozen=True)
class Link:
    initiator_netdev: str = INITIATOR_NETDEV
    target_netdev: str = TARGET_NETDEV
    initiator_address: str = INITIATOR_ADDRESS
    target_address: str = TARGET_ADDRESS

    def down_command(self) -> str:
        return f"ip link set {self.target_netdev} down"

    def up_command(self) -> str:
        return f"ip link set {self.target_netdev} up"

    def reset_command(self) -> str:
        """Delete and add the target side's rxe device again (what the link cut above needs
        in 6.1 before RDMA connections work again; ib_isert listens on the new one by itself)."""
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
done
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
    return link


def down(guest, link: Link = Link()) -> None:
    """Remove what up() made (the rxe devices and the veth pair), so later tests in the same
    guest that use the documentation ranges do not find its addresses and routes there."""
    guest.run(f"rdma link delete rxe_{shlex.quote(link.initiator_netdev)} 2>/dev/null; "
              f"rdma link delete rxe_{shlex.quote(link.target_netdev)} 2>/dev/null; "
              f"ip link delete {shlex.quote(link.initiator_netdev)} 2>/dev/null; "
              # ib_isert holds iscsi_target_mod, which other tests unload and load again
              # (rdma_ucm, ib_uverbs: tgtd's userspace iSER portal, if a test loaded them)
              "modprobe -r ib_isert ib_iser rdma_ucm ib_uverbs rdma_rxe 2>/dev/null; true", timeout=60)

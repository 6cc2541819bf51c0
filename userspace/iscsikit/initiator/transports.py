"""Transport templates, one row per transport (open-iscsi's iscsi_transport_template).

A row says how a connection's endpoint is made, which capabilities the
kernel side must show, and whether the transport speaks iSER's login keys.
`tcp` connects from userspace and hands the socket's fd to BIND_CONN.
`iser` and the offload cards connect in the kernel (TRANSPORT_EP_CONNECT /
EP_POLL / EP_DISCONNECT, then BIND_CONN with the endpoint's handle;
session.py's endpoint path); the offload rows are declared so the table is
whole, and refused clearly until a card to prove them on exists.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import Mapping

from ..kernel.constants import Caps

log = logging.getLogger(__name__)


class Endpoint(enum.Enum):
    USERSPACE_TCP = "userspace TCP socket, fd handed over in BIND_CONN"
    KERNEL_EP = "kernel ep_connect over netlink (TRANSPORT_EP_CONNECT/POLL/DISCONNECT)"


class TransportNotSupported(Exception):
    pass


@dataclass(frozen=True)
class Template:
    name: str
    module: str
    endpoint: Endpoint
    required_caps: Caps
    supported: bool
    rdma: bool = False      # iSER: RDMAExtensions and the RFC 7145 data segment keys


TEMPLATES: dict[str, Template] = {t.name: t for t in (
    Template("tcp", "iscsi_tcp", Endpoint.USERSPACE_TCP, Caps.RECOVERY_L0 | Caps.HDRDGST | Caps.DATADGST, True),
    # ib_iser's caps are RECOVERY_L0 | MULTI_R2T | TEXT_NEGO (0x89 in the lab's 6.1): no digests
    Template("iser", "ib_iser", Endpoint.KERNEL_EP, Caps.RECOVERY_L0, True, rdma=True),
    Template("bnx2i", "bnx2i", Endpoint.KERNEL_EP, Caps.RECOVERY_L0, False),
    Template("cxgb3i", "cxgb3i", Endpoint.KERNEL_EP, Caps.RECOVERY_L0, False),
    Template("cxgb4i", "cxgb4i", Endpoint.KERNEL_EP, Caps.RECOVERY_L0, False),
    Template("be2iscsi", "be2iscsi", Endpoint.KERNEL_EP, Caps.RECOVERY_L0, False),
    Template("qedi", "qedi", Endpoint.KERNEL_EP, Caps.RECOVERY_L0, False),
)}

# RFC 7145's default for InitiatorRecvDataSegmentLength and TargetRecvDataSegmentLength
# (§6.4, §6.5), and what an iSER initiator declares for the latter when the record leaves
# node.conn[0].iscsi.MaxXmitDataSegmentLength at 0, as iscsid does (usr/initiator_common.c:
# max_xmit_dlength 0 becomes ISCSI_DEF_MAX_RECV_SEG_LEN). Data moves by RDMA; only
# control PDUs and immediate data use a data segment.
ISER_RECV_DATA_SEGMENT = 8192


def template(name: str) -> Template:
    try:
        t = TEMPLATES[name]
    except KeyError:
        raise TransportNotSupported(f"unknown transport {name!r} (known: {', '.join(TEMPLATES)})") from None
    if not t.supported:
        raise TransportNotSupported(f"transport {name} ({t.endpoint.value}) is not supported yet")
    return t


def login_keys(t: Template, caps: int, keys: Mapping[str, str], xmit_cap: int = 0) -> dict[str, str | None]:
    """The operational keys a session over `t` offers, from the node's `keys` and its
    node.conn[0].iscsi.MaxXmitDataSegmentLength (`xmit_cap`).

    - A digest the transport's caps (sysfs) lack is offered as None, as iscsid
      does (initiator_common.c): ib_iser has no CRC32C, the HCA's CRC covers it.
    - iSER (RFC 7145 §6.3-6.5): RDMAExtensions=Yes, and InitiatorRecvDataSegmentLength
      / TargetRecvDataSegmentLength instead of MaxRecvDataSegmentLength, which is
      withdrawn (None), as open-iscsi's login.c add_params_transport_specific sends them:
      the first is the record's MaxRecvDataSegmentLength, the second its
      MaxXmitDataSegmentLength (8192 when that is 0). (ib_iser itself takes at most 128
      bytes of data in a full-feature PDU, ISER_RECV_DATA_SEG_LEN, whatever is declared:
      a target sends only sense data and NOP-Ins there.)
    """
    out: dict[str, str | None] = dict(keys)
    for key, cap in (("HeaderDigest", Caps.HDRDGST), ("DataDigest", Caps.DATADGST)):
        if not caps & cap and out.get(key, "None") != "None":
            log.info("transport %s has no %s: offering %s=None", t.name, cap.name, key)
            out[key] = "None"
    if t.rdma:
        mine = out.pop("MaxRecvDataSegmentLength", None)
        out["MaxRecvDataSegmentLength"] = None
        out["InitiatorRecvDataSegmentLength"] = str(int(mine or ISER_RECV_DATA_SEGMENT))
        out["TargetRecvDataSegmentLength"] = str(_xmit_cap(xmit_cap, quiet=True) or ISER_RECV_DATA_SEGMENT)
        out["RDMAExtensions"] = "Yes"
    return out


# what iscsid puts in place of a MaxXmitDataSegmentLength outside 512..16777215
# (usr/initiator_common.c: DEF_INI_MAX_RECV_SEG_LEN, with "Invalid iscsi.MaxXmitDataSegmentLength")
XMIT_CAP_FALLBACK = 262144


def _xmit_cap(cap: int, quiet: bool = False) -> int:
    """The record's MaxXmitDataSegmentLength as iscsid 2.1.8 takes it: rounded down to a
    multiple of 4, 0 for "the target's declaration", a value outside 512..16777215 replaced
    by 262144 (usr/initiator_common.c iscsi_copy_operational_params)."""
    cap &= ~3
    if cap and not 512 <= cap <= (1 << 24) - 1:
        if not quiet:
            log.error("Invalid iscsi.MaxXmitDataSegmentLength %d: must be within 512 and 16777215; using %d",
                      cap, XMIT_CAP_FALLBACK)
        cap = XMIT_CAP_FALLBACK
    return cap


def xmit_limit(declared: int, cap: int) -> int:
    """What this side sends at most in one data segment: what the target declared it
    receives, capped by the record's node.conn[0].iscsi.MaxXmitDataSegmentLength unless
    that is 0 (_xmit_cap), as iscsid 2.1.8 does (usr/login.c: the target's
    MaxRecvDataSegmentLength when it is smaller). A target that declares nothing is taken
    at RFC 7143's default, 8192 (iscsid would send up to the cap there)."""
    cap = _xmit_cap(cap)
    return declared if cap == 0 else min(declared, cap)


def data_segment_limits(t: Template, parameters, xmit_cap: int = 0) -> tuple[int, int]:
    """(MAX_RECV_DLENGTH, MAX_XMIT_DLENGTH) for the kernel after a login's `parameters`
    (proto.negotiation.Parameters), the latter capped by `xmit_cap` (xmit_limit): iSER
    takes the smaller of both sides' declarations of each key (RFC 7145 §6.4-6.5;
    open-iscsi's login.c takes the MIN likewise)."""
    if not t.rdma:
        return parameters.max_recv_data_segment, xmit_limit(parameters.max_xmit_data_segment, xmit_cap)
    ours, theirs = parameters.ours, parameters.theirs
    recv = min(ours.get("InitiatorRecvDataSegmentLength", ISER_RECV_DATA_SEGMENT),
               theirs.get("InitiatorRecvDataSegmentLength", ISER_RECV_DATA_SEGMENT))
    xmit = min(ours.get("TargetRecvDataSegmentLength", ISER_RECV_DATA_SEGMENT),
               theirs.get("TargetRecvDataSegmentLength", ISER_RECV_DATA_SEGMENT))
    return recv, xmit_limit(xmit, xmit_cap)


def rdma_accepted(t: Template, parameters) -> bool:
    """Whether an iSER login really turned iSER on: a target that answers
    RDMAExtensions=No (or not at all) cannot run the RDMA data path (login.c refuses it too)."""
    return not t.rdma or parameters.negotiated.get("RDMAExtensions") in (True, "Yes")

"""Transport templates, one row per transport (open-iscsi's iscsi_transport_template).

A row says how a connection's endpoint is made and which capabilities the
kernel side must show. `tcp` connects from userspace and hands the socket's
fd to BIND_CONN. `iser` and the offload cards connect in the kernel
(TRANSPORT_EP_CONNECT / EP_POLL / EP_DISCONNECT); they are declared so the
table is whole, and refused clearly until their endpoint code exists.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..kernel.constants import Caps


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


TEMPLATES: dict[str, Template] = {t.name: t for t in (
    Template("tcp", "iscsi_tcp", Endpoint.USERSPACE_TCP, Caps.RECOVERY_L0 | Caps.HDRDGST | Caps.DATADGST, True),
    Template("iser", "ib_iser", Endpoint.KERNEL_EP, Caps.RECOVERY_L0, False),
    Template("bnx2i", "bnx2i", Endpoint.KERNEL_EP, Caps.RECOVERY_L0, False),
    Template("cxgb3i", "cxgb3i", Endpoint.KERNEL_EP, Caps.RECOVERY_L0, False),
    Template("cxgb4i", "cxgb4i", Endpoint.KERNEL_EP, Caps.RECOVERY_L0, False),
    Template("be2iscsi", "be2iscsi", Endpoint.KERNEL_EP, Caps.RECOVERY_L0, False),
    Template("qedi", "qedi", Endpoint.KERNEL_EP, Caps.RECOVERY_L0, False),
)}


def template(name: str) -> Template:
    try:
        t = TEMPLATES[name]
    except KeyError:
        raise TransportNotSupported(f"unknown transport {name!r} (known: {', '.join(TEMPLATES)})") from None
    if not t.supported:
        raise TransportNotSupported(f"transport {name} ({t.endpoint.value}) is not supported yet")
    return t

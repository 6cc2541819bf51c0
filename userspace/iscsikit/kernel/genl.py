"""Generic netlink: find a family by name, ask it something, join its multicast group, read it.

The framing (include/uapi/linux/netlink.h, include/uapi/linux/genetlink.h):

    struct nlmsghdr   { u32 len; u16 type; u16 flags; u32 seq; u32 pid; }   16 bytes
    struct genlmsghdr { u8 cmd; u8 version; u16 reserved; }                   4 bytes
    struct nlattr     { u16 len; u16 type; } then the payload, padded to 4   (NLA_ALIGNTO)

and the controller family (GENL_ID_CTRL, include/uapi/linux/genetlink.h)
answers CTRL_CMD_GETFAMILY with the family's id, version and multicast
groups. That is all a reader of a kernel event family needs, so it is here
as three structs rather than through pyroute2: measured, importing
pyroute2.netlink.generic takes 0.12 s and 23 MB of RSS on the host and
5.7-6.6 s in the lab guest, against 1.4-2.1 s for iscsikit.target.events
(bench/results/target_events.md), for a CLI whose job is to start and print
fast. tests/unit/test_target_events.py checks these bytes against
pyroute2's own generic netlink parser.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from typing import NamedTuple

NETLINK_GENERIC = 16
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLMSG_ERROR = 2
NLMSG_DONE = 3
GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID = 1
CTRL_ATTR_FAMILY_NAME = 2
CTRL_ATTR_VERSION = 3
CTRL_ATTR_MCAST_GROUPS = 7
CTRL_ATTR_MCAST_GRP_NAME = 1
CTRL_ATTR_MCAST_GRP_ID = 2

NLMSGHDR = struct.Struct("=IHHII")
GENLMSGHDR = struct.Struct("=BBH")
NLATTR = struct.Struct("=HH")
NLA_TYPE_MASK = 0x3FFF      # without NLA_F_NESTED / NLA_F_NET_BYTEORDER
RECV_BUFFER = 64 * 1024


def _align(n: int) -> int:
    return (n + 3) & ~3


def pack_attr(kind: int, payload: bytes) -> bytes:
    head = NLATTR.pack(NLATTR.size + len(payload), kind)
    return head + payload + b"\0" * (_align(len(payload)) - len(payload))


def parse_attrs(data: bytes | memoryview) -> dict[int, bytes]:
    """type -> payload; a truncated tail is ignored, as the kernel's nla_parse does with a warning."""
    out: dict[int, bytes] = {}
    off = 0
    while off + NLATTR.size <= len(data):
        length, kind = NLATTR.unpack_from(data, off)
        if length < NLATTR.size or off + length > len(data):
            break
        out[kind & NLA_TYPE_MASK] = bytes(data[off + NLATTR.size:off + length])
        off += _align(length)
    return out


class Message(NamedTuple):
    family: int         # nlmsg_type
    cmd: int
    version: int
    seq: int
    attrs: dict[int, bytes]


def encode(family: int, cmd: int, version: int, attrs: bytes = b"", seq: int = 0,
           flags: int = NLM_F_REQUEST) -> bytes:
    body = GENLMSGHDR.pack(cmd, version, 0) + attrs
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), family, flags, seq, 0) + body


class NetlinkError(OSError):
    pass


def split(datagram: bytes) -> list[Message]:
    """The generic netlink messages in one datagram; an NLMSG_ERROR with an error raises it."""
    out = []
    off = 0
    while off + NLMSGHDR.size <= len(datagram):
        length, kind, _flags, seq, _pid = NLMSGHDR.unpack_from(datagram, off)
        if length < NLMSGHDR.size or off + length > len(datagram):
            break
        body = memoryview(datagram)[off + NLMSGHDR.size:off + length]
        if kind == NLMSG_ERROR:
            code = -struct.unpack_from("=i", body)[0]
            if code:
                raise NetlinkError(code, os.strerror(code))
        elif kind != NLMSG_DONE and len(body) >= GENLMSGHDR.size:
            cmd, version, _ = GENLMSGHDR.unpack_from(body)
            out.append(Message(kind, cmd, version, seq, parse_attrs(body[GENLMSGHDR.size:])))
        off += _align(length)
    return out


class Family(NamedTuple):
    id: int
    version: int
    groups: dict[str, int]


def parse_family(attrs: dict[int, bytes]) -> Family:
    groups = {}
    for nested in parse_attrs(attrs.get(CTRL_ATTR_MCAST_GROUPS, b"")).values():
        g = parse_attrs(nested)
        if CTRL_ATTR_MCAST_GRP_NAME in g and CTRL_ATTR_MCAST_GRP_ID in g:
            groups[cstring(g[CTRL_ATTR_MCAST_GRP_NAME])] = struct.unpack("=I", g[CTRL_ATTR_MCAST_GRP_ID])[0]
    return Family(struct.unpack("=H", attrs[CTRL_ATTR_FAMILY_ID])[0],
                  struct.unpack("=I", attrs.get(CTRL_ATTR_VERSION, b"\0\0\0\0"))[0], groups)


def cstring(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace")


class GenlSocket:
    """One AF_NETLINK/NETLINK_GENERIC socket; requests wait for their own reply by sequence number."""

    def __init__(self, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.bind((0, 0))
        self._seq = 0
        self.pending: list[Message] = []     # multicast messages read while waiting for a reply

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "GenlSocket":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def request(self, family: int, cmd: int, version: int, attrs: bytes = b"", timeout: float = 5.0) -> list[Message]:
        self._seq += 1
        seq = self._seq
        self.sock.sendall(encode(family, cmd, version, attrs, seq, NLM_F_REQUEST | NLM_F_ACK))
        replies: list[Message] = []
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(RECV_BUFFER)
                done = _ack_for(data, seq)
                for m in split(data):
                    (replies if m.seq == seq else self.pending).append(m)
                if done:
                    return replies
        finally:
            self.sock.settimeout(None)

    def family(self, name: str) -> Family | None:
        """The family's id, version and groups; None when no module registered it."""
        try:
            replies = self.request(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, 1,
                                   pack_attr(CTRL_ATTR_FAMILY_NAME, name.encode() + b"\0"))
        except NetlinkError as e:
            if e.errno == errno.ENOENT:
                return None
            raise
        return parse_family(replies[0].attrs) if replies else None

    def join(self, group: int) -> None:
        self.sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)

    def recv(self, timeout: float | None = None) -> list[Message]:
        """The next datagram's messages ([] on timeout). A full receive buffer raises
        OSError(ENOBUFS) once: the kernel dropped messages for this socket."""
        if self.pending:
            out, self.pending = self.pending, []
            return out
        self.sock.settimeout(timeout)
        try:
            return split(self.sock.recv(RECV_BUFFER))
        except socket.timeout:
            return []
        finally:
            self.sock.settimeout(None)


def _ack_for(data: bytes, seq: int) -> bool:
    """True when the datagram holds the NLMSG_ERROR(0) acknowledging request `seq`."""
    off = 0
    while off + NLMSGHDR.size <= len(data):
        length, kind, _flags, mseq, _pid = NLMSGHDR.unpack_from(data, off)
        if length < NLMSGHDR.size:
            break
        if kind == NLMSG_ERROR and mseq == seq:
            return True
        off += _align(length)
    return False

"""iSNSP, the Internet Storage Name Service protocol (RFC 4171), as much as an initiator's
discovery needs: register the initiator, query the targets' portal groups, deregister.
Sans-IO: requests are bytes out, responses bytes in, events out.

RFC 4171 §5.1: a PDU is a 12-byte header (version 1, function ID, payload length, flags,
transaction ID, sequence ID; all big-endian u16) and a payload of attributes in
tag-length-value form (§5.3: u32 tag, u32 length, the value padded with zeroes to a
multiple of 4). A message is one or more PDUs with one transaction ID, the first flagged
FIRST_PDU, the last LAST_PDU, sequence IDs counting from 0 (§5.2). A response's payload
starts with a u32 status code (§5.4), then attributes.

A request (§5.6.1): the Source attribute, the Message Key attributes, a Delimiter (tag 0,
length 0), then the Operating attributes; a query names the operating attributes it wants
with zero-length TLVs. The tags and codes are RFC 4171 §6 and §5.4's (open-isns keeps the
same numbers in libisns/isns-proto.h).
"""

from __future__ import annotations

import ipaddress
import struct
from collections import namedtuple

from .errors import ProtocolError

VERSION = 1
DEFAULT_PORT = 3205
HEADER = struct.Struct(">HHHHHH")
MAX_PDU_PAYLOAD = 65535          # the header's u16 length
MAX_MESSAGE = 1 << 20            # a whole response, reassembled: we refuse more (a hostile server)
MAX_PDUS = 64

# function IDs (§5.6.2); a response is the request's | 0x8000
DEV_ATTR_REG, DEV_ATTR_QRY, DEV_DEREG = 0x0001, 0x0002, 0x0004
RESPONSE = 0x8000

# flags (§5.1.4)
F_CLIENT, F_SERVER, F_AUTH, F_REPLACE, F_LAST_PDU, F_FIRST_PDU = 0x8000, 0x4000, 0x2000, 0x1000, 0x0800, 0x0400

# attribute tags (§6.1)
TAG_DELIMITER = 0
TAG_ENTITY_ID = 1
TAG_PORTAL_IP = 16
TAG_PORTAL_PORT = 17
TAG_ISCSI_NAME = 32
TAG_ISCSI_NODE_TYPE = 33
TAG_PG_ISCSI_NAME = 48
TAG_PG_PORTAL_IP = 49
TAG_PG_PORTAL_PORT = 50
TAG_PG_TAG = 51
# the tags that begin an object in a response (its key attribute, §6.1's object keys)
OBJECT_KEYS = (TAG_ENTITY_ID, TAG_PORTAL_IP, TAG_ISCSI_NAME, TAG_PG_ISCSI_NAME)

NODE_TARGET, NODE_INITIATOR, NODE_CONTROL = 0x1, 0x2, 0x4     # iSCSI Node Type bits (§6.4.2)
PORT_UDP = 1 << 16                                           # in a Portal Port value (§6.3.2)

# status codes (§5.4), by value
STATUS = ("Successful", "Unknown Error", "Message Format Error", "Invalid Registration", "RESERVED",
          "Invalid Query", "Source Unknown", "Source Absent", "Source Unauthorized", "No Such Entry",
          "Version Not Supported", "Internal Error", "Busy", "Option Not Understood", "Invalid Update",
          "Message (FUNCTION_ID) Not Supported", "SCN Event Rejected", "SCN Registration Rejected",
          "Attribute Not Implemented", "FC_DOMAIN_ID Not Available", "FC_DOMAIN_ID Not Allocated",
          "ESI Not Available", "Invalid Deregistration", "Registration Feature Not Supported")
SUCCESS, SOURCE_UNKNOWN = 0, 6

Response = namedtuple("Response", "function xid status attributes")
PortalGroup = namedtuple("PortalGroup", "target address port tag")


def status_text(code: int) -> str:
    return STATUS[code] if 0 <= code < len(STATUS) else f"status {code}"


# -- encoding -------------------------------------------------------------------------
def tlv(tag: int, value: bytes = b"") -> bytes:
    pad = -len(value) % 4
    return struct.pack(">II", tag, len(value) + pad) + value + bytes(pad)


def string(tag: int, text: str) -> bytes:
    """A string attribute: UTF-8, NUL-terminated, padded (§5.3.1)."""
    return tlv(tag, text.encode() + b"\0")


def uint32(tag: int, n: int) -> bytes:
    return tlv(tag, struct.pack(">I", n))


def request(function: int, xid: int, source: str, keys: bytes = b"", operating: bytes = b"") -> bytes:
    """One request message in one PDU: Source, keys, Delimiter, operating attributes."""
    payload = string(TAG_ISCSI_NAME, source) + keys + tlv(TAG_DELIMITER) + operating
    if len(payload) > MAX_PDU_PAYLOAD:
        raise ValueError("iSNS request longer than one PDU")
    return HEADER.pack(VERSION, function, len(payload), F_CLIENT | F_FIRST_PDU | F_LAST_PDU, xid, 0) + payload


def query_targets(xid: int, source: str) -> bytes:
    """DevAttrQry for every target visible to `source`: keyed by node type Target, asking
    for the names, portals and portal groups (what iscsiadm's discovery_isns_query asks)."""
    wanted = b"".join(tlv(t) for t in (TAG_ISCSI_NAME, TAG_ISCSI_NODE_TYPE, TAG_PORTAL_IP, TAG_PORTAL_PORT,
                                       TAG_PG_ISCSI_NAME, TAG_PG_PORTAL_IP, TAG_PG_PORTAL_PORT, TAG_PG_TAG))
    return request(DEV_ATTR_QRY, xid, source, uint32(TAG_ISCSI_NODE_TYPE, NODE_TARGET), wanted)


def register_initiator(xid: int, name: str) -> bytes:
    """DevAttrReg of an initiator node, just so that it may query (as iscsiadm registers)."""
    return request(DEV_ATTR_REG, xid, name, b"", string(TAG_ISCSI_NAME, name) + uint32(TAG_ISCSI_NODE_TYPE,
                                                                                          NODE_INITIATOR))


def deregister(xid: int, name: str) -> bytes:
    """DevDereg of that node again (operating attribute: its iSCSI name)."""
    return request(DEV_DEREG, xid, name, b"", string(TAG_ISCSI_NAME, name))


# -- decoding -------------------------------------------------------------------------
class ResponseReader:
    """Bytes in (feed), whole response messages out (next_response); a PDU of another
    transaction, out of sequence, or a message over MAX_MESSAGE is a ProtocolError."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._payload = bytearray()
        self._expect: tuple[int, int, int] | None = None      # (function, xid, next sequence)
        self._pdus = 0

    def feed(self, data: bytes) -> None:
        self._buf += data
        if len(self._buf) > MAX_MESSAGE + HEADER.size:
            raise ProtocolError("iSNS response too long")

    def next_response(self) -> Response | None:
        while len(self._buf) >= HEADER.size:
            version, function, length, flags, xid, seq = HEADER.unpack_from(self._buf)
            if version != VERSION:
                raise ProtocolError(f"iSNS version {version} not supported")
            if len(self._buf) < HEADER.size + length:
                return None
            payload = bytes(self._buf[HEADER.size:HEADER.size + length])
            del self._buf[:HEADER.size + length]
            if flags & F_FIRST_PDU:
                self._expect, self._payload, self._pdus = (function, xid, 0), bytearray(), 0
            if self._expect is None or self._expect != (function, xid, seq):
                raise ProtocolError("iSNS PDU out of sequence")
            self._payload += payload
            self._pdus += 1
            if len(self._payload) > MAX_MESSAGE or self._pdus > MAX_PDUS:
                raise ProtocolError("iSNS response too long")
            self._expect = (function, xid, seq + 1)
            if flags & F_LAST_PDU:
                self._expect = None
                return _response(function, xid, bytes(self._payload))
        return None


def _response(function: int, xid: int, payload: bytes) -> Response:
    if not function & RESPONSE:
        raise ProtocolError(f"iSNS message 0x{function:04x} is not a response")
    if len(payload) < 4:
        raise ProtocolError("iSNS response without a status code")
    (status,) = struct.unpack_from(">I", payload)
    return Response(function, xid, status, attributes(payload[4:]))


def attributes(data: bytes) -> list[tuple[int, bytes]]:
    out, off = [], 0
    while off < len(data):
        if len(data) - off < 8:
            raise ProtocolError("truncated iSNS attribute")
        tag, length = struct.unpack_from(">II", data, off)
        off += 8
        if length > len(data) - off:
            raise ProtocolError(f"iSNS attribute {tag} longer than its message")
        out.append((tag, data[off:off + length]))
        off += length
    return out


def _string(value: bytes) -> str:
    text = value.split(b"\0", 1)[0]
    try:
        return text.decode()
    except UnicodeDecodeError:
        raise ProtocolError("iSNS string attribute is not UTF-8") from None


def _u32(value: bytes, tag: int) -> int:
    if len(value) != 4:
        raise ProtocolError(f"iSNS attribute {tag}: {len(value)} bytes, not 4")
    return struct.unpack(">I", value)[0]


def _address(value: bytes) -> str:
    """An IP address attribute: 16 bytes, IPv4 mapped (§6.3.1); shown as iscsiadm shows it."""
    if len(value) != 16:
        raise ProtocolError(f"iSNS address of {len(value)} bytes")
    addr = ipaddress.IPv6Address(value)
    v4 = addr.ipv4_mapped or (ipaddress.IPv4Address(value[12:]) if value[:12] == bytes(12) else None)
    return str(v4) if v4 is not None else str(addr)


def portal_groups(attrs: list[tuple[int, bytes]]) -> list[PortalGroup]:
    """The portal group objects of a query response, in order: each begins at its PG iSCSI
    Name and holds the attributes up to the next object's key. One without an address, a
    port or a tag is skipped, as iscsiadm skips it (discovery.c)."""
    out, current = [], None

    def close():
        if current is not None and all(k in current for k in (TAG_PG_PORTAL_IP, TAG_PG_PORTAL_PORT, TAG_PG_TAG)):
            out.append(PortalGroup(current[TAG_PG_ISCSI_NAME], current[TAG_PG_PORTAL_IP],
                                   current[TAG_PG_PORTAL_PORT] & 0xFFFF, current[TAG_PG_TAG]))

    for tag, value in attrs:
        if tag in OBJECT_KEYS:
            close()
            current = {TAG_PG_ISCSI_NAME: _string(value)} if tag == TAG_PG_ISCSI_NAME and value else None
            continue
        if current is None or not value:
            continue
        if tag == TAG_PG_PORTAL_IP:
            current[tag] = _address(value)
        elif tag in (TAG_PG_PORTAL_PORT, TAG_PG_TAG):
            current[tag] = _u32(value, tag)
    close()
    return out

"""iSCSI PDUs (RFC 7143 §11): every Basic Header Segment declared once, as data.

Each opcode's 48-byte BHS is one `Layout` row: the fields it carries beyond
the common ones, as (name, byte offset, byte size, bit mask). A single generic
encoder and decoder walk those rows; nothing else in iscsikit packs a BHS by
hand. The PDU classes themselves (`LoginRequest`, `ScsiResponse`, ...) are
generated from the rows, so a field exists in exactly one place.

Common to every opcode and handled by the codec, not the rows:

    byte 0      .|I| opcode (6 bits)      I only meaningful from the initiator
    byte 4      TotalAHSLength, in 4-byte words
    bytes 5-7   DataSegmentLength (24 bits, padding not included)

A PDU on the wire: BHS, AHS, [HeaderDigest], data segment padded to 4 bytes,
[DataDigest] (only when the data segment is not empty).
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Iterable, NamedTuple

from .digest import DIGEST_LEN, crc32c_digest
from .errors import LocalProtocolError, RemoteProtocolError

BHS_LEN = 48
MAX_DATA_SEGMENT = (1 << 24) - 1
MAX_AHS_WORDS = 0xFF
RESERVED_TAG = 0xFFFFFFFF


class Opcode(enum.IntEnum):
    NOP_OUT = 0x00
    SCSI_COMMAND = 0x01
    TASK_MGMT_REQUEST = 0x02
    LOGIN_REQUEST = 0x03
    TEXT_REQUEST = 0x04
    DATA_OUT = 0x05
    LOGOUT_REQUEST = 0x06
    SNACK_REQUEST = 0x10
    NOP_IN = 0x20
    SCSI_RESPONSE = 0x21
    TASK_MGMT_RESPONSE = 0x22
    LOGIN_RESPONSE = 0x23
    TEXT_RESPONSE = 0x24
    DATA_IN = 0x25
    LOGOUT_RESPONSE = 0x26
    R2T = 0x31
    ASYNC_MESSAGE = 0x32
    REJECT = 0x3F


class AhsType(enum.IntEnum):
    EXTENDED_CDB = 1
    BIDI_READ_LENGTH = 2


class Field(NamedTuple):
    """One BHS field. `mask` != 0 marks a bit field inside a one-byte field."""

    name: str
    offset: int
    size: int
    mask: int = 0
    kind: type = int
    default: Any = 0

    @property
    def shift(self) -> int:
        return (self.mask & -self.mask).bit_length() - 1 if self.mask else 0

    @property
    def max_value(self) -> int:
        if self.mask:
            return self.mask >> self.shift
        return (1 << (8 * self.size)) - 1


class Layout(NamedTuple):
    opcode: Opcode
    name: str
    fields: tuple[Field, ...]
    # (byte offset, mask) bits the RFC fixes to 1, e.g. the F bit of a NOP-Out
    fixed: tuple[tuple[int, int], ...] = ()


def _flag(name: str, mask: int, default: bool = False) -> Field:
    return Field(name, 1, 1, mask, bool, default)


def _u8(name: str, offset: int) -> Field:
    return Field(name, offset, 1)


def _u16(name: str, offset: int) -> Field:
    return Field(name, offset, 2)


def _u32(name: str, offset: int, default: int = 0) -> Field:
    return Field(name, offset, 4, default=default)


_F_BIT = ((1, 0x80),)
_IMMEDIATE = Field("immediate", 0, 1, 0x40, bool)
_LOGIN_IMMEDIATE = Field("immediate", 0, 1, 0x40, bool, True)
_LUN = Field("lun", 8, 8)
_ITT = _u32("itt", 16)
_ITT_RESERVED = _u32("itt", 16, RESERVED_TAG)
_TTT = _u32("ttt", 20, RESERVED_TAG)
_CMDSN = _u32("cmdsn", 24)
_EXPSTATSN = _u32("expstatsn", 28)
_STATSN = _u32("statsn", 24)
_EXPCMDSN = _u32("expcmdsn", 28)
_MAXCMDSN = _u32("maxcmdsn", 32)
_ISID = Field("isid", 8, 6)
_TSIH = _u16("tsih", 14)
_LOGIN_FLAGS = (
    _flag("transit", 0x80),
    _flag("cont", 0x40),
    Field("csg", 1, 1, 0x0C),
    Field("nsg", 1, 1, 0x03),
)

LAYOUTS: tuple[Layout, ...] = (
    # §11.18 NOP-Out
    Layout(Opcode.NOP_OUT, "NopOut",
           (_IMMEDIATE, _LUN, _ITT, _TTT, _CMDSN, _EXPSTATSN), _F_BIT),
    # §11.3 SCSI Command
    Layout(Opcode.SCSI_COMMAND, "ScsiCommand", (
        _IMMEDIATE, _flag("final", 0x80, True), _flag("read", 0x40), _flag("write", 0x20),
        Field("attributes", 1, 1, 0x07), _LUN, _ITT,
        _u32("expected_length", 20), _CMDSN, _EXPSTATSN,
        Field("cdb", 32, 16, kind=bytes, default=bytes(16)))),
    # §11.5 Task Management Function Request
    Layout(Opcode.TASK_MGMT_REQUEST, "TaskMgmtRequest", (
        _IMMEDIATE, Field("function", 1, 1, 0x7F), _LUN, _ITT,
        _u32("referenced_tag", 20, RESERVED_TAG), _CMDSN, _EXPSTATSN,
        _u32("refcmdsn", 32), _u32("expdatasn", 36)), _F_BIT),
    # §11.12 Login Request
    Layout(Opcode.LOGIN_REQUEST, "LoginRequest", (
        _LOGIN_IMMEDIATE, *_LOGIN_FLAGS, _u8("version_max", 2), _u8("version_min", 3),
        _ISID, _TSIH, _ITT, _u16("cid", 20), _CMDSN, _EXPSTATSN)),
    # §11.10 Text Request
    Layout(Opcode.TEXT_REQUEST, "TextRequest", (
        _IMMEDIATE, _flag("final", 0x80, True), _flag("cont", 0x40),
        _LUN, _ITT, _TTT, _CMDSN, _EXPSTATSN)),
    # §11.7 SCSI Data-Out
    Layout(Opcode.DATA_OUT, "DataOut", (
        _flag("final", 0x80), _LUN, _ITT, _TTT, _EXPSTATSN,
        _u32("datasn", 36), _u32("buffer_offset", 40))),
    # §11.14 Logout Request
    Layout(Opcode.LOGOUT_REQUEST, "LogoutRequest", (
        _IMMEDIATE, Field("reason", 1, 1, 0x7F), _ITT, _u16("cid", 20),
        _CMDSN, _EXPSTATSN), _F_BIT),
    # §11.16 SNACK Request
    Layout(Opcode.SNACK_REQUEST, "SnackRequest", (
        Field("type", 1, 1, 0x0F), _LUN, _ITT_RESERVED, _TTT, _EXPSTATSN,
        _u32("begrun", 40), _u32("runlength", 44)), _F_BIT),
    # §11.19 NOP-In
    Layout(Opcode.NOP_IN, "NopIn",
           (_LUN, _ITT_RESERVED, _TTT, _STATSN, _EXPCMDSN, _MAXCMDSN), _F_BIT),
    # §11.4 SCSI Response
    Layout(Opcode.SCSI_RESPONSE, "ScsiResponse", (
        _flag("bidi_overflow", 0x10), _flag("bidi_underflow", 0x08),
        _flag("overflow", 0x04), _flag("underflow", 0x02),
        _u8("response", 2), _u8("status", 3), _ITT, _u32("snack_tag", 20),
        _STATSN, _EXPCMDSN, _MAXCMDSN, _u32("expdatasn", 36),
        _u32("bidi_residual", 40), _u32("residual", 44)), _F_BIT),
    # §11.6 Task Management Function Response
    Layout(Opcode.TASK_MGMT_RESPONSE, "TaskMgmtResponse", (
        _u8("response", 2), _ITT, _STATSN, _EXPCMDSN, _MAXCMDSN), _F_BIT),
    # §11.13 Login Response
    Layout(Opcode.LOGIN_RESPONSE, "LoginResponse", (
        *_LOGIN_FLAGS, _u8("version_max", 2), _u8("version_active", 3),
        _ISID, _TSIH, _ITT, _STATSN, _EXPCMDSN, _MAXCMDSN,
        _u8("status_class", 36), _u8("status_detail", 37))),
    # §11.11 Text Response
    Layout(Opcode.TEXT_RESPONSE, "TextResponse", (
        _flag("final", 0x80), _flag("cont", 0x40), _LUN, _ITT, _TTT,
        _STATSN, _EXPCMDSN, _MAXCMDSN)),
    # §11.7 SCSI Data-In
    Layout(Opcode.DATA_IN, "DataIn", (
        _flag("final", 0x80), _flag("ack", 0x40), _flag("overflow", 0x04),
        _flag("underflow", 0x02), _flag("status_present", 0x01), _u8("status", 3),
        _LUN, _ITT, _TTT, _STATSN, _EXPCMDSN, _MAXCMDSN,
        _u32("datasn", 36), _u32("buffer_offset", 40), _u32("residual", 44))),
    # §11.15 Logout Response
    Layout(Opcode.LOGOUT_RESPONSE, "LogoutResponse", (
        _u8("response", 2), _ITT, _STATSN, _EXPCMDSN, _MAXCMDSN,
        _u16("time2wait", 40), _u16("time2retain", 42)), _F_BIT),
    # §11.8 Ready To Transfer
    Layout(Opcode.R2T, "R2T", (
        _LUN, _ITT, _TTT, _STATSN, _EXPCMDSN, _MAXCMDSN, _u32("r2tsn", 36),
        _u32("buffer_offset", 40), _u32("desired_length", 44)), _F_BIT),
    # §11.9 Asynchronous Message
    Layout(Opcode.ASYNC_MESSAGE, "AsyncMessage", (
        _LUN, _ITT_RESERVED, _STATSN, _EXPCMDSN, _MAXCMDSN,
        _u8("event", 36), _u8("vcode", 37), _u16("parameter1", 38),
        _u16("parameter2", 40), _u16("parameter3", 42)), _F_BIT),
    # §11.17 Reject
    Layout(Opcode.REJECT, "Reject", (
        _u8("reason", 2), _ITT_RESERVED, _STATSN, _EXPCMDSN, _MAXCMDSN,
        _u32("datasn", 36)), _F_BIT),
)

LAYOUT_BY_OPCODE: dict[int, Layout] = {layout.opcode: layout for layout in LAYOUTS}
INITIATOR_OPCODES = frozenset(op for op in Opcode if op < 0x20)
TARGET_OPCODES = frozenset(op for op in Opcode if op >= 0x20)


class Ahs(NamedTuple):
    """One Additional Header Segment: its type and the bytes after the type byte."""

    type: int
    specific: bytes


class Pdu:
    """Base of the generated PDU classes; see `LAYOUTS`."""

    LAYOUT: Layout
    ahs: tuple[Ahs, ...]
    data: bytes

    def __post_init__(self) -> None:
        # A short CDB is zero-filled here so a PDU equals its own decoding.
        for f in self.LAYOUT.fields:
            value = getattr(self, f.name)
            if f.kind is bytes and isinstance(value, (bytes, bytearray)) and len(value) < f.size:
                object.__setattr__(self, f.name, bytes(value) + bytes(f.size - len(value)))
        object.__setattr__(self, "data", bytes(self.data))
        object.__setattr__(self, "ahs", tuple(self.ahs))

    @property
    def opcode(self) -> Opcode:
        return self.LAYOUT.opcode

    def header(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in self.LAYOUT.fields}

    def encode(self, *, header_digest: bool = False, data_digest: bool = False,
               max_data_segment: int = MAX_DATA_SEGMENT) -> bytes:
        return encode(self, header_digest=header_digest, data_digest=data_digest,
                      max_data_segment=max_data_segment)

    def __repr__(self) -> str:
        # The data segment is summarised: it may be large, and a PDU is logged.
        fields = ", ".join(f"{k}={v!r}" for k, v in self.header().items())
        extra = f", ahs={list(self.ahs)!r}" if self.ahs else ""
        return f"{type(self).__name__}({fields}{extra}, data=<{len(self.data)} bytes>)"


def _make_class(layout: Layout) -> type[Pdu]:
    spec = [(f.name, f.kind, dataclasses.field(default=f.default)) for f in layout.fields]
    spec += [("ahs", tuple, dataclasses.field(default=())),
             ("data", bytes, dataclasses.field(default=b""))]
    cls = dataclasses.make_dataclass(
        layout.name, spec, bases=(Pdu,), frozen=True, repr=False,
        namespace={"LAYOUT": layout, "__module__": __name__,
                   "__doc__": f"{layout.name} PDU (opcode {layout.opcode:#04x})."})
    return cls


PDU_CLASSES: dict[int, type[Pdu]] = {layout.opcode: _make_class(layout) for layout in LAYOUTS}

NopOut = PDU_CLASSES[Opcode.NOP_OUT]
ScsiCommand = PDU_CLASSES[Opcode.SCSI_COMMAND]
TaskMgmtRequest = PDU_CLASSES[Opcode.TASK_MGMT_REQUEST]
LoginRequest = PDU_CLASSES[Opcode.LOGIN_REQUEST]
TextRequest = PDU_CLASSES[Opcode.TEXT_REQUEST]
DataOut = PDU_CLASSES[Opcode.DATA_OUT]
LogoutRequest = PDU_CLASSES[Opcode.LOGOUT_REQUEST]
SnackRequest = PDU_CLASSES[Opcode.SNACK_REQUEST]
NopIn = PDU_CLASSES[Opcode.NOP_IN]
ScsiResponse = PDU_CLASSES[Opcode.SCSI_RESPONSE]
TaskMgmtResponse = PDU_CLASSES[Opcode.TASK_MGMT_RESPONSE]
LoginResponse = PDU_CLASSES[Opcode.LOGIN_RESPONSE]
TextResponse = PDU_CLASSES[Opcode.TEXT_RESPONSE]
DataIn = PDU_CLASSES[Opcode.DATA_IN]
LogoutResponse = PDU_CLASSES[Opcode.LOGOUT_RESPONSE]
R2T = PDU_CLASSES[Opcode.R2T]
AsyncMessage = PDU_CLASSES[Opcode.ASYNC_MESSAGE]
Reject = PDU_CLASSES[Opcode.REJECT]


def pad_len(length: int) -> int:
    return -length & 3


# -- encoding ---------------------------------------------------------------

def encode_ahs(segments: Iterable[Ahs]) -> bytes:
    out = bytearray()
    for seg in segments:
        if not 0 <= seg.type <= 0xFF or len(seg.specific) > 0xFFFF:
            raise LocalProtocolError(f"AHS type {seg.type} / length {len(seg.specific)} out of range")
        out += len(seg.specific).to_bytes(2, "big") + bytes((seg.type,)) + seg.specific
        out += bytes(pad_len(len(out)))
    if len(out) > MAX_AHS_WORDS * 4:
        raise LocalProtocolError(f"AHS of {len(out)} bytes exceeds {MAX_AHS_WORDS * 4}")
    return bytes(out)


def encode_bhs(pdu: Pdu, ahs_len: int, data_len: int) -> bytes:
    layout = pdu.LAYOUT
    bhs = bytearray(BHS_LEN)
    bhs[0] = layout.opcode
    for offset, mask in layout.fixed:
        bhs[offset] |= mask
    for f in layout.fields:
        value = getattr(pdu, f.name)
        if f.kind is bytes:
            if not isinstance(value, (bytes, bytearray)) or len(value) > f.size:
                raise LocalProtocolError(f"{f.name} must be at most {f.size} bytes", pdu=layout.name)
            bhs[f.offset:f.offset + len(value)] = value
            continue
        value = int(value)
        if not 0 <= value <= f.max_value:
            raise LocalProtocolError(f"{f.name}={value} out of range 0..{f.max_value}", pdu=layout.name)
        if f.mask:
            bhs[f.offset] |= (value << f.shift) & f.mask
        else:
            bhs[f.offset:f.offset + f.size] = value.to_bytes(f.size, "big")
    bhs[4] = ahs_len // 4
    bhs[5:8] = data_len.to_bytes(3, "big")
    return bytes(bhs)


def encode(pdu: Pdu, *, header_digest: bool = False, data_digest: bool = False,
           max_data_segment: int = MAX_DATA_SEGMENT) -> bytes:
    """Serialise `pdu`; `max_data_segment` is the peer's MaxRecvDataSegmentLength."""
    data = bytes(pdu.data)
    if len(data) > min(max_data_segment, MAX_DATA_SEGMENT):
        raise LocalProtocolError(
            f"data segment of {len(data)} bytes exceeds the peer's limit of {max_data_segment}",
            pdu=pdu.LAYOUT.name)
    ahs = encode_ahs(pdu.ahs)
    header = encode_bhs(pdu, len(ahs), len(data)) + ahs
    parts = [header]
    if header_digest:
        parts.append(crc32c_digest(header))
    if data:
        padded = data + bytes(pad_len(len(data)))
        parts.append(padded)
        if data_digest:
            parts.append(crc32c_digest(padded))
    return b"".join(parts)


# -- decoding ---------------------------------------------------------------

class BhsInfo(NamedTuple):
    """What the first 48 bytes say about the rest of the PDU."""

    layout: Layout
    ahs_len: int
    data_len: int

    def wire_len(self, header_digest: bool, data_digest: bool) -> int:
        n = BHS_LEN + self.ahs_len + self.data_len + pad_len(self.data_len)
        if header_digest:
            n += DIGEST_LEN
        if data_digest and self.data_len:
            n += DIGEST_LEN
        return n


def peek_bhs(bhs: bytes | bytearray | memoryview, *, accept: frozenset[int],
             max_data_segment: int) -> BhsInfo:
    """Check a BHS's opcode and lengths before anything else is read or allocated."""
    opcode = bhs[0] & 0x3F
    layout = LAYOUT_BY_OPCODE.get(opcode)
    if layout is None or opcode not in accept:
        raise RemoteProtocolError(f"unexpected opcode {opcode:#04x}")
    data_len = int.from_bytes(bhs[5:8], "big")
    if data_len > max_data_segment:
        raise RemoteProtocolError(
            f"DataSegmentLength {data_len} exceeds our MaxRecvDataSegmentLength {max_data_segment}",
            pdu=layout.name)
    return BhsInfo(layout, bhs[4] * 4, data_len)


def decode_ahs(raw: bytes, layout_name: str = "") -> tuple[Ahs, ...]:
    segments = []
    pos = 0
    while pos < len(raw):
        if len(raw) - pos < 4:
            raise RemoteProtocolError("truncated AHS header", pdu=layout_name)
        length = int.from_bytes(raw[pos:pos + 2], "big")
        end = pos + 3 + length
        if end > len(raw):
            raise RemoteProtocolError(f"AHS length {length} overruns TotalAHSLength", pdu=layout_name)
        segments.append(Ahs(raw[pos + 2], bytes(raw[pos + 3:end])))
        pos = end + pad_len(end)
    return tuple(segments)


def decode_fields(layout: Layout, bhs: bytes | bytearray | memoryview) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for f in layout.fields:
        if f.kind is bytes:
            values[f.name] = bytes(bhs[f.offset:f.offset + f.size])
        elif f.mask:
            raw = (bhs[f.offset] & f.mask) >> f.shift
            values[f.name] = bool(raw) if f.kind is bool else raw
        else:
            values[f.name] = int.from_bytes(bhs[f.offset:f.offset + f.size], "big")
    return values


def build(layout: Layout, bhs: bytes | bytearray | memoryview, ahs: tuple[Ahs, ...],
          data: bytes) -> Pdu:
    return PDU_CLASSES[layout.opcode](**decode_fields(layout, bhs), ahs=ahs, data=data)

"""Incremental reader: framing, limits checked before reading on, digests."""

from __future__ import annotations

import pytest

from iscsikit.proto import pdu as P
from iscsikit.proto.digest import crc32c_digest
from iscsikit.proto.errors import RemoteProtocolError
from iscsikit.proto.reader import PduReader, decode_one

RSP = P.TextResponse(final=True, itt=3, statsn=4, data=b"TargetName=iqn.x\0")
NOP = P.NopIn(itt=9, ttt=0xFFFFFFFF, data=b"ping")


def test_byte_by_byte_feed_yields_each_pdu_once():
    wire = RSP.encode() + NOP.encode()
    reader = PduReader()
    out = []
    for i in range(len(wire)):
        reader.feed(wire[i:i + 1])
        out += list(reader)
    assert out == [RSP, NOP]
    assert reader.buffered == 0


def test_bytes_wanted_never_overshoots_a_pdu():
    wire = RSP.encode()
    reader = PduReader()
    pos = 0
    while (pdu := reader.next_pdu()) is None:
        want = reader.bytes_wanted()
        assert 1 <= want <= len(wire) - pos
        reader.feed(wire[pos:pos + want])
        pos += want
    assert pdu == RSP and pos == len(wire)


def test_oversized_segment_refused_from_the_header_alone():
    header = P.DataIn(data=bytes(8193)).encode()[:48]
    reader = PduReader(max_data_segment=8192)
    reader.feed(header)
    with pytest.raises(RemoteProtocolError, match="MaxRecvDataSegmentLength 8192"):
        reader.next_pdu()
    # a reader that failed stays failed: framing is lost
    with pytest.raises(RemoteProtocolError):
        reader.next_pdu()


def test_limit_can_be_raised_after_login():
    reader = PduReader(max_data_segment=8192)
    reader.max_data_segment = 262144
    reader.feed(P.DataIn(itt=1, data=bytes(10000)).encode())
    assert len(reader.next_pdu().data) == 10000


def test_wrong_direction_and_unknown_opcodes_are_remote_errors():
    with pytest.raises(RemoteProtocolError, match="opcode 0x03"):
        decode_one(P.LoginRequest().encode())
    raw = bytearray(RSP.encode())
    raw[0] = 0x3C  # vendor-specific: not something we accept
    with pytest.raises(RemoteProtocolError, match="opcode 0x3c"):
        decode_one(bytes(raw))


def test_digest_mismatches():
    wire = bytearray(RSP.encode(header_digest=True, data_digest=True))
    assert decode_one(bytes(wire), header_digest=True, data_digest=True) == RSP
    bad_header = bytearray(wire)
    bad_header[20] ^= 1
    with pytest.raises(RemoteProtocolError, match="header digest"):
        decode_one(bytes(bad_header), header_digest=True, data_digest=True)
    bad_data = bytearray(wire)
    bad_data[55] ^= 1
    with pytest.raises(RemoteProtocolError, match="data digest"):
        decode_one(bytes(bad_data), header_digest=True, data_digest=True)


def test_ahs_overrun_is_a_remote_error():
    raw = bytearray(48)
    raw[0] = 0x21
    raw[4] = 1
    ahs = (200).to_bytes(2, "big") + b"\x01\x00"
    with pytest.raises(RemoteProtocolError, match="AHS"):
        decode_one(bytes(raw) + ahs)


def test_padding_is_consumed_and_ignored():
    wire = bytearray(NOP.encode() + RSP.encode())
    assert len(NOP.encode()) == 52
    wire[48 + 4 - 1] = 0  # data "ping" is exactly 4 bytes, no pad; use RSP's pad instead
    rsp_wire = bytearray(RSP.encode())
    rsp_wire[-1] = 0xEE  # a non-zero pad byte must not leak into the data
    assert decode_one(bytes(rsp_wire)).data == RSP.data


def test_header_digest_counted_in_wire_length():
    reader = PduReader(header_digest=True)
    wire = P.NopIn(itt=1).encode(header_digest=True)
    reader.feed(wire[:48])
    assert reader.next_pdu() is None
    assert reader.bytes_wanted() == 4
    reader.feed(wire[48:])
    assert reader.next_pdu() == P.NopIn(itt=1)
    assert wire[48:] == crc32c_digest(wire[:48])

"""PDU codec: the declared layouts, byte-exact vectors, and round trips for every opcode."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iscsikit.proto import pdu as P
from iscsikit.proto.digest import crc32c_digest
from iscsikit.proto.errors import LocalProtocolError
from iscsikit.proto.reader import decode_one

COMMON_BYTES = {4, 5, 6, 7}


def test_every_opcode_has_exactly_one_layout():
    assert {layout.opcode for layout in P.LAYOUTS} == set(P.Opcode)
    assert len(P.LAYOUTS) == len(P.Opcode)
    assert P.INITIATOR_OPCODES | P.TARGET_OPCODES == set(P.Opcode)


@pytest.mark.parametrize("layout", P.LAYOUTS, ids=lambda l: l.name)
def test_layout_fields_do_not_overlap(layout):
    taken: dict[int, int] = {}
    for offset, mask in layout.fixed:
        taken[offset] = taken.get(offset, 0) | mask
    for f in layout.fields:
        assert 0 <= f.offset and f.offset + f.size <= P.BHS_LEN, f
        for byte in range(f.offset, f.offset + f.size):
            assert byte not in COMMON_BYTES, f
            bits = f.mask if f.mask else 0xFF
            if byte == 0:
                assert f.mask == 0x40, "byte 0 carries only the I bit besides the opcode"
            assert not taken.get(byte, 0) & bits, f"{layout.name}.{f.name} overlaps at byte {byte}"
            taken[byte] = taken.get(byte, 0) | bits
    names = [f.name for f in layout.fields]
    assert len(names) == len(set(names))


def test_login_request_bytes_match_rfc_layout():
    req = P.LoginRequest(transit=True, csg=1, nsg=3, isid=0x00023D000001, tsih=0, itt=0x11223344,
                         cid=0, cmdsn=1, expstatsn=0, data=b"A=B\0")
    wire = req.encode()
    expected = bytes.fromhex(
        "43 87 00 00 00 000004 00023d000001 0000 11223344 0000 0000"
        "00000001 00000000" + "00" * 16 + "413d4200")
    assert wire == expected


def test_login_response_decodes_status_and_sequence_numbers():
    raw = bytearray(48)
    raw[0] = 0x23
    raw[1] = 0x87
    raw[8:14] = bytes.fromhex("00023d000001")
    raw[14:16] = b"\x01\x00"
    raw[16:20] = (5).to_bytes(4, "big")
    raw[24:28] = (7).to_bytes(4, "big")
    raw[28:32] = (1).to_bytes(4, "big")
    raw[32:36] = (9).to_bytes(4, "big")
    raw[36], raw[37] = 2, 1
    rsp = decode_one(bytes(raw))
    assert isinstance(rsp, P.LoginResponse)
    assert (rsp.transit, rsp.cont, rsp.csg, rsp.nsg) == (True, False, 1, 3)
    assert (rsp.isid, rsp.tsih, rsp.itt, rsp.statsn, rsp.expcmdsn, rsp.maxcmdsn) == (0x00023D000001, 256, 5, 7, 1, 9)
    assert (rsp.status_class, rsp.status_detail) == (2, 1)


# RFC 7143 Appendix B.4 CRC32C examples (the digest as transmitted)
@pytest.mark.parametrize("data,wire", [
    (bytes(32), "aa36918a"),
    (b"\xff" * 32, "43aba862"),
    (bytes(range(32)), "4e79dd46"),
    (bytes(range(31, -1, -1)), "5cdb3f11"),
    (bytes.fromhex("01c00000000000000000000000000000"
                   "14000000000004000000001400000018"
                   "28000000000000000200000000000000"), "563a96d9"),  # an iSCSI Read PDU
])
def test_crc32c_vectors(data, wire):
    assert crc32c_digest(data) == bytes.fromhex(wire)
    assert crc32c_digest(data[:5], data[5:]) == bytes.fromhex(wire)


def test_digests_and_padding_on_the_wire():
    cmd = P.ScsiCommand(read=True, cdb=b"\x12\x00\x00\x00\x24\x00", data=b"xyz")
    wire = cmd.encode(header_digest=True, data_digest=True)
    assert len(wire) == 48 + 4 + 4 + 4
    assert wire[48:52] == crc32c_digest(wire[:48])
    assert wire[52:56] == b"xyz\0"
    assert wire[56:60] == crc32c_digest(b"xyz\0")
    # no data segment: no data digest either
    assert len(P.NopOut(itt=1).encode(header_digest=True, data_digest=True)) == 52


def test_ahs_encoding():
    cdb = bytes(range(32))
    cmd = P.ScsiCommand(cdb=cdb[:16], ahs=(P.Ahs(P.AhsType.EXTENDED_CDB, b"\0" + cdb[16:]),))
    wire = cmd.encode()
    assert wire[4] == 5  # 3 + 17 bytes, padded to 20 = 5 words
    assert wire[48:51] == b"\x00\x11\x01"
    assert decode_one(wire, accept=P.INITIATOR_OPCODES) == cmd


@pytest.mark.parametrize("bad", [
    lambda: P.LoginRequest(csg=4),
    lambda: P.LoginRequest(isid=1 << 48),
    lambda: P.NopOut(itt=-1),
    lambda: P.ScsiCommand(cdb=bytes(17)),
    lambda: P.TaskMgmtRequest(function=0x80),
    lambda: P.ScsiCommand(ahs=(P.Ahs(300, b""),)),
    lambda: P.ScsiCommand(ahs=(P.Ahs(1, bytes(1100)),)),
])
def test_encoder_refuses_out_of_range_fields(bad):
    with pytest.raises(LocalProtocolError):
        bad().encode()


def test_encoder_enforces_the_peers_segment_limit():
    with pytest.raises(LocalProtocolError, match="limit"):
        P.DataOut(data=bytes(8193)).encode(max_data_segment=8192)


def test_repr_summarises_data():
    text = repr(P.TextRequest(data=b"SendTargets=All\0"))
    assert "data=<16 bytes>" in text and "SendTargets" not in text


def _field_value(f: P.Field):
    if f.kind is bytes:
        return st.binary(min_size=f.size, max_size=f.size)
    if f.kind is bool:
        return st.booleans()
    return st.integers(0, f.max_value)


@st.composite
def pdus(draw, opcodes=tuple(P.Opcode)):
    layout = P.LAYOUT_BY_OPCODE[draw(st.sampled_from(opcodes))]
    values = {f.name: draw(_field_value(f)) for f in layout.fields}
    ahs = tuple(P.Ahs(draw(st.integers(0, 255)), draw(st.binary(max_size=40)))
                for _ in range(draw(st.integers(0, 2))))
    data = draw(st.binary(max_size=300))
    return P.PDU_CLASSES[layout.opcode](**values, ahs=ahs, data=data)


@settings(max_examples=400, deadline=None)
@given(pdus(), st.booleans(), st.booleans())
def test_round_trip_every_opcode(pdu, header_digest, data_digest):
    wire = pdu.encode(header_digest=header_digest, data_digest=data_digest)
    assert len(wire) % 4 == 0
    accept = P.INITIATOR_OPCODES | P.TARGET_OPCODES
    back = decode_one(wire, accept=accept, header_digest=header_digest, data_digest=data_digest)
    assert back == pdu
    assert back.encode(header_digest=header_digest, data_digest=data_digest) == wire


@pytest.mark.parametrize("opcode", list(P.Opcode), ids=lambda o: o.name)
def test_defaults_round_trip_and_fixed_bits(opcode):
    pdu = P.PDU_CLASSES[opcode]()
    wire = pdu.encode()
    assert wire[0] & 0x3F == opcode
    for offset, mask in pdu.LAYOUT.fixed:
        assert wire[offset] & mask == mask
    assert decode_one(wire, accept=P.INITIATOR_OPCODES | P.TARGET_OPCODES) == pdu

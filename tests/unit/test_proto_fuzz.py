"""Property tests: random and mutated input ends only in the project's protocol
errors (never another exception, never a hang). bench/fuzz_proto.py runs the
same targets for millions of inputs outside CI."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iscsikit.proto import pdu as P
from iscsikit.proto.errors import ProtocolError
from iscsikit.proto.keys import decode_text
from iscsikit.proto.reader import PduReader
from iscsikit.proto.sendtargets import parse_target_address

from test_proto_pdu import pdus
from fuzz_targets import SEEDS, fuzz_login, fuzz_reader, fuzz_sendtargets

pytestmark = pytest.mark.timeout(120)  # a hang fails the run instead of stalling it

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _drain(reader: PduReader) -> int:
    count = 0
    try:
        while reader.next_pdu() is not None:
            count += 1
    except ProtocolError:
        pass
    return count


@FAST
@given(st.binary(max_size=2000), st.booleans(), st.booleans())
def test_reader_on_random_bytes(data, hd, dd):
    reader = PduReader(accept=P.INITIATOR_OPCODES | P.TARGET_OPCODES, header_digest=hd, data_digest=dd)
    reader.feed(data)
    _drain(reader)


@FAST
@given(pdus(), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
       st.integers(0, 400), st.booleans())
def test_reader_on_mutated_pdus(pdu, flips, cut, hd):
    wire = bytearray(pdu.encode(header_digest=hd, data_digest=hd))
    for pos, value in flips:
        wire[pos % len(wire)] = value
    wire = wire[:len(wire) - cut % 64]
    reader = PduReader(accept=P.INITIATOR_OPCODES | P.TARGET_OPCODES, header_digest=hd, data_digest=hd)
    reader.feed(bytes(wire))
    _drain(reader)


@FAST
@given(st.binary(max_size=600))
def test_text_decoder_on_random_bytes(data):
    try:
        decode_text(data)
    except ProtocolError:
        pass


@FAST
@given(st.text(max_size=80))
def test_target_address_parser_on_random_text(text):
    try:
        parse_target_address(text)
    except ProtocolError:
        pass


@FAST
@given(st.sampled_from(range(len(SEEDS))), st.binary(min_size=1, max_size=64))
def test_login_machine_on_mutated_responses(seed, noise):
    fuzz_login(SEEDS[seed], noise)


@FAST
@given(st.binary(max_size=512))
def test_reader_target_harness(data):
    fuzz_reader(data)


@FAST
@given(st.binary(max_size=512))
def test_sendtargets_on_random_text(data):
    fuzz_sendtargets(data)

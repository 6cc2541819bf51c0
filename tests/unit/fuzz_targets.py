"""Fuzz targets shared by tests/unit/test_proto_fuzz.py (a few hundred inputs in
CI) and bench/fuzz_proto.py (millions, outside CI).

Each target takes bytes and must end either normally or with
`iscsikit.proto.errors.ProtocolError`; anything else is a bug.
"""

from __future__ import annotations

from iscsikit.proto import pdu as P
from iscsikit.proto.chap import ChapCredentials
from iscsikit.proto.errors import ProtocolError
from iscsikit.proto.keys import Stage, decode_text
from iscsikit.proto.login import LoginConfig, LoginMachine
from iscsikit.proto.negotiation import Negotiation, Role
from iscsikit.proto.reader import PduReader
from iscsikit.proto.sendtargets import SendTargetsExchange, parse_sendtargets

from proto_fake_target import FakeTarget

ALL_OPCODES = P.INITIATOR_OPCODES | P.TARGET_OPCODES
SECRET = b"initiator-secret-1"
TARGET_SECRET = b"target-secret-12"


def _fixed_random(n: int) -> bytes:
    return bytes((i * 37 + 11) & 0xFF for i in range(n))


def _scenarios():
    normal = dict(initiator_name="iqn.2024-01.org.example:i", target_name="iqn.2024-01.org.example:t")
    one_way = ChapCredentials("alice", SECRET)
    mutual = ChapCredentials("alice", SECRET, "tgt", TARGET_SECRET, algorithms=(8, 7, 6, 5))
    return [
        (LoginConfig(**normal), dict()),
        (LoginConfig(initiator_name="iqn.2024-01.org.example:i"), dict(split=40)),
        (LoginConfig(**normal, chap=one_way), dict(user="alice", secret=SECRET)),
        (LoginConfig(**normal, chap=mutual),
         dict(user="alice", secret=SECRET, mutual_secret=TARGET_SECRET, algorithms=(7,), split=24)),
        (LoginConfig(**normal, operational={"HeaderDigest": "CRC32C,None"}),
         dict(policy={"HeaderDigest": "CRC32C"}, declare={"MaxRecvDataSegmentLength": "8192"})),
    ]


def _record(config: LoginConfig, target_args: dict) -> tuple[LoginConfig, bytes]:
    machine = LoginMachine(config, random_bytes=_fixed_random)
    target = FakeTarget(**target_args)
    event = machine.start()
    responses = b""
    while isinstance(event, P.LoginRequest):
        wire = target.wire(event.encode())
        responses += wire
        reader = PduReader()
        reader.feed(wire)
        event = machine.receive(reader.next_pdu())
    return config, responses


SEEDS: list[tuple[LoginConfig, bytes]] = [_record(c, t) for c, t in _scenarios()]


def mutate(wire: bytes, noise: bytes) -> bytes:
    """Byte-level mutations driven by `noise`, three bytes per edit."""
    data = bytearray(wire)
    for i in range(0, len(noise) - 2, 3):
        op, hi, lo = noise[i], noise[i + 1], noise[i + 2]
        pos = ((hi << 8) | lo) % max(len(data), 1)
        kind = op % 5
        if not data:
            data += bytes([lo])
        elif kind == 0:
            data[pos] = lo
        elif kind == 1:
            data[pos] ^= 1 << (lo % 8)
        elif kind == 2:
            del data[pos:pos + 1 + lo % 8]
        elif kind == 3:
            data[pos:pos] = bytes([lo]) * (1 + op % 7)
        else:
            data[pos:pos + 4] = (0xFFFFFFFF if lo & 1 else lo << 16).to_bytes(4, "big")
    return bytes(data)


def fuzz_login(seed: tuple[LoginConfig, bytes], noise: bytes) -> None:
    config, responses = seed
    machine = LoginMachine(config, random_bytes=_fixed_random)
    reader = PduReader()
    reader.feed(mutate(responses, noise))
    try:
        machine.start()
        while (pdu := reader.next_pdu()) is not None:
            event = machine.receive(pdu)
            if not isinstance(event, P.LoginRequest):
                return
    except ProtocolError:
        return


def fuzz_reader(data: bytes) -> None:
    flags = data[0] if data else 0
    reader = PduReader(accept=ALL_OPCODES, header_digest=bool(flags & 1), data_digest=bool(flags & 2),
                       max_data_segment=8192 if flags & 4 else 262144)
    reader.feed(data[1:])
    try:
        while reader.next_pdu() is not None:
            pass
    except ProtocolError:
        return


def fuzz_sendtargets(data: bytes) -> None:
    flags = data[0] if data else 0
    exchange = SendTargetsExchange(itt=1, cmdsn=1, exp_statsn=1)
    exchange.request()
    try:
        for chunk in (data[1:len(data) // 2], data[len(data) // 2:]):
            result = exchange.receive(P.TextResponse(
                final=bool(flags & 1), cont=bool(flags & 2), itt=1 if flags & 4 else flags,
                ttt=0xFFFFFFFF if flags & 8 else 5, data=chunk))
            if isinstance(result, list) or exchange.done:
                break
        parse_sendtargets(decode_text(data))
    except ProtocolError:
        return


def fuzz_negotiation(data: bytes) -> None:
    role = Role.TARGET if data[:1] == b"\x01" else Role.INITIATOR
    neg = Negotiation(role, discovery=data[1:2] == b"\x01")
    try:
        if role is Role.INITIATOR:
            neg.offer(Stage.OPERATIONAL, [("HeaderDigest", "CRC32C,None"), ("MaxBurstLength", "262144"),
                                          ("InitialR2T", "No"), ("ImmediateData", "Yes")])
        neg.receive(Stage.OPERATIONAL, decode_text(data[2:]))
        neg.parameters()
    except ProtocolError:
        return


TARGETS = {
    "reader": fuzz_reader,
    "sendtargets": fuzz_sendtargets,
    "negotiation": fuzz_negotiation,
    **{f"login{i}": (lambda data, seed=seed: fuzz_login(seed, data)) for i, seed in enumerate(SEEDS)},
}

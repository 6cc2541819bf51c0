"""SendTargets: address parsing, record building, continuation."""

from __future__ import annotations

import pytest

from iscsikit.proto import pdu as P
from iscsikit.proto.errors import LocalProtocolError, RemoteProtocolError
from iscsikit.proto.keys import decode_text, encode_text
from iscsikit.proto.sendtargets import (DiscoveredTarget, Portal, SendTargetsExchange,
                                        parse_sendtargets, parse_target_address)


@pytest.mark.parametrize("text,portal", [
    ("10.0.0.1", Portal("10.0.0.1", 3260, -1)),
    ("10.0.0.1:3270", Portal("10.0.0.1", 3270, -1)),
    ("10.0.0.1:3270,1", Portal("10.0.0.1", 3270, 1)),
    ("10.0.0.1,7", Portal("10.0.0.1", 3260, 7)),
    ("[fe80::1]", Portal("fe80::1", 3260, -1)),
    ("[2001:db8::5]:3261,2", Portal("2001:db8::5", 3261, 2)),
    ("[fe80::1%eth0]:3260,1", Portal("fe80::1%eth0", 3260, 1)),
    ("storage.example.com:3260,1", Portal("storage.example.com", 3260, 1)),
    ("san-01", Portal("san-01", 3260, -1)),
])
def test_target_addresses(text, portal):
    assert parse_target_address(text) == portal


@pytest.mark.parametrize("text", ["", "10.0.0.1:", "10.0.0.1:0", "10.0.0.1:65536", "10.0.0.1:x",
                                  "[fe80::1", "[zz::1]:3260", "[::1]x", "a b", "host:1,65536", "host,x",
                                  "-bad.example"])
def test_bad_target_addresses(text):
    with pytest.raises(RemoteProtocolError):
        parse_target_address(text)


def test_portal_str():
    assert str(Portal("::1", 3260, 1)) == "[::1]:3260,1"
    assert str(Portal("10.0.0.1", 3260, 1)) == "10.0.0.1:3260,1"


def test_records():
    pairs = [("TargetName", "iqn.a"), ("TargetAddress", "10.0.0.1:3260,1"),
             ("TargetAddress", "[::1]:3260,1"), ("TargetName", "iqn.b"),
             ("TargetName", "iqn." + "x" * 230), ("TargetName", "iqn.c"), ("TargetAlias", "c")]
    default = Portal("192.0.2.1", 3270)
    assert parse_sendtargets(pairs, default) == [
        DiscoveredTarget("iqn.a", (Portal("10.0.0.1", 3260, 1), Portal("::1", 3260, 1))),
        DiscoveredTarget("iqn.b", (Portal("192.0.2.1", 3270, -1),)),  # no address: the portal asked
        DiscoveredTarget("iqn.c", (Portal("192.0.2.1", 3270, -1),)),  # over-long name skipped
    ]


@pytest.mark.parametrize("pairs", [[("TargetAddress", "10.0.0.1")], [("TargetName", "")],
                                   [("TargetName", "iqn.a"), ("MaxBurstLength", "1")]])
def test_bad_records(pairs):
    with pytest.raises(RemoteProtocolError):
        parse_sendtargets(pairs)


def _response(ex, data, final=True, cont=False, ttt=0xFFFFFFFF, statsn=10):
    return P.TextResponse(final=final, cont=cont, itt=ex.itt, ttt=ttt, statsn=statsn, data=data)


def test_exchange_with_continuation():
    ex = SendTargetsExchange(itt=7, cmdsn=1, exp_statsn=3)
    first = ex.request()
    assert (first.final, first.ttt, first.cmdsn, first.expstatsn, first.immediate) == (True, 0xFFFFFFFF, 1, 3, False)
    assert decode_text(first.data) == [("SendTargets", "All")]
    text = encode_text([("TargetName", "iqn.2024-01.test:" + str(i)) for i in range(40)]
                       + [("TargetAddress", "127.0.0.1:3260,1")])
    cut = [text[i:i + 100] for i in range(0, len(text), 100)]
    for n, piece in enumerate(cut[:-1]):
        more = ex.receive(_response(ex, piece, final=False, cont=True, ttt=0x55, statsn=10 + n))
        assert isinstance(more, P.TextRequest) and more.data == b"" and more.ttt == 0x55
        assert more.cmdsn == 2 + n and more.expstatsn == 11 + n
    targets = ex.receive(_response(ex, cut[-1], statsn=99))
    assert len(targets) == 40 and ex.done and ex.exp_statsn == 100
    assert targets[-1].portals == (Portal("127.0.0.1", 3260, 1),)


def test_nop_in_during_discovery():
    ex = SendTargetsExchange(itt=7, cmdsn=1, exp_statsn=3)
    ex.request()
    assert ex.receive(P.NopIn(itt=0xFFFFFFFF, ttt=0xFFFFFFFF)) is None
    reply = ex.receive(P.NopIn(itt=0xFFFFFFFF, ttt=9, data=b"x"))
    assert isinstance(reply, P.NopOut) and reply.ttt == 9 and reply.itt == 0xFFFFFFFF and reply.data == b"x"


@pytest.mark.parametrize("pdu,match", [
    (P.TextResponse(final=True, cont=True, itt=7), "F and C"),
    (P.TextResponse(final=True, itt=8), "ITT"),
    (P.TextResponse(final=False, cont=True, itt=7, ttt=0xFFFFFFFF), "Target Transfer Tag"),
    (P.Reject(reason=4), "rejected"),
    (P.LoginResponse(), "unexpected"),
])
def test_exchange_violations(pdu, match):
    ex = SendTargetsExchange(itt=7, cmdsn=1, exp_statsn=3)
    ex.request()
    with pytest.raises(RemoteProtocolError, match=match) as info:
        ex.receive(pdu)
    assert info.value.stage == "SendTargets"


def test_exchange_text_cap():
    ex = SendTargetsExchange(itt=7, cmdsn=1, exp_statsn=3, max_text=100)
    ex.request()
    with pytest.raises(RemoteProtocolError, match="longer"):
        ex.receive(_response(ex, b"A" * 101, final=False, ttt=1))


def test_exchange_misuse():
    ex = SendTargetsExchange(itt=7, cmdsn=1, exp_statsn=3)
    with pytest.raises(LocalProtocolError):
        ex.receive(_response(ex, b""))
    ex.request()
    with pytest.raises(LocalProtocolError):
        ex.request()

"""The key table and the key=value text codec."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iscsikit.proto.errors import LocalProtocolError, RemoteProtocolError
from iscsikit.proto.keys import (KEY_BY_NAME, KEYS, NORMAL_OFFER, Kind, Rule, Sender, Stage,
                                 decode_text, default_value, encode_text, parse_number, parse_value)


def test_names_are_unique_and_table_is_consistent():
    assert len(KEY_BY_NAME) == len(KEYS)
    for key in KEYS:
        if key.default is not None:
            default_value(key)
        if key.open_iscsi is not None:
            parse_value(key, key.open_iscsi)
        if key.kind is Kind.NUMBER:
            assert key.low <= key.high
        if key.rule in (Rule.AND, Rule.OR):
            assert key.kind is Kind.BOOLEAN


def test_open_iscsi_normal_offer_order():
    # facts §3.4: the order iscsid sends its first operational PDU in
    assert NORMAL_OFFER == (
        "HeaderDigest", "DataDigest", "DefaultTime2Wait", "DefaultTime2Retain", "IFMarker", "OFMarker",
        "ErrorRecoveryLevel", "InitialR2T", "ImmediateData", "MaxBurstLength", "FirstBurstLength",
        "MaxOutstandingR2T", "MaxConnections", "DataPDUInOrder", "DataSequenceInOrder",
        "MaxRecvDataSegmentLength")
    assert KEY_BY_NAME["InitialR2T"].open_iscsi == "No"
    assert KEY_BY_NAME["MaxBurstLength"].open_iscsi == "16776192"


@pytest.mark.parametrize("name,rule,default", [
    ("InitialR2T", Rule.OR, "Yes"), ("ImmediateData", Rule.AND, "Yes"),
    ("MaxBurstLength", Rule.MIN, "262144"), ("FirstBurstLength", Rule.MIN, "65536"),
    ("DefaultTime2Wait", Rule.MAX, "2"), ("DefaultTime2Retain", Rule.MIN, "20"),
    ("MaxRecvDataSegmentLength", Rule.DECLARATIVE, "8192"), ("ErrorRecoveryLevel", Rule.MIN, "0"),
    ("DataPDUInOrder", Rule.OR, "Yes"), ("HeaderDigest", Rule.LIST, "None"),
])
def test_rfc_rules_and_defaults(name, rule, default):
    assert KEY_BY_NAME[name].rule is rule
    assert KEY_BY_NAME[name].default == default


def test_who_sends_what():
    assert KEY_BY_NAME["InitiatorName"].senders is Sender.INITIATOR
    assert KEY_BY_NAME["TargetPortalGroupTag"].senders is Sender.TARGET
    assert KEY_BY_NAME["CHAP_R"].stages == frozenset({Stage.SECURITY})
    assert KEY_BY_NAME["SendTargets"].stages == frozenset({Stage.FULL_FEATURE})
    assert KEY_BY_NAME["MaxConnections"].leading_only and KEY_BY_NAME["MaxConnections"].discovery_irrelevant
    assert not KEY_BY_NAME["HeaderDigest"].session_wide


@pytest.mark.parametrize("text,value", [("0", 0), ("8192", 8192), ("0x2000", 8192), ("0X1f", 31)])
def test_numbers(text, value):
    assert parse_number(text) == value


@pytest.mark.parametrize("text", ["", "-1", "1e3", "0x", "0xg", " 1", "1" * 21, "0x" + "f" * 17])
def test_bad_numbers(text):
    with pytest.raises(RemoteProtocolError):
        parse_number(text)


def test_typed_values():
    assert parse_value(KEY_BY_NAME["InitialR2T"], "Yes") is True
    assert parse_value(KEY_BY_NAME["MaxRecvDataSegmentLength"], "512") == 512
    for bad in ("511", "16777216"):
        with pytest.raises(RemoteProtocolError, match="out of range"):
            parse_value(KEY_BY_NAME["MaxRecvDataSegmentLength"], bad)
    with pytest.raises(RemoteProtocolError):
        parse_value(KEY_BY_NAME["InitialR2T"], "yes")
    with pytest.raises(RemoteProtocolError):
        parse_value(KEY_BY_NAME["SessionType"], "Bogus")


def test_text_codec_basics():
    data = encode_text([("InitiatorName", "iqn.a"), ("X-com.example.k", "v=w")])
    assert data == b"InitiatorName=iqn.a\0X-com.example.k=v=w\0"
    assert decode_text(data) == [("InitiatorName", "iqn.a"), ("X-com.example.k", "v=w")]
    assert decode_text(b"") == []
    assert decode_text(b"A=\0\0\0") == [("A", "")]  # trailing NUL padding tolerated


@pytest.mark.parametrize("data", [b"A=B", b"AB\0", b"=B\0", b"A B=1\0", b"A=\xff\0", b"\xc3\xa9=1\0",
                                  b"A" * 64 + b"=1\0", b"HeaderDigest=" + b"N" * 256 + b"\0"])
def test_bad_text_is_a_remote_error(data):
    with pytest.raises(RemoteProtocolError):
        decode_text(data)


@pytest.mark.parametrize("pair", [("A=B", "x"), ("", "x"), ("A", "x\0y"), ("HeaderDigest", "N" * 256)])
def test_bad_text_is_refused_locally(pair):
    with pytest.raises(LocalProtocolError):
        encode_text([pair])


_names = st.from_regex(r"[A-Z][A-Za-z0-9.\-+@_]{0,40}", fullmatch=True)
_values = st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), max_size=60)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_names, _values), max_size=10))
def test_text_round_trip(pairs):
    pairs = [(k, v) for k, v in pairs if len(v.encode()) <= 255]
    assert decode_text(encode_text(pairs)) == pairs

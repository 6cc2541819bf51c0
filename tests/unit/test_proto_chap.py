"""CHAP: vectors computed here with hashlib, encodings, mutual checks, secrecy."""

from __future__ import annotations

import base64
import hashlib
import logging
import pickle

import pytest

from iscsikit.proto.chap import (ChapAlgorithm, ChapCredentials, ChapInitiator, chap_response,
                                 decode_binary, encode_binary)
from iscsikit.proto.errors import AuthenticationFailure, LocalProtocolError, RemoteProtocolError
from iscsikit.proto.secret import Secret

SECRET = "a-very-secret-pw"
TARGET_SECRET = "target-only-pw-99"


@pytest.mark.parametrize("alg,name,size", [(5, "md5", 16), (6, "sha1", 20), (7, "sha256", 32),
                                           (8, "sha3_256", 32)])
def test_response_vectors(alg, name, size):
    challenge = bytes(range(1, 33))
    expected = hashlib.new(name, b"\x2a" + SECRET.encode() + challenge).digest()
    got = chap_response(ChapAlgorithm(alg), 42, Secret(SECRET), challenge)
    assert got == expected and len(got) == size == ChapAlgorithm(alg).digest_size


def test_binary_encodings():
    assert encode_binary(b"\x01\xab") == "0x01ab"
    assert decode_binary("0x01AB", "x") == b"\x01\xab"
    assert decode_binary("0X1ab", "x") == b"\x01\xab"  # odd digit count: leading zero implied
    assert decode_binary("0b" + base64.b64encode(b"\x00\xffhello").decode(), "x") == b"\x00\xffhello"
    for bad in ("01ab", "0xzz", "0b!!!", "", "0b" + "A"):
        with pytest.raises(RemoteProtocolError):
            decode_binary(bad, "CHAP_C")


def _challenge(chap, alg="5", ident="9", c="0x" + "ab" * 16):
    chap.receive({"AuthMethod": "CHAP"})
    return chap.receive({"CHAP_A": alg, "CHAP_I": ident, "CHAP_C": c})


def test_one_way_flow_and_default_md5_only():
    chap = ChapInitiator(ChapCredentials("alice", SECRET))
    assert chap.auth_method_offer() == "CHAP,None" and chap.first_transit()
    assert chap.receive({"AuthMethod": "CHAP"}) == ([("CHAP_A", "5")], False)
    reply, transit = chap.receive({"CHAP_A": "5", "CHAP_I": "9", "CHAP_C": "0x" + "ab" * 16})
    expected = hashlib.md5(b"\x09" + SECRET.encode() + b"\xab" * 16).hexdigest()
    assert reply == [("CHAP_N", "alice"), ("CHAP_R", "0x" + expected)] and transit
    chap.check_may_transit()


def test_algorithm_order_is_configurable():
    chap = ChapInitiator(ChapCredentials("alice", SECRET, algorithms=("SHA3-256", "SHA256", "SHA1", "MD5")))
    assert chap.receive({"AuthMethod": "CHAP"})[0] == [("CHAP_A", "8,7,6,5")]


def test_target_choosing_an_algorithm_we_did_not_offer():
    chap = ChapInitiator(ChapCredentials("alice", SECRET))
    with pytest.raises(RemoteProtocolError, match="not offered"):
        _challenge(chap, alg="7")


def test_no_common_algorithm_is_an_auth_failure():
    chap = ChapInitiator(ChapCredentials("alice", SECRET))
    chap.receive({"AuthMethod": "CHAP"})
    with pytest.raises(AuthenticationFailure):
        chap.receive({"CHAP_A": "Reject"})


@pytest.mark.parametrize("ident,c", [("256", "0xab"), ("-1", "0xab"), ("9", "0x"), ("9", "0x" + "00" * 1025)])
def test_bad_challenges(ident, c):
    with pytest.raises(RemoteProtocolError):
        _challenge(ChapInitiator(ChapCredentials("alice", SECRET)), ident=ident, c=c)


def _mutual(**kw):
    randoms = iter([b"\x07", b"\x55" * 32])
    creds = ChapCredentials("alice", SECRET, "tgt", TARGET_SECRET, algorithms=(7,), **kw)
    chap = ChapInitiator(creds, random_bytes=lambda n: next(randoms)[:n])
    reply, transit = _challenge(chap, alg="7")
    assert dict(reply)["CHAP_I"] == "7" and dict(reply)["CHAP_C"] == "0x" + "55" * 32 and transit
    return chap


def _target_proof(secret: str) -> str:
    return "0x" + hashlib.sha256(b"\x07" + secret.encode() + b"\x55" * 32).hexdigest()


def test_mutual_success():
    chap = _mutual()
    assert chap.auth_method_offer() == "CHAP" and not chap.first_transit()
    assert chap.receive({"CHAP_N": "tgt", "CHAP_R": _target_proof(TARGET_SECRET)}) == ([], True)
    chap.check_may_transit()


def test_mutual_base64_proof_accepted():
    chap = _mutual()
    raw = bytes.fromhex(_target_proof(TARGET_SECRET)[2:])
    chap.receive({"CHAP_N": "tgt", "CHAP_R": "0b" + base64.b64encode(raw).decode()})


def test_mutual_wrong_target_secret():
    with pytest.raises(AuthenticationFailure, match="invalid CHAP_R"):
        _mutual().receive({"CHAP_N": "tgt", "CHAP_R": _target_proof("wrong-secret-123")})


def test_mutual_reflection_refused():
    # a target that computes with *our* outgoing secret (identical secrets, or a reflection attack)
    with pytest.raises(AuthenticationFailure, match="reflection"):
        _mutual().receive({"CHAP_N": "tgt", "CHAP_R": _target_proof(SECRET)})


def test_mutual_identical_secrets_refused_even_when_configured():
    randoms = iter([b"\x07", b"\x55" * 32])
    creds = ChapCredentials("alice", SECRET, "tgt", SECRET, algorithms=(7,))
    chap = ChapInitiator(creds, random_bytes=lambda n: next(randoms)[:n])
    _challenge(chap, alg="7")
    with pytest.raises(AuthenticationFailure):
        chap.receive({"CHAP_N": "tgt", "CHAP_R": _target_proof(SECRET)})


def test_mutual_wrong_target_name():
    with pytest.raises(AuthenticationFailure, match="CHAP_N"):
        _mutual().receive({"CHAP_N": "someone", "CHAP_R": _target_proof(TARGET_SECRET)})


def test_mutual_target_skipping_its_proof():
    chap = _mutual()
    with pytest.raises(AuthenticationFailure, match="proving"):
        chap.check_may_transit()


@pytest.mark.parametrize("method", ["None", "Reject"])
def test_mutual_refuses_no_authentication(method):
    chap = ChapInitiator(ChapCredentials("alice", SECRET, "tgt", TARGET_SECRET))
    with pytest.raises(AuthenticationFailure):
        chap.receive({"AuthMethod": method})


def test_one_way_accepts_none():
    chap = ChapInitiator(ChapCredentials("alice", SECRET))
    assert chap.receive({"AuthMethod": "None"}) == ([], True)


def test_credentials_validation():
    with pytest.raises(LocalProtocolError):
        ChapCredentials("", SECRET)
    with pytest.raises(LocalProtocolError):
        ChapCredentials("a", "x" * 257)
    with pytest.raises(LocalProtocolError):
        ChapCredentials("a", SECRET, algorithms=("MD5", "MD5"))
    with pytest.raises(LocalProtocolError):
        ChapCredentials("a", SECRET, algorithms=("MD4",))
    with pytest.raises(LocalProtocolError):
        ChapCredentials("a", SECRET, username_in="t")


def test_short_secret_warns_without_leaking(caplog):
    with caplog.at_level(logging.WARNING, logger="iscsikit.proto.chap"):
        ChapCredentials("alice", "short1")
    assert "shorter than 12" in caplog.text and "short1" not in caplog.text


def test_secrets_never_printed(caplog):
    creds = ChapCredentials("alice", SECRET, "tgt", TARGET_SECRET)
    chap = _mutual()
    for text in (repr(creds), str(creds), f"{creds.secret}", "%s %r" % (creds.secret, creds.secret_in),
                 repr(chap.__dict__)):
        assert SECRET not in text and TARGET_SECRET not in text
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("iscsikit").warning("creds %s %r", creds, creds.secret)
    assert SECRET not in caplog.text
    for bad in ({"CHAP_N": "tgt", "CHAP_R": _target_proof("wrong-secret-123")},
                {"CHAP_N": "tgt", "CHAP_R": _target_proof(SECRET)}):
        with pytest.raises(AuthenticationFailure) as info:
            _mutual().receive(bad)
        assert SECRET not in str(info.value) and TARGET_SECRET not in str(info.value)
    with pytest.raises(TypeError):
        pickle.dumps(creds.secret)


def test_secret_semantics():
    s = Secret("abc")
    assert s == Secret(b"abc") and s != Secret("abd") and s.reveal() == b"abc" and len(s) == 3
    with pytest.raises(AttributeError):
        s._value = b"x"
    with pytest.raises(TypeError):
        {s}

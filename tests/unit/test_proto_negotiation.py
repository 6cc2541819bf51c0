"""Negotiation rules (RFC 7143 §6.2, §13), from both sides."""

from __future__ import annotations

import pytest

from iscsikit.proto.errors import LocalProtocolError, RemoteProtocolError
from iscsikit.proto.keys import Stage
from iscsikit.proto.negotiation import Negotiation, Role

OP = Stage.OPERATIONAL


def initiator_offering(**offers):
    neg = Negotiation(Role.INITIATOR)
    neg.offer(OP, list(offers.items()))
    return neg


# -- answers the target gives to our offers ---------------------------------

@pytest.mark.parametrize("key,offer,answer,result", [
    ("HeaderDigest", "CRC32C,None", "None", "None"),
    ("HeaderDigest", "CRC32C,None", "CRC32C", "CRC32C"),
    ("MaxBurstLength", "16776192", "262144", 262144),
    ("FirstBurstLength", "262144", "65536", 65536),
    ("DefaultTime2Wait", "2", "5", 5),
    ("DefaultTime2Retain", "0", "0", 0),
    ("InitialR2T", "No", "Yes", True),
    ("InitialR2T", "No", "No", False),
    ("InitialR2T", "Yes", "Yes", True),
    ("ImmediateData", "Yes", "No", False),
    ("ImmediateData", "No", "No", False),
    ("DataPDUInOrder", "Yes", "Yes", True),
])
def test_admissible_answers(key, offer, answer, result):
    neg = initiator_offering(**{key: offer})
    assert neg.receive(OP, [(key, answer)]) == []
    assert neg.parameters()[key] == result


@pytest.mark.parametrize("key,offer,answer", [
    ("HeaderDigest", "None", "CRC32C"),            # not offered
    ("HeaderDigest", "CRC32C,None", "CRC32C,None"),  # a list is not an answer
    ("MaxBurstLength", "262144", "262145"),        # minimum rule
    ("DefaultTime2Wait", "2", "1"),                # maximum rule
    ("ErrorRecoveryLevel", "0", "1"),
    ("InitialR2T", "Yes", "No"),                   # OR with Yes is Yes
    ("ImmediateData", "No", "Yes"),                # AND with No is No
    ("MaxBurstLength", "262144", "511"),           # out of range
    ("DataDigest", "None", "crc32c"),
])
def test_inadmissible_answers_are_remote_errors(key, offer, answer):
    neg = initiator_offering(**{key: offer})
    with pytest.raises(RemoteProtocolError) as info:
        neg.receive(OP, [(key, answer)])
    assert info.value.stage == "LoginOperationalNegotiation" and key in str(info.value)


@pytest.mark.parametrize("special", ["NotUnderstood", "Irrelevant", "Reject"])
def test_special_answers_leave_the_default(special):
    neg = initiator_offering(InitialR2T="No", MaxBurstLength="16776192")
    neg.receive(OP, [("InitialR2T", special), ("MaxBurstLength", special)])
    params = neg.parameters()
    assert params["InitialR2T"] is True and params["MaxBurstLength"] == 262144


def test_unanswered_keys_get_rfc_defaults_unless_our_offer_decides():
    neg = initiator_offering(InitialR2T="No", IFMarker="No", DataPDUInOrder="Yes", MaxBurstLength="1024")
    params = neg.parameters()
    assert params["InitialR2T"] is True       # depends on the target: default
    assert params["IFMarker"] is False        # AND with our No
    assert params["DataPDUInOrder"] is True   # OR with our Yes
    assert params["MaxBurstLength"] == 262144
    assert neg.unanswered() == {"InitialR2T", "IFMarker", "DataPDUInOrder", "MaxBurstLength"}


def test_declarations_are_kept_per_side():
    neg = initiator_offering(MaxRecvDataSegmentLength="262144")
    neg.receive(OP, [("MaxRecvDataSegmentLength", "8192"), ("TargetAlias", "disk"),
                     ("TargetPortalGroupTag", "1")])
    params = neg.parameters()
    assert params.max_recv_data_segment == 262144
    assert params.max_xmit_data_segment == 8192
    assert params.theirs["TargetPortalGroupTag"] == 1


def test_target_default_segment_is_8192_when_not_declared():
    assert initiator_offering().parameters().max_xmit_data_segment == 8192


# -- offers the target makes ------------------------------------------------

@pytest.mark.parametrize("policy,offer,answer", [
    ({"HeaderDigest": "None"}, ("HeaderDigest", "CRC32C,None"), "None"),
    ({"HeaderDigest": "CRC32C"}, ("HeaderDigest", "None,CRC32C"), "CRC32C"),
    ({"HeaderDigest": "CRC32C"}, ("HeaderDigest", "None"), "Reject"),
    ({}, ("HeaderDigest", "Bogus,None"), "None"),
    ({"MaxBurstLength": "65536"}, ("MaxBurstLength", "262144"), "65536"),
    ({}, ("DefaultTime2Wait", "5"), "5"),
    ({}, ("MaxBurstLength", "99999999999"), "Reject"),
    ({"ImmediateData": "No"}, ("ImmediateData", "Yes"), "No"),
    ({"InitialR2T": "No"}, ("InitialR2T", "Yes"), "Yes"),
    ({}, ("InitialR2T", "maybe"), "Reject"),
    ({}, ("OFMarkInt", "2048~8192"), "Irrelevant"),
    ({}, ("X-com.example.feature", "1"), "NotUnderstood"),
])
def test_answers_to_peer_offers(policy, offer, answer):
    neg = Negotiation(Role.INITIATOR, policy=policy)
    assert neg.receive(OP, [offer]) == [(offer[0], answer)]


def test_discovery_answers_irrelevant_for_session_keys():
    neg = Negotiation(Role.INITIATOR, discovery=True)
    assert neg.receive(OP, [("MaxConnections", "1"), ("InitialR2T", "Yes")]) == [
        ("MaxConnections", "Irrelevant"), ("InitialR2T", "Irrelevant")]


@pytest.mark.parametrize("pairs,match", [
    ([("TargetAlias", "a"), ("TargetAlias", "b")], "twice"),
    ([("InitiatorName", "iqn.x")], "may not send"),
    ([("SendTargets", "All")], "may not send"),
    ([("CHAP_A", "5")], "not allowed"),
    ([("MaxBurstLength", "Irrelevant")], "did not send"),
])
def test_peer_violations(pairs, match):
    with pytest.raises(RemoteProtocolError, match=match):
        Negotiation(Role.INITIATOR).receive(OP, pairs)


@pytest.mark.parametrize("pairs,match", [
    ([("Bogus", "1")], "unknown"),
    ([("TargetAlias", "x")], "may not send"),
    ([("HeaderDigest", "MD5")], "outside"),
    ([("MaxBurstLength", "1")], "out of range"),
    ([("InitialR2T", "No"), ("InitialR2T", "No")], "twice"),
])
def test_local_violations(pairs, match):
    with pytest.raises(LocalProtocolError, match=match):
        Negotiation(Role.INITIATOR).offer(OP, pairs)


def test_security_keys_outside_security_stage():
    with pytest.raises(LocalProtocolError):
        Negotiation(Role.INITIATOR).offer(OP, [("AuthMethod", "None")])


def test_first_burst_larger_than_max_burst_is_refused():
    neg = Negotiation(Role.INITIATOR)
    neg.receive(OP, [("MaxBurstLength", "1024"), ("FirstBurstLength", "4096")])
    with pytest.raises(RemoteProtocolError, match="FirstBurstLength"):
        neg.parameters()


def test_engine_against_itself_as_target():
    ini = Negotiation(Role.INITIATOR, policy={"HeaderDigest": "CRC32C,None"})
    tgt = Negotiation(Role.TARGET, policy={"HeaderDigest": "CRC32C", "MaxBurstLength": "65536",
                                           "InitialR2T": "Yes"})
    offer = ini.offer(OP, [("HeaderDigest", "CRC32C,None"), ("MaxBurstLength", "262144"),
                           ("InitialR2T", "No"), ("MaxRecvDataSegmentLength", "262144")])
    answers = tgt.receive(OP, offer)
    assert ini.receive(OP, answers) == []
    params = ini.parameters()
    assert params.header_digest and params["MaxBurstLength"] == 65536 and params["InitialR2T"] is True

"""Login state machine against a scripted target, driven through encoded bytes."""

from __future__ import annotations

import pytest

from iscsikit.proto import login as L
from iscsikit.proto import pdu as P
from iscsikit.proto.chap import ChapCredentials
from iscsikit.proto.errors import AuthenticationFailure, LocalProtocolError, RemoteProtocolError
from iscsikit.initiator.errors import login_exit_code
from iscsikit.initiator.exitcodes import ExitCode
from iscsikit.proto.keys import decode_text, encode_text
from iscsikit.proto.reader import decode_one
from iscsikit.proto.status import Outcome

from proto_fake_target import FakeTarget, run_login

INAME, TNAME = "iqn.2024-01.org.example:ini", "iqn.2024-01.org.example:tgt"
SECRET, TSECRET = b"initiator-secret", b"target-secret-xy"


def cfg(**kw):
    kw.setdefault("target_name", TNAME)
    return L.LoginConfig(initiator_name=INAME, **kw)


def one_way():
    return ChapCredentials("alice", SECRET)


def mutual(**kw):
    return ChapCredentials("alice", SECRET, "tgt", TSECRET, **kw)


def test_transition_table_shape():
    for state in (L.LoginState.SECURITY, L.LoginState.OPERATIONAL):
        for kind in (L.ResponseKind.REDIRECT, L.ResponseKind.AUTH_FAILED, L.ResponseKind.FATAL, L.ResponseKind.RETRY):
            assert L.TRANSITIONS[state][kind] in (L.LoginState.REDIRECTED, L.LoginState.FAILED)
    assert L.ResponseKind.TO_OPERATIONAL not in L.TRANSITIONS[L.LoginState.OPERATIONAL]
    for terminal in (L.LoginState.FULL_FEATURE, L.LoginState.REDIRECTED, L.LoginState.FAILED):
        assert L.TRANSITIONS[terminal] == {}


def test_no_auth_normal_session_like_iscsid():
    machine = L.LoginMachine(cfg())
    first = machine.start()
    wire = first.encode()
    assert wire[0] == 0x43 and wire[1] == 0x87  # immediate login, T=1 CSG=1 NSG=3 (facts §3.2)
    keys = [k for k, _ in decode_text(first.data)]
    assert keys[:3] == ["InitiatorName", "TargetName", "SessionType"] and "AuthMethod" not in keys
    target = FakeTarget(policy={"MaxBurstLength": "262144", "InitialR2T": "Yes"},
                        declare={"MaxRecvDataSegmentLength": "8192"})
    event = machine.receive(decode_one(target.wire(wire)))
    assert isinstance(event, L.LoginSuccess)
    params = event.parameters
    assert params["InitialR2T"] is True and params["MaxBurstLength"] == 262144
    assert params.max_xmit_data_segment == 8192 and params.max_recv_data_segment == 262144
    assert event.tsih == 0x1234 and event.exp_statsn == event.statsn + 1
    assert machine.state is L.LoginState.FULL_FEATURE
    assert first.cmdsn == 0 and first.isid == L.DISCOVERY_ISID and first.tsih == 0


def test_discovery_session():
    machine = L.LoginMachine(L.LoginConfig(initiator_name=INAME))
    first = machine.start()
    pairs = dict(decode_text(first.data))
    assert pairs["SessionType"] == "Discovery" and "TargetName" not in pairs
    assert pairs["MaxRecvDataSegmentLength"] == "32768" and pairs["HeaderDigest"] == "None"
    assert "InitialR2T" not in pairs and first.cmdsn == 1
    event = run_login(L.LoginMachine(L.LoginConfig(initiator_name=INAME)), FakeTarget())
    assert isinstance(event, L.LoginSuccess)


def test_discovery_forces_digests_off():
    config = L.LoginConfig(initiator_name=INAME, operational={"HeaderDigest": "CRC32C"})
    assert dict(config.operational_offer())["HeaderDigest"] == "None"


def test_one_way_chap():
    machine = L.LoginMachine(cfg(chap=one_way()))
    target = FakeTarget(user="alice", secret=SECRET)
    event = run_login(machine, target)
    assert isinstance(event, L.LoginSuccess)
    flags = [r.encode()[1] for r in target.requests]
    assert flags[0] == 0x81  # T=1 CSG=0 NSG=1, AuthMethod=CHAP,None (facts §3.2)
    assert dict(decode_text(target.requests[0].data))["AuthMethod"] == "CHAP,None"
    assert flags[-1] == 0x87
    assert event.parameters["AuthMethod"] == "CHAP"


def test_mutual_chap_all_algorithms():
    for alg in (5, 6, 7, 8):
        machine = L.LoginMachine(cfg(chap=mutual(algorithms=(8, 7, 6, 5))))
        target = FakeTarget(user="alice", secret=SECRET, mutual_secret=TSECRET, algorithms=(alg,))
        assert isinstance(run_login(machine, target), L.LoginSuccess)
        assert target.requests[0].encode()[1] == 0x00  # mutual: T=0 (facts §3.2)
        assert dict(decode_text(target.requests[0].data))["AuthMethod"] == "CHAP"


def test_wrong_password_is_exit_24():
    machine = L.LoginMachine(cfg(chap=ChapCredentials("alice", b"wrong-password")))
    event = run_login(machine, FakeTarget(user="alice", secret=SECRET))
    assert isinstance(event, L.LoginFailure)
    # proto reports the outcome; the initiator maps it to iscsiadm's exit code
    assert event.outcome is Outcome.AUTH_FAILED and login_exit_code(event.outcome) == ExitCode.LOGIN_AUTH_FAILED == 24
    assert "authentication failure" in event.message and machine.state is L.LoginState.FAILED


def test_no_credentials_against_chap_target():
    event = run_login(L.LoginMachine(cfg()), FakeTarget(user="alice", secret=SECRET))
    assert isinstance(event, L.LoginFailure) and login_exit_code(event.outcome) == 24


def test_mutual_wrong_target_secret():
    machine = L.LoginMachine(cfg(chap=mutual()))
    with pytest.raises(AuthenticationFailure) as info:
        run_login(machine, FakeTarget(user="alice", secret=SECRET, mutual_secret=TSECRET, bad_mutual=True))
    assert info.value.stage == "SecurityNegotiation" and info.value.pdu == "LoginResponse"
    assert machine.state is L.LoginState.FAILED


def test_mutual_reflection():
    with pytest.raises(AuthenticationFailure, match="reflection"):
        run_login(L.LoginMachine(cfg(chap=mutual())),
                  FakeTarget(user="alice", secret=SECRET, mutual_secret=TSECRET, reflect=True))


@pytest.mark.parametrize("status,outcome,code,retry", [
    ((2, 2), Outcome.AUTH_FAILED, 24, False),
    ((2, 3), Outcome.FATAL, 19, False),
    ((2, 5), Outcome.FATAL, 19, False),
    ((2, 0x0B), Outcome.FATAL, 19, False),
    ((3, 0), Outcome.RETRY, 5, True),
    ((3, 1), Outcome.RETRY, 5, True),
    ((3, 2), Outcome.RETRY, 5, True),
    ((1, 3), Outcome.FATAL, 19, False),
    ((9, 9), Outcome.FATAL, 19, False),
])
def test_status_classes(status, outcome, code, retry):
    event = run_login(L.LoginMachine(cfg()), FakeTarget(status=status))
    assert isinstance(event, L.LoginFailure)
    assert (event.outcome, int(login_exit_code(event.outcome)), event.retryable) == (outcome, code, retry)
    assert not hasattr(event, "exit_code")      # proto knows no iscsiadm exit codes


@pytest.mark.parametrize("detail,permanent", [(1, False), (2, True)])
def test_redirect(detail, permanent):
    def reply(target, req, keys):
        return target._rsp(req, encode_text([("TargetAddress", "[fe80::1]:3270,2")]), status=(1, detail))
    event = run_login(L.LoginMachine(cfg()), FakeTarget(target_reply=reply))
    assert isinstance(event, L.LoginRedirect)
    assert (event.portal.host, event.portal.port, event.portal.tpgt, event.permanent) == ("fe80::1", 3270, 2, permanent)


def test_redirect_without_address_is_a_protocol_error():
    def reply(target, req, keys):
        return target._rsp(req, status=(1, 1))
    with pytest.raises(RemoteProtocolError, match="TargetAddress"):
        run_login(L.LoginMachine(cfg()), FakeTarget(target_reply=reply))


def test_target_continues_its_text():
    target = FakeTarget(split=16, declare={"TargetAlias": "x" * 100})
    event = run_login(L.LoginMachine(cfg()), target)
    assert isinstance(event, L.LoginSuccess)
    assert event.parameters.theirs["TargetAlias"] == "x" * 100
    acks = [r for r in target.requests if not r.data]
    assert len(acks) > 5 and all(not r.cont for r in acks)


def test_we_continue_our_text(monkeypatch):
    monkeypatch.setattr(L, "LOGIN_MAX_DATA_SEGMENT", 64)
    target = FakeTarget()
    event = run_login(L.LoginMachine(cfg()), target)
    assert isinstance(event, L.LoginSuccess)
    continued = [r for r in target.requests if r.cont]
    assert len(continued) > 3 and all(not r.transit and len(r.data) == 64 for r in continued)
    assert target.requests[len(continued)].transit


def test_target_offers_are_answered_in_the_next_request():
    def reply(target, req, keys):
        if len(target.requests) == 1:
            return target._rsp(req, encode_text([("MaxBurstLength", "65536"), ("X-vendor", "1")]),
                               transit=False)
        assert ("X-vendor", "NotUnderstood") in keys
        return target._rsp(req, transit=True, nsg=3, tsih=5)
    event = run_login(L.LoginMachine(cfg()), FakeTarget(target_reply=reply))
    assert isinstance(event, L.LoginSuccess)


# -- protocol violations, each naming stage and PDU -------------------------

def _violation(mutator, config=None):
    machine = L.LoginMachine(config or cfg())
    req = machine.start()
    good = FakeTarget().handle(req)
    fields = good.header() | {"data": good.data} | mutator(good)
    with pytest.raises(RemoteProtocolError) as info:
        machine.receive(P.LoginResponse(**fields))
    assert info.value.stage == "LoginOperationalNegotiation" and info.value.pdu == "LoginResponse"
    return str(info.value)


@pytest.mark.parametrize("mutator,match", [
    (lambda g: {"itt": g.itt + 1}, "ITT"),
    (lambda g: {"isid": 5}, "ISID"),
    (lambda g: {"csg": 0}, "CSG"),
    (lambda g: {"cont": True}, "T and C"),
    (lambda g: {"nsg": 2}, "NSG"),
    (lambda g: {"nsg": 1}, "NSG"),
    (lambda g: {"version_active": 1}, "Version"),
    (lambda g: {"tsih": 0}, "TSIH"),
    (lambda g: {"data": g.data + b"HeaderDigest=None\0"}, "twice"),
    (lambda g: {"data": b"HeaderDigest=MD5\0"}, "offered"),
    (lambda g: {"data": b"MaxBurstLength=99999999\0"}, "MaxBurstLength"),
    (lambda g: {"data": b"bogus"}, "NUL"),
    (lambda g: {"data": b"X-foo=bar\0"}, "need an answer"),
])
def test_remote_violations(mutator, match):
    assert match in _violation(mutator)


def test_t_bit_without_our_request():
    machine = L.LoginMachine(cfg(chap=mutual()))
    req = machine.start()
    assert not req.transit
    bad = P.LoginResponse(transit=True, csg=0, nsg=1, isid=req.isid, itt=req.itt,
                          data=b"AuthMethod=CHAP\0")
    with pytest.raises(RemoteProtocolError, match="T=1 although") as info:
        machine.receive(bad)
    assert info.value.stage == "SecurityNegotiation"


def test_non_login_pdus():
    machine = L.LoginMachine(cfg())
    machine.start()
    with pytest.raises(RemoteProtocolError, match="rejected"):
        machine.receive(P.Reject(reason=9))
    machine = L.LoginMachine(cfg())
    machine.start()
    with pytest.raises(RemoteProtocolError, match="unexpected PDU") as info:
        machine.receive(P.NopIn())
    assert info.value.pdu == "NopIn"


def test_endless_partial_responses_are_cut_off():
    def reply(target, req, keys):
        return target._rsp(req, transit=False)
    with pytest.raises(RemoteProtocolError, match="exchanges"):
        run_login(L.LoginMachine(cfg(max_exchanges=8)), FakeTarget(target_reply=reply))


def test_local_misuse():
    machine = L.LoginMachine(cfg())
    with pytest.raises(LocalProtocolError):
        machine.receive(P.LoginResponse())
    machine.start()
    with pytest.raises(LocalProtocolError):
        machine.start()
    event = run_login(L.LoginMachine(cfg()), FakeTarget())
    assert isinstance(event, L.LoginSuccess)
    done = L.LoginMachine(cfg())
    run_login(done, FakeTarget())
    with pytest.raises(LocalProtocolError, match="over"):
        done.receive(P.LoginResponse())


def test_bad_local_key_value_is_refused():
    with pytest.raises(LocalProtocolError):
        L.LoginMachine(cfg(operational={"MaxBurstLength": "12"})).start()

"""The kernel-endpoint login's control flow (iser): a redirect moves the connection to a new
endpoint, and a first login whose connection failed before any Login Response is made again.

The netlink here only records what the daemon asks of the kernel; the guest proves the same
against ib_iser, LIO and tgtd (tests/vm/test_iser.py). Would fail if: a redirect were refused
or followed without letting the old endpoint go, the new endpoint were not connected to the
TargetAddress and bound to the same connection, or a lost connection ended a first login that
had retries left (or retried past initial_login_retry_max).
"""

import pytest

from iscsikit.initiator import session as S
from iscsikit.proto.login import LoginRedirect
from iscsikit.proto.sendtargets import Portal


class Netlink:
    def __init__(self):
        self.calls, self.next_ep, self.next_sid = [], 100, 1

    def __getattr__(self, name):        # destroy_*, stop_conn, start_conn, bind_conn, ep_disconnect
        return lambda *a, **k: self.calls.append((name, *a))

    def ep_connect(self, handle, address, port):
        self.next_ep += 1
        self.calls.append(("ep_connect", address, port, self.next_ep))
        return self.next_ep

    def ep_poll(self, handle, ep, timeout_ms):
        return True

    def create_bound_session(self, handle, ep, **_):
        sid, self.next_sid = self.next_sid, self.next_sid + 1
        self.calls.append(("create_bound_session", ep, sid))
        return sid, 10 + sid

    def create_conn(self, handle, sid, cid):
        return 0


@pytest.fixture
def ini(monkeypatch):
    ini = S.Initiator(object(), Netlink())
    monkeypatch.setattr(ini, "_set_params", lambda *a: None)
    monkeypatch.setattr(S, "_params_after_login", lambda *a: [])
    return ini


NODE = dict(target="iqn.2026-11.org.example:t", address="192.0.2.2", transport="iser", iface_name="iser",
            scan="manual", login_timeout=5)


class Success:      # what the login machine's LoginSuccess carries that the daemon reads
    class parameters:
        negotiated = {"RDMAExtensions": True}


def test_a_redirect_moves_the_connection_to_a_new_endpoint_at_the_target_address(ini, monkeypatch):
    outcomes = [LoginRedirect(Portal("192.0.2.1", 3264), permanent=False, status_class=1, status_detail=1), Success()]
    portals = []

    def login(ks, recv_pdu, portal=None):
        portals.append(portal)
        return outcomes.pop(0)
    monkeypatch.setattr(ini, "_login_through_kernel", login)
    monkeypatch.setattr(S, "LoginSuccess", Success)
    ks = ini._login_through_endpoint(S.NodeConfig(**NODE), 7, "iqn.i", S.Initiator._own_pdus.__get__(ini), None,
                                     scan=False)
    calls = [c[0] for c in ini.nl.calls]
    assert portals == [None, ("192.0.2.1", 3264)]
    assert ("ep_connect", "192.0.2.2", 3260, 101) in ini.nl.calls and ("ep_connect", "192.0.2.1", 3264, 102) in ini.nl.calls
    # the old endpoint let go after the connection stopped, the new one bound to the same connection
    i = calls.index("stop_conn")
    assert calls[i:i + 3] == ["stop_conn", "ep_disconnect", "ep_connect"]
    assert ("ep_disconnect", 7, 101) in ini.nl.calls and ("bind_conn", 7, 1, 0, 102) in ini.nl.calls
    assert ks.ep == 102 and calls.count("create_bound_session") == 1 and calls[-1] == "start_conn"


@pytest.mark.parametrize("retries,lost,ok", [(2, 1, True), (2, 2, True), (1, 2, False), (0, 1, False)])
def test_a_first_login_whose_connection_was_lost_is_made_again(ini, monkeypatch, retries, lost, ok):
    left = [lost]

    def login(ks, recv_pdu, portal=None):
        if left[0]:
            left[0] -= 1
            raise S.LoginConnectionLost(4, "the connection failed during the login")
        return Success()
    monkeypatch.setattr(ini, "_login_through_kernel", login)
    monkeypatch.setattr(S, "LoginSuccess", Success)
    node = S.NodeConfig(**NODE, initial_login_retry_max=retries)
    run = lambda: ini._login_through_endpoint(node, 7, "iqn.i", S.Initiator._own_pdus.__get__(ini), None, scan=False)  # noqa: E731
    if ok:
        assert run().sid == lost + 1
    else:
        with pytest.raises(S.SessionError) as e:
            run()
        assert e.value.exit_code == 5 and f"({retries + 1} tries)" in str(e.value)
    calls = [c[0] for c in ini.nl.calls]
    tries = lost + 1 if ok else retries + 1
    assert calls.count("create_bound_session") == tries
    # every failed try unwound: its endpoint let go and its session destroyed
    assert calls.count("destroy_session") == tries - ok and calls.count("ep_disconnect") == tries - ok

"""The kernel-endpoint login's control flow (iser): a redirect moves the connection to a new
endpoint, and a first login whose connection failed before any Login Response is ONE try that
ends as iscsid's login timer ends it (11), everything unwound; trying again is the daemon's
first-login window alone (tests/unit/test_daemon_fake.py, the iser section).

The netlink here only records what the daemon asks of the kernel; the guest proves the same
against ib_iser, LIO and tgtd (tests/vm/test_iser.py). Would fail if: a redirect were refused
or followed without letting the old endpoint go, the new endpoint were not connected to the
TargetAddress and bound to the same connection, or a lost connection were tried again here
(a second retry stacked on the daemon's) or ended with another code or left anything behind.
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
    ks = ini._endpoint_session(S.NodeConfig(**NODE), 7, "iqn.i", S.Initiator._own_pdus.__get__(ini), None,
                               scan=False)
    calls = [c[0] for c in ini.nl.calls]
    assert portals == [None, ("192.0.2.1", 3264)]
    assert ("ep_connect", "192.0.2.2", 3260, 101) in ini.nl.calls and ("ep_connect", "192.0.2.1", 3264, 102) in ini.nl.calls
    # the old endpoint let go after the connection stopped, the new one bound to the same connection
    i = calls.index("stop_conn")
    assert calls[i:i + 3] == ["stop_conn", "ep_disconnect", "ep_connect"]
    assert ("ep_disconnect", 7, 101) in ini.nl.calls and ("bind_conn", 7, 1, 0, 102) in ini.nl.calls
    assert ks.ep == 102 and calls.count("create_bound_session") == 1 and calls[-1] == "start_conn"


@pytest.mark.parametrize("retries", [0, 4])
def test_a_lost_connection_is_one_try_ending_as_a_pdu_timeout(ini, monkeypatch, retries):
    tries = []

    def login(ks, recv_pdu, portal=None):
        tries.append(ks.sid)
        raise S.LoginConnectionLost("192.0.2.2,3260: the connection failed during the login")
    monkeypatch.setattr(ini, "_login_through_kernel", login)
    monkeypatch.setattr(ini, "transport_handle", lambda *a, **k: 7)
    node = S.NodeConfig(**NODE, initial_login_retry_max=retries, initiator_name="iqn.i")
    with pytest.raises(S.SessionError) as e:
        ini.login(node, None, False, S.Initiator._own_pdus.__get__(ini))
    # iscsid: the error is ignored in login and its login timer ends the try (11)
    assert (e.value.exit_code, e.value.stage) == (11, "connection")
    calls = [c[0] for c in ini.nl.calls]
    # one try whatever initial_login_retry_max says, and it unwound: endpoint, conn, session
    assert tries == [1] and calls.count("ep_connect") == calls.count("create_bound_session") == 1
    assert calls.count("ep_disconnect") == calls.count("destroy_conn") == calls.count("destroy_session") == 1


def _drive_logout(ep_answer, caplog):
    """logout_steps driven by hand: every step answered at once, EP_DISCONNECT with `ep_answer`."""
    import logging

    from iscsikit.initiator.session import Await, Send, logout_steps
    from iscsikit.kernel.constants import Ev
    steps, sent = logout_steps(1, 5, timeout=1, ep=3), []
    with caplog.at_level(logging.INFO, logger="iscsikit"):
        step = next(steps)
        try:
            while True:
                if isinstance(step, Await):
                    step = steps.send(True)
                    continue
                assert isinstance(step, Send)
                sent += [r[0] for r in step.requests]
                step = steps.send([ep_answer if r[0] == Ev.TRANSPORT_EP_DISCONNECT else None for r in step.requests])
        except StopIteration:
            pass
    return sent, caplog.text


def test_a_logout_says_the_endpoint_was_disconnected_only_once_the_kernel_did(caplog):
    from iscsikit.kernel.constants import Ev
    from iscsikit.kernel.netlink import KernelError
    sent, log = _drive_logout(None, caplog)
    assert sent[-4:] == [Ev.TRANSPORT_EP_DISCONNECT, Ev.STOP_CONN, Ev.DESTROY_CONN, Ev.DESTROY_SESSION]
    assert "endpoint ep-3 disconnected first" in log
    caplog.clear()
    sent, log = _drive_logout(KernelError(Ev.TRANSPORT_EP_DISCONNECT, -22, "IF_ERROR"), caplog)
    assert sent[-1] == Ev.DESTROY_SESSION        # a refused EP_DISCONNECT does not stop the logout
    assert "disconnected first" not in log and "endpoint ep-3 not disconnected" in log

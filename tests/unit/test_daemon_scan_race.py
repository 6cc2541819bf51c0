"""Issue 20's lost connection error: the daemon knows a session from the moment the kernel has
it, so a connection error during the hand-over or during the SCSI scan starts recovery, and
the login's answer does not wait for a scan stuck in error handling (kernel/fake.py; the real
kernel's proof is tests/vm/test_hostile_login.py)."""

from __future__ import annotations

import threading
import time

import pytest

from iscsikit.initiator.mgmt import MgmtError
from iscsikit.kernel.constants import ConnErr

from test_daemon_fake import _wait, lab  # noqa: F401  (the fixture)

LOGIN_TIMEOUT = {"node__conn[0]__timeo__login_timeout": "2"}


def test_a_connection_error_during_the_scan_is_recovered_and_login_answers_in_time(lab, monkeypatch):
    d = lab.daemon()
    release = threading.Event()
    seen = []

    def scan_host(host_no, *args):
        # what a target that breaks the connection right after the login does: the kernel
        # reports the error while the scan's first command is out, and SCSI error handling
        # holds the scan until the session is back (or longer)
        [sid] = [s for s in lab.kernel.sessions]
        seen.append(d.daemon.sessions.get(sid).state)
        lab.kernel.conn_error(sid, ConnErr.HDR_DGST)
        release.wait(20)
    monkeypatch.setattr(d.daemon.sysfs, "scan_host", scan_host)
    start = time.monotonic()
    out = d.client.login(lab.request(**LOGIN_TIMEOUT))
    seconds = time.monotonic() - start
    try:
        # answered within login_timeout (2 s) plus a second, the scan still running
        assert out["scan"] == "running" and seconds <= 2 + 1, (out, seconds)
        assert seen == ["LOGGED_IN"]
        _wait(lambda: d.client.sessions()[0]["recoveries"] == 1)
        [s] = d.client.sessions()
        assert (s["sid"], s["state"], s["kernel_state"]) == (out["sid"], "LOGGED_IN", "LOGGED_IN")
        assert lab.portal.connections == 2
    finally:
        release.set()


def test_a_connection_error_during_the_hand_over_is_recovered_once_it_is_done(lab, monkeypatch):
    d = lab.daemon()
    hand_over = d.daemon.initiator._hand_over
    states = []

    def failing_after_start(handle, sid, cid, *args):
        hand_over(handle, sid, cid, *args)
        states.append(d.daemon.sessions[sid].state)
        lab.kernel.conn_error(sid, ConnErr.CONN_FAILED)
        time.sleep(0.2)         # the event is routed while the worker is still in the login
    monkeypatch.setattr(d.daemon.initiator, "_hand_over", failing_after_start)
    out = d.client.login(lab.request())
    assert states == ["LOGGING_IN"] and out["scan"] == "done"
    _wait(lambda: d.client.sessions()[0]["recoveries"] == 1)
    assert d.client.sessions()[0]["state"] == "LOGGED_IN"


def test_a_refused_login_leaves_no_logging_in_entry(lab):
    lab.portal.target.update(status=(2, 1))
    d = lab.daemon()
    with pytest.raises(MgmtError) as e:
        d.client.login(lab.request())
    assert e.value.exit_code == 24
    assert d.daemon.sessions == {} and d.client.sessions() == [] and lab.kernel.sysfs.session_ids() == []


def test_a_logout_of_a_session_still_logging_in_is_busy_not_a_half_made_logout(lab, monkeypatch):
    d = lab.daemon()
    hand_over = d.daemon.initiator._hand_over
    entered, release = threading.Event(), threading.Event()

    def slow(*args):
        entered.set()
        release.wait(10)
        hand_over(*args)
    monkeypatch.setattr(d.daemon.initiator, "_hand_over", slow)
    result = {}
    t = threading.Thread(target=lambda: result.update(d.client.login(lab.request())))
    t.start()
    assert entered.wait(10)
    [sid] = list(lab.kernel.sessions)
    with pytest.raises(MgmtError) as e:
        d.client.logout(sid)
    release.set()
    t.join(10)
    assert e.value.exit_code == 28 and result["sid"] == sid
    assert d.client.sessions()[0]["state"] == "LOGGED_IN"

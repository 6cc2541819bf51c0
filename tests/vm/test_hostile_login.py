"""Issue 20 and issue 14's redirects in the guest, against the real kernel (probes/hostile_login.py):
hostile targets end every `iscsiadm --login` in time with open-iscsi's exit code and leave
nothing; a redirecting target (0x0101, then 0x0102) in front of LIO is followed on the login
and on the reconnect; a connection broken right after the login, during the scan (a corrupted
header digest, LIO's TPG disabled), is recovered and `--login` answers within login_timeout."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "unit"))
from hostile_target import LOGIN_PHASE, bounds, check_refusal  # noqa: E402

LOGIN_TIMEOUT = 15          # node.conn[0].timeo.login_timeout's default (records.py)
HOSTILE_LOGIN_TIMEOUT = 3   # what the probe sets in the hostile records

# the cases and their answers are the host test's (tests/unit/hostile_target.py): one table
CASES = bounds(LOGIN_PHASE, HOSTILE_LOGIN_TIMEOUT)


@pytest.fixture(scope="module")
def story(run_probe):
    return run_probe("hostile_login.py")


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_hostile_login_ends_in_time_with_its_exit_code_and_leaves_nothing(story, case):
    r = story["cases"][case]
    words = CASES[case][1]
    # the allowance: the CLI's own cost under emulation (a forwarded call reading the record,
    # timed just before; twice it, for the login's own round trips on a shared 2-core host),
    # and a second more than the host's for the emulated kernel's side of a refusal
    check_refusal(case, CASES, r["rc"], r["err"], r["seconds"], 2 * r["cost"] + 2)
    # iscsiadm's lines stay, the reason is one line more
    assert "iscsiadm: initiator reported error" in r["err"] and "iscsiadm: reason: " in r["err"]
    assert r["answers"] == 2 and r["sysfs"] == []
    # the daemon logged why, at info level
    assert any("refused (stage " in line and words in line for line in story["log"].splitlines()), story["log"]


def test_a_redirect_is_followed_on_login_and_on_reconnect(story):
    r = story["redirect"]
    assert r["rc"] == 0 and r["sids"] and r["io_before"], r
    # persistent portal: the record's (the redirector); current: where the redirect led (LIO)
    assert (r["persistent_port"], r["conn_port"]) == (3262, 3260)
    # the reconnect went to the redirector again, which answered 0x0102 this time
    assert r["recovered"] and r["state"] == "LOGGED_IN" and r["io_after"] and r["conn_port_after"] == 3260
    assert r["redirector_connections"] == 2
    log = story["log"]
    assert "redirected (temporary) to 127.0.0.1:3260,1" in log and "redirected (permanent) to 127.0.0.1:3260,1" in log
    assert r["logout"] == {"rc": 0, "left": []}


def test_a_header_digest_error_right_after_login_is_recovered(story):
    r = story["digest"]
    assert r["rc"] == 0 and r["seconds"] <= LOGIN_TIMEOUT + 1, r
    assert r["digest"] == "1" and r["recovered"] and r["recoveries"] >= 1 and r["io_after"], r
    assert r["proxy_connections"] >= 2 and "(HDR_DGST)" in story["log"]
    assert r["logout"] == {"rc": 0, "left": []}


def test_the_tpg_disabled_during_the_scan_is_recovered(story):
    r = story["tpg_disabled"]
    assert r["saw_logged_in"] and r["rc"] == 0 and r["seconds"] <= LOGIN_TIMEOUT + 1, r
    assert r["recovered"] and r["io_after"], r
    assert r["logout"] == {"rc": 0, "left": []}
    assert story["answers_at_end"] == 2

"""iscsikitd against LIO in the guest: concurrency, root-only socket, restart without relogin, recovery."""

import pytest


@pytest.fixture(scope="module")
def story(run_probe):
    return run_probe("daemon_story.py")


def test_parallel_logins_of_one_node_give_one_session(story):
    ok = [r for r in story["parallel"] if "ok" in r]
    exists = [r for r in story["parallel"] if r.get("exit_code") == 15]
    assert len(ok) == 1 and len(exists) == 7
    assert story["sysfs_sessions"] == [ok[0]["ok"]["sid"]]
    assert story["disk"]


def test_mgmt_socket_serves_root_only(story):
    assert story["socket_mode"] == "0o600"
    assert story["nonroot"].startswith("20 ") and "Permission denied" in story["nonroot"]
    assert story["nonroot_open_socket"].startswith("13 ") and "root only" in story["nonroot_open_socket"]


def test_daemon_down_is_exit_20_and_sessions_stay(story):
    assert story["call_while_down"]["exit_code"] == 20
    assert story["state_while_down"] == "LOGGED_IN"


def test_chap_secret_never_reaches_the_daemon_log(story):
    assert "ok" in story["chap_login"] and "ok" in story["chap_logout"]
    assert story["secret_in_log"] is False


def test_kill_9_during_io_loses_no_io(story):
    assert story["io_errors_across_kill"] == [] and story["io_across_kill_ops"] > 0


def test_restart_adopts_without_relogin(story):
    # the kernel still uses the very same TCP connection: nothing was stopped or re-logged-in
    assert story["same_tcp_connection"] is True
    (s,) = story["after_restart"]["ok"]
    assert s["adopted"] is True and s["state"] == "LOGGED_IN" and s["kernel_state"] == "LOGGED_IN"


def test_recovery_under_verified_writes_loses_nothing(story):
    rec = story["recovery"]
    assert rec["state"] == "LOGGED_IN" and rec["recoveries"] >= 1
    assert rec["errors"] == 0 and rec["verify_bad"] == 0 and not rec.get("read_errors")
    assert rec["writes_after_return"] > 0


def test_logout_through_the_daemon(story):
    assert "ok" in story["logout"] and story["sessions_after_logout"] == []
    assert story["logout_again"]["exit_code"] == 21

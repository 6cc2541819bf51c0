"""iscsikitd under systemd's contract in the guest: READY=1 over NOTIFY_SOCKET, socket activation (probes/systemd_story.py)."""

import pytest

from iscsikit.initiator import protocol


@pytest.fixture(scope="module")
def story(run_probe):
    return run_probe("systemd_story.py")


def test_ready_is_sent_by_the_main_pid_once_the_socket_answers(story):
    assert story["notify"].split("\n")[0] == "READY=1"
    assert story["notify_sender_is_main_pid"] is True
    assert story["version_right_after_ready"].get("protocol") == protocol.VERSION
    assert story["notify_daemon_exit"] == 0


def test_first_client_call_activates_the_daemon(story):
    # systemd-socket-activate listens on the socket unit's path and execs the service's ExecStart
    assert story["listen"] == "/run/iscsikit/iscsikitd.sock"
    assert story["before_call_cmdline"].endswith("systemd-socket-activate")
    assert story["activated_version"].get("protocol") == protocol.VERSION, story
    assert story["after_call_cmdline"][-1].endswith("/iscsikitd")
    assert story["second_call"] == []
    assert story["activated_daemon_exit"] == 0

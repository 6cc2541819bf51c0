"""udev-triggered auto-login and the systemd units' commands, in the guest against LIO (probes/autologin_story.py)."""

import pytest


@pytest.fixture(scope="module")
def story(run_probe):
    return run_probe("autologin_story.py")


def test_target_unit_restores_the_saved_configuration(story):
    assert story["target_start"]["rc"] == 0, story["target_start"]
    assert story["targets_restored"] == ["bound", "manual", "other", "unbound"]


def test_interface_up_logs_in_its_automatic_nodes_only(story):
    # the rule fired on add (udev never waited for it) but nothing logs in while the link is down
    assert story["started_while_down"] and story["while_down"] == {}
    assert story["settle_seconds"] < 20
    # up: the node bound to dummy0 and the unbound (default iface) node; not the manual
    # node bound to dummy0, nor the automatic node bound to another netdev
    assert sorted(story["after_up"]) == ["bound", "unbound"]
    assert story["exits_1"] == ["exit dummy0 0"]


def test_a_replayed_event_makes_no_second_session(story):
    assert story["after_retrigger"] == story["after_up"]
    assert story["exits_2"] == ["exit dummy0 0"] * 2


def test_racing_triggers_make_one_session_per_node(story):
    assert story["after_logout"] == {}
    assert sorted(story["after_race"]) == ["bound", "unbound"]
    assert story["sysfs_session_count"] == 2
    assert story["exits_4"] == ["exit dummy0 0"] * 4


def test_login_unit_stops_automatic_and_starts_all_automatic(story):
    assert story["login_stop"]["rc"] == 0, story["login_stop"]
    assert list(story["after_login_stop"]) == ["manual"]
    # every automatic node is tried; "other" is bound to veth7, which does not exist: ifaces
    # really bind now, so that one login fails (exit 4, naming iface and netdev) and the rest stand
    assert story["login_start"]["rc"] == 4, story["login_start"]
    assert "iface ifother: netdev veth7 does not exist" in story["login_start"]["out"] + story["login_start"]["err"]
    assert sorted(story["after_login_start"]) == ["bound", "manual", "unbound"]


def test_target_unit_stop_does_not_hang_on_live_sessions(story):
    assert story["target_stop"]["rc"] == 0 and story["target_stop"]["seconds"] < 60, story["target_stop"]
    assert story["lio_targets_after_stop"] == []
    assert story["left_sessions"] == {} and "cleanup_errors" not in story

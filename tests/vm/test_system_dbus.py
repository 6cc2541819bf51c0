"""The D-Bus API on a private system bus in the guest, against iscsikitd and LIO (probes/dbus_story.py)."""

import pytest

# the guest runs this venv: without the dbus extra (pip install -e '.[dbus]') there is no service to test
pytest.importorskip("dbus", reason="dbus-python not installed (iscsikit[dbus])")

NAME = "org.iscsikit.Initiator1"


@pytest.fixture(scope="module")
def story(run_probe):
    return run_probe("dbus_story.py")


def test_api_is_introspectable(story):
    assert story["service_up"]
    xml = story["introspect_root"]["out"]
    for needle in (f"interface {NAME}.Manager", "Discover(", "Login(", "Logout(", "ListSessions(",
                   "SessionAdded(", "SessionRemoved(", "PropertiesChanged(", "readonly s Version"):
        assert needle in xml, needle
    assert "readonly as Disks" in story["introspect_session"]["out"]


def test_discover_and_login_make_objects_and_a_session(story):
    assert story["discover"]["rc"] == 0 and f"/org/iscsikit/Initiator1/node/" in story["discover"]["out"]
    assert story["discover"]["out"] == story["list_nodes"]["out"]
    assert story["login"]["rc"] == 0, story["login"]
    assert story["sessions_after_login"] and story["session_path"].endswith(f"/session/{story['sessions_after_login'][0]}")
    assert story["session_path"] in story["list_sessions"]["out"]
    assert "'State': <'LOGGED_IN'>" in story["session_props"]["out"]


def test_signals_arrive(story):
    monitor = story["monitor"]
    added = f"{NAME}.Manager.SessionAdded (objectpath '{story['session_path']}'"
    removed = f"{NAME}.Manager.SessionRemoved (objectpath '{story['session_path']}'"
    assert added in monitor and removed in monitor
    assert monitor.index(added) < monitor.index(removed)
    assert ("org.freedesktop.DBus.Properties.PropertiesChanged ('org.iscsikit.Initiator1.Node', "
            "{'Startup': <'automatic'>}") in monitor


def test_errors_are_the_clis_exit_codes(story):
    assert f"{NAME}.Error.SessExists: 15:" in story["login_again"]["err"]
    assert f"{NAME}.Error.NoObjsFound: 21: No records found" in story["login_unknown"]["err"]


def test_non_root_is_denied_methods_but_may_read(story):
    for key in ("nobody_list", "nobody_logout"):
        assert "org.freedesktop.DBus.Error.AccessDenied" in story[key]["err"], story[key]
    assert story["sessions_after_nobody"] == story["sessions_after_login"]
    assert story["introspect_as_nobody"] == 0 and story["nobody_props"]["out"] == "(<'0.1.0'>,)"


def test_logout_over_dbus(story):
    assert story["logout"]["rc"] == 0 and story["sessions_after_logout"] == []


def test_target_session_signals_reach_root_only(story):
    """The LIO side of the same login, from kmod/'s events: signals next to the initiator's."""
    assert story["kmod"], "kmod/iscsikit_lio.ko is not built or did not load: run .ci/setup"
    assert story["target_source"]["out"] == "(<'kmod'>,)", story["target_source"]
    # gdbus monitor prints one signal per line; discovery sessions come and go too
    lines = story["monitor"].splitlines()
    iqn = "'target': <'iqn.2026-11.org.iscsikit.test:dbus'>"
    logins = [i for i, l in enumerate(lines) if f"{NAME}.Target.SessionLoggedIn" in l and iqn in l]
    closes = [i for i, l in enumerate(lines) if f"{NAME}.Target.SessionClosed" in l and iqn in l]
    assert logins and closes and logins[0] < closes[0], story["monitor"][-3000:]
    assert "'initiator': <'iqn.2026-11.org.iscsikit.test:initiator'>" in lines[logins[0]]
    assert "'session_type': <'Normal'>" in lines[logins[0]]
    assert any("'reason': <'logout'>" in lines[i] for i in closes)
    # the initiator's signals are public; the target's name initiators: nobody gets none of them
    assert f"{NAME}.Manager.SessionAdded" in story["monitor_nobody"]
    assert f"{NAME}.Target." not in story["monitor_nobody"]


def test_a_cli_login_is_signalled_from_the_daemons_event(story):
    assert story["cli_login"]["rc"] == 0 and story["cli_logout"]["rc"] == 0, (story["cli_login"], story["cli_logout"])
    assert story["cli_events"][:2] == ["session_added", "state_changed"] or "session_added" in story["cli_events"]
    assert "session_removed" in story["cli_events"]
    lag = story["signal_lag"]
    # the signal is sent when the event arrives: no poll interval between them
    assert lag["added"] is not None and lag["added"] < 0.1, lag
    assert lag["removed"] is not None and lag["removed"] < 0.1, lag


def test_nothing_polls_while_idle(story):
    # read syscalls of iscsikitd and iscsikit-dbus over 5 idle seconds (/proc/PID/io syscr);
    # the 2 s poll this replaced walked sysfs: hundreds of reads per poll
    assert story["idle_reads"] == [0, 0], story["idle_reads"]

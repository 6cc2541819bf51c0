"""Issue 15: kmod/iscsikit_lio's events against the real LIO in the guest.

The whole story runs in one guest process (probes/kmod_events_story.py) and
each test checks one part of its report. The module is the one .ci/setup
built from kmod/ against the lab kernel's headers; without it these tests
fail (they are the proof that it builds, loads and reports).
"""

from pathlib import Path

import pytest

KO = Path(__file__).resolve().parents[2] / "kmod" / "iscsikit_lio.ko"
PREFIX = "iqn.2026-11.org.iscsikit.ev"
T_OPEN, T_CHAP = f"{PREFIX}:open", f"{PREFIX}:chap"
INIT_OI, INIT_IK = f"{PREFIX}:oi", f"{PREFIX}:ik"
HOOKS = ["iscsi_post_login_handler", "iscsit_thread_get_cpumask", "iscsit_tx_login_rsp",
         "iscsit_close_connection", "iscsit_close_session"]


@pytest.fixture(scope="module")
def report(run_probe):
    assert KO.is_file(), f"{KO} is not built: run .ci/setup (it builds kmod/ against the lab kernel's headers)"
    return run_probe("kmod_events_story.py", timeout=900)


def test_every_probed_function_is_its_own_symbol_of_iscsi_target_mod(report):
    # listed under its own name (not only as .cold/.isra parts), so not inlined away
    assert sorted(report["symbols"]) == sorted(HOOKS)


def test_a_missing_symbol_refuses_the_load_with_one_log_line(report):
    r = report["refuse"]
    assert r["rc"] != 0 and not r["loaded_after"]
    assert len(r["log"]) == 1, r["log"]
    assert "cannot probe iscsi_target_mod:iscsi_no_such_function" in r["log"][0] and "not loading" in r["log"][0]


def test_without_the_module_follow_says_so_in_one_line_and_polls_configfs(report):
    f = report["fallback"]
    assert len(f["stderr"]) == 1 and "iscsikit_lio is not loaded" in f["stderr"][0] and "polling configfs" in f["stderr"][0]
    assert f["login_seen"]
    kinds = [e["event"] for e in f["events"]]
    assert "login" in kinds and "session_close" in kinds
    assert all(e["source"] == "configfs" for e in f["events"])
    assert f["rc"] == 0


def test_module_loads_and_the_follower_joins(report):
    assert report["insmod"]["rc"] == 0, report["insmod"]
    assert any("armed 5 probes" in l for l in report["insmod"]["log"]), report["insmod"]["log"]
    assert report["follower_ready"], report["follower_stderr"]
    assert report["stories"]["follower_stderr"] == []


def _login_fields(story, initiator, digest):
    ev = story["event"]
    assert ev, "no login event"
    assert ev["target"] == T_OPEN and ev["tpgt"] == 1 and ev["initiator"] == initiator
    assert ev["session_type"] == "Normal" and ev["auth"] == "None" and ev["transport"] == "iSCSI/TCP"
    assert ev["header_digest"] == digest and ev["data_digest"] == "None"
    assert (ev["initiator_addr"], ev["portal_addr"], ev["portal_port"]) == ("127.0.0.1", "127.0.0.1", 3260)
    # the initiator's own socket, as ss sees it
    assert story["ports"] == [ev["initiator_port"]]
    # the initiator's kernel session says the same
    sysfs = story["sysfs"]
    assert sysfs["targetname"] == T_OPEN and sysfs["initiatorname"] == initiator and sysfs["tpgt"] == "1"
    # iscsi_tcp shows its digest flags as 0/1 (no isid/tsid files for it in 6.1)
    assert {"0": "None", "1": "CRC32C"}[sysfs["header_digest"]] == digest
    assert {"0": "None", "1": "CRC32C"}[sysfs["data_digest"]] == "None"
    # and so does LIO's configfs (acls/<iqn>/info: LIO Session ID, ISID, TSIH)
    cf = story["configfs"]
    assert cf and (cf["sid"], cf["isid"], cf["tsih"]) == (ev["sid"], ev["isid"], ev["tsih"]) and ev["tsih"] > 0
    # printed within 100 ms of the initiator's login returning
    assert story["after_return"] is not None and story["after_return"] <= 0.1, story["after_return"]


def test_open_iscsi_login_event_has_every_field_right_and_in_time(report):
    _login_fields(report["stories"]["open_iscsi"], INIT_OI, "None")


def test_iscsikit_login_event_has_every_field_right_and_in_time(report):
    story = report["stories"]["iscsikit"]
    _login_fields(story, INIT_IK, "CRC32C")
    assert story["event"]["isid"] == story["isid"]      # the ISID iscsikit chose for the session


def test_open_iscsi_isid_is_its_default_iface_isid(report):
    # open-iscsi's default ISID: type 0 with the OUI 00:02:3d (its DRIVER_ISID_0..2 constants)
    assert report["stories"]["open_iscsi"]["event"]["isid"].startswith("00023d")


def test_logout_gives_connection_and_session_close_with_reason_logout(report):
    evs = report["stories"]["logout"]["events"]
    kinds = [(e["event"], e.get("reason")) for e in evs]
    assert ("conn_close", "logout") in kinds and ("session_close", "logout") in kinds
    assert kinds.index(("conn_close", "logout")) < kinds.index(("session_close", "logout"))


def test_killed_connection_gives_drop_then_session_lost(report):
    kinds = [(e["event"], e.get("reason")) for e in report["stories"]["drop"]["events"]]
    assert kinds == [("login", None), ("conn_close", "dropped"), ("session_close", "conn_lost")], kinds


def test_the_guest_is_left_without_initiator_sessions(report):
    assert report["sessions_left"] == []


def test_wrong_chap_secret_is_a_login_failed_event_with_the_authentication_status(report):
    s = report["stories"]["wrong_chap"]
    assert s["exit_code"] == 24
    ev = s["event"]
    assert ev and ev["target"] == T_CHAP and ev["initiator"] == INIT_IK and ev["initiator_addr"] == "127.0.0.1"
    assert (ev["status_class"], ev["status_detail"], ev["status"]) == (2, 1, "authentication failure")
    assert report["stories"]["chap"]["event"]["auth"] == "CHAP"


def test_initiator_not_in_the_acl_is_a_login_failed_event(report):
    ev = report["stories"]["not_in_acl"]["event"]
    assert ev and ev["target"] == T_OPEN and ev["initiator"] == f"{PREFIX}:stranger"
    assert (ev["status_class"], ev["status_detail"], ev["status"]) == (2, 2, "authorization failure")


def test_no_chap_secret_in_the_event_stream(report):
    assert report["stories"]["secrets_seen"] == []


def test_32_concurrent_logins_give_exactly_32_events(report):
    c = report["stories"]["concurrent"]
    assert c["errors"] == []
    assert c["logins"] == 32 and c["distinct_isids"] == 32 and c["distinct_seq"] == 32 and c["tsihs"] == 32
    assert c["closes"] == 32 and c["close_reasons"] == ["logout"]
    assert c["dropped_lines"] == []
    seq = report["stories"]["all_seq"]
    # the follower got every event the module numbered while it listened: no gap, no repeat
    assert seq == list(range(seq[0], seq[0] + len(seq)))


def test_slow_reader_counts_exactly_what_it_lost(report):
    s = report["slow"]
    # 24 logins and logouts (login, conn_close, session_close each); a straggler from an earlier
    # story may be numbered in the same window, and counts like any other
    assert s["produced"] >= 24 * 3
    assert s["dropped"] > 0, "the reader's buffer never overflowed: the test proves nothing"
    assert s["received"] + s["dropped"] == s["produced"] and s["received_seq_unique"]
    assert s["lines"] and s["lines"][0].startswith("dropped ")


def test_load_unload_cycles_and_target_module_reloads_leave_a_clean_kernel_log(report):
    c = report["cycles"]
    assert c["ok"] == 100, c
    assert c["churn_during"]["logins"] > 0
    assert c["final_rmmod_rc"] == 0
    for row in c["reload"]:
        assert row["rmmod_target_rc"] == 0, row
        assert row["armed_back"] is True and row["login_ok"], row
        assert "login" in row["seen"] and "session_close" in row["seen"], row
    assert c["reload"][0]["armed_while_gone"] is False
    last = c["reload"][2]
    assert last["insmod_before_target_rc"] == 0 and last["armed_waiting"] is False
    assert c["bad_log"] == [], c["bad_log"]

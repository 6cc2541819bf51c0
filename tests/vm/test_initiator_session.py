"""Issue 4's proof: our own code creates kernel sessions against LIO (rtslib-fb) and a disk appears.

The whole story runs in one guest process (probes/session_story.py: TCG makes
every Python start cost seconds) and each test checks one part of its report.
"""

import pytest

IQN = "iqn.2026-11.org.iscsikit.test:disk"


@pytest.fixture(scope="module")
def story(run_probe):
    return run_probe("session_story.py")


def _logged_in_and_out(res):
    assert "error" not in res, res.get("error")
    assert res["state"] == "LOGGED_IN" and res["conn_state"] == "up"
    assert res["target"] == IQN and (res["address"], res["port"], res["tpgt"]) == ("127.0.0.1", 3260, 1)
    assert res["disk"] and res["disk"].startswith("sd")
    assert res["disk_gone"] is True
    assert res["sid"] not in res["sessions_after_logout"]


def _clean_failure(res, code):
    assert res.get("exit_code") == code, res
    assert res["sessions_left"] == [] and res["hosts_left"] == []


def test_login_without_auth_gives_a_disk_that_keeps_data(story):
    res = story["noauth"]
    _logged_in_and_out(res)
    assert res["io"] == {"blocks": res["io"]["blocks"], "written": 32 << 20, "bad_dev": 0, "bad_file": 0}
    assert res["io"]["blocks"] > 300


def test_udev_by_path_link_matches_open_iscsi_naming(story):
    assert story["noauth"]["by_path"] == f"/dev/{story['noauth']['disk']}"


def test_open_iscsi_reads_our_session_from_sysfs(story):
    res = story["noauth"]
    out = res["iscsiadm_out"]
    assert res["iscsiadm_rc"] == 0
    assert f"Target: {IQN} (non-flash)" in out
    assert "Current Portal: 127.0.0.1:3260,1" in out and "Persistent Portal: 127.0.0.1:3260,1" in out
    assert "Iface Initiatorname: iqn.2026-11.org.iscsikit.test:initiator" in out
    assert "iSCSI Session State: LOGGED_IN" in out
    assert f"Attached scsi disk {res['disk']}" in out


def test_one_way_chap(story):
    _logged_in_and_out(story["chap"])


def test_mutual_chap(story):
    _logged_in_and_out(story["mutual"])


def test_wrong_secret_is_auth_failure_and_leaves_nothing(story):
    _clean_failure(story["chap_wrong"], 24)


def test_wrong_target_secret_in_mutual_chap_is_refused(story):
    _clean_failure(story["mutual_wrong"], 24)


def test_crc32c_digests_negotiated_and_data_still_matches(story):
    res = story["digests"]
    _logged_in_and_out(res)
    assert (res["header_digest"], res["data_digest"]) == ("1", "1")
    assert res["io"]["bad_dev"] == 0 and res["io"]["bad_file"] == 0 and res["io"]["written"] == 32 << 20


def test_sendtargets_discovery_against_lio(story):
    assert story["discovery"] == [[IQN, [["127.0.0.1", 3260, 1]]]]


def test_manual_scan_attaches_no_disk(story):
    res = story["scan_manual"]
    assert "error" not in res and res["state"] == "LOGGED_IN"
    assert res["disk"] is None
    assert res["sid"] not in res["sessions_after_logout"]


def test_chap_sessions_keep_data_too(story):
    for name in ("chap", "mutual"):
        io = story[name]["io"]
        assert (io["written"], io["bad_dev"], io["bad_file"]) == (32 << 20, 0, 0), name

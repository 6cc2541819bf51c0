"""Issue 19's proof in the guest: ifaces that bind, several sessions per target, ALUA on the
target, and dm-multipath over our sessions that survives the optimized path dying.

One probe run (probes/multipath_story.py: the network, target, sessions, multipathd and the
cut rounds in one guest process); each test checks one part of its report. The 20 rounds,
the 5-minute cut, os-brick and open-iscsi side by side are bench/bench_multipath.py's.
"""

import pytest

IQN = "iqn.2026-11.org.iscsikit.test:mpath"
MiB = 1 << 20


@pytest.fixture(scope="module")
def story(run_probe):
    report = run_probe("multipath_story.py", timeout=900)
    print({k: v for k, v in report.items() if k != "log_tail"})
    return report


def test_the_story_ran_to_its_end(story):
    assert "error" not in story, story["error"]


def test_target_shell_makes_alua_groups_and_saveconfig_keeps_them(story):
    assert story["target_setup"]["rc"] == 0, story["target_setup"]
    assert story["saved_alua"]["ao"] == [10, 0, 1] and story["saved_alua"]["ano"] == [20, 1, 0]
    assert "default_tg_pt_gp" in story["saved_alua"]
    assert story["saved_lun_groups"] == {"1": ["ao"], "2": ["ano"]} or \
        story["saved_lun_groups"] == {1: ["ao"], 2: ["ano"]}


def test_bound_discovery_and_a_missing_netdev_is_named_with_exit_4(story):
    assert story["discovery_a"]["rc"] == 0 and f"192.0.2.1:3260,1 {IQN}" in story["discovery_a"]["out"]
    assert story["discovery_b"]["rc"] == 0 and f"198.51.100.1:3260,2 {IQN}" in story["discovery_b"]["out"]
    assert story["discovery_c"]["rc"] == 4 and "netdev nosuch0" in story["discovery_c"]["err"]
    assert story["login_c"]["rc"] == 4
    assert "iface pc: netdev nosuch0 does not exist" in story["login_c"]["err"]


def test_each_sessions_traffic_leaves_through_its_ifaces_netdev(story):
    t = story["traffic"]
    # [mpa0, mpa1] tx bytes while 4 MiB were written through the session's disk
    assert t["a"][0] >= 4 * MiB and t["a"][1] < MiB
    assert t["b"][1] >= 4 * MiB and t["b"][0] < MiB
    # pb's session to tpg1's portal: routing would use mpa0; the binding sends it out mpa1
    assert t["b_to_a"][1] >= 4 * MiB and t["b_to_a"][0] < MiB


def test_sysfs_iface_attributes_are_set_as_open_iscsi_sets_them(story):
    h = story["host_attrs"]
    assert h["a"]["netdev"] == "mpa0" and h["a"]["hwaddress"] is None and h["a"]["ipaddress"] == "192.0.2.2"
    assert h["b"]["hwaddress"] == story["mac1"] and h["b"]["netdev"] is None
    assert h["b"]["ipaddress"] == "198.51.100.2"
    assert "Iface Name: pb" in story["session_P1_b"]


def test_a_netdev_down_fails_only_its_session_and_it_comes_back(story):
    d = story["down"]
    assert d["b_failed"] and d["a_state"] == "LOGGED_IN"
    assert d["netdev_named"], story["log_tail"]
    assert "iSCSI Connection State: TRANSPORT WAIT" in d["P1"] and "Internal iscsid Session State: REOPEN" in d["P1"]
    assert d["b_back"]


def test_second_iface_to_one_portal_and_nr_sessions(story):
    assert story["login_b_to_a"]["rc"] == 0, story["login_b_to_a"]
    assert story["login_nr2"]["rc"] == 0 and "(multiple)" in story["login_nr2"]["out"]
    assert len(story["pa_sessions_nr2"]) == 2
    assert story["login_nr2_again"]["rc"] == 15
    assert "pa: 2 sessions requested, but 2 already present." in story["login_nr2_again"]["err"]
    # the logout of one leaves the other; --op new adds one like it
    assert story["pa_after_logout_of_extra"] == [story["sids"]["a"]] and story["s1_state_after"] == "LOGGED_IN"
    assert story["op_new"]["rc"] == 0 and len(story["pa_after_op_new"]) == 2


def test_what_multipath_reads_wwid_by_path_and_rtpg(story):
    w = story["wwids"]
    assert w[0] and w[0] == w[1]
    d1, d2 = story["disks"]
    assert story["by_path"] == {"192.0.2.1": f"/dev/{d1}", "198.51.100.1": f"/dev/{d2}"}
    rtpg = story["rtpg"]
    assert "(active/optimized)" in rtpg and "(active/non optimized)" in rtpg, rtpg


def test_one_map_two_path_groups_optimized_active_and_carrying_the_io(story):
    d1, d2 = story["disks"]
    g = story["groups"]
    assert len(g) == 2, story["multipath_ll"]
    assert g[0][1] == "active" and g[0][2] == [d1] and g[1][2] == [d2] and g[0][0] > g[1][0], story["multipath_ll"]
    assert story["io_share_optimized"] >= 0.95


def test_optimized_path_cut_under_a_verified_writer_fails_over_and_back(story):
    w = story["writer"]
    assert (w["errors"], w["verify_errors"], w["final_verify_errors"]) == (0, 0, 0), w
    assert w["writes"] > 100
    assert len(story["rounds"]) == 2
    for r in story["rounds"]:
        # failover within replacement_timeout (5 s) plus multipathd's checker; failback once back
        assert r["failed_seen"] and r["failover_s"] < 15, story["rounds"]
        assert r["back"] and r["failback_s"] < 30, story["rounds"]


IQN_ALUA = "iqn.2026-11.org.iscsikit.test:alua"


def test_restore_compares_a_running_objects_alua_groups_and_lun_group(run_probe):
    # restoreconfig clear_existing=true of a file whose ALUA groups differ from the running
    # ones: the changed state written, the missing group made, the LUN moved, nothing remade
    r = run_probe("alua_restore.py", timeout=300)
    print(r)
    assert r["build"]["rc"] == 0 and r["restore"]["rc"] == 0, r
    assert (r["ao_state"], r["ano_state"], r["ano_id"]) == ("1", "2", "20"), r
    assert r["lun_group"] == "TG Port Alias: ano", r
    assert r["kept"], r
    assert r["again"]["rc"] == 0 and "(0 changes)" in r["again"]["out"] + r["again"]["err"], r["again"]
    two = IQN_ALUA + "2"
    # a failed restore (after it deleted ano) leaves everything as it was
    assert r["before_failed"] == {"groups": {"ao": ["10", "1"], "ano": ["20", "2"]}, "luns": {IQN_ALUA: "ano"}}, r
    assert r["failed"]["rc"] != 0 and "127.0.0.1:3261" in r["failed"]["err"], r["failed"]     # refused late, by LIO
    assert r["after_failed"] == r["before_failed"] and r["portals_after"] == r["portals_before"], r
    # clear_existing=true ends with the file's groups only (as targetcli's): ano deleted
    assert r["back"]["rc"] == 0 and r["back_kept"], r
    assert r["after_back"] == {"groups": {"ao": ["10", "0"]}, "luns": {IQN_ALUA: "ao"}}, r
    # a merge makes the group a new target's LUN needs; the running ao as it runs
    assert r["merge"]["rc"] == 0 and "ALUA group mg made from the file" in r["merge"]["err"] + r["merge"]["out"], r
    assert r["after_merge"] == {"groups": {"ao": ["10", "0"], "mg": ["30", "1"]},
                                "luns": {IQN_ALUA: "ao", two: "mg"}}, r
    # storage_object=al: its ao written; mg kept, the other target's LUN (not restored) is in it
    assert r["selective"]["rc"] == 0, r
    assert r["after_selective"] == {"groups": {"ao": ["10", "1"], "mg": ["30", "1"]},
                                    "luns": {IQN_ALUA: "ao", two: "mg"}}, r

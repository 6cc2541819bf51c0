"""Issue 17 in the guest: configuration iscsikit does not make is never lost.

probes/fabrics_story.py runs the whole story in one Python process beside
Debian's targetcli (see its docstring); each test here checks one proof of its
report.
"""

import pytest

IQN = "iqn.2024-01.com.example:fab"
LOOP, LOOP2, VHOST = "naa.5001405000000a01", "naa.5001405000000a02", "naa.5001405000000b01"


@pytest.fixture(scope="module")
def story(run_probe):
    return run_probe("fabrics_story.py", timeout=900)


def test_save_of_targetclis_running_state_equals_targetclis_file(story):
    assert story["targetcli_build"]["rc"] == 0, story["targetcli_build"]
    assert story["tc_fabrics"] == ["iscsi", "loopback", "vhost"]
    assert story["ours_fabrics"] == story["tc_fabrics"]
    assert story["save_equal"], story.get("save_diff")


def test_clear_then_restore_of_targetclis_file_brings_every_fabric_back(story):
    before = story["fp_before"]
    assert any(x.startswith(f"loopback {LOOP} tpgt_1 lun_0") for x in before), before
    assert any(x.startswith(f"vhost {VHOST} tpgt_1 lun_0") for x in before), before
    assert story["after_clear"] == []
    # the modules were unloaded after the clear; the restore loaded them again
    assert story["unloaded"] and story["reloaded"]
    assert sorted(story["fp_restored"]) == sorted(before)


def test_shell_edit_and_autosave_keep_the_other_fabrics(story):
    assert story["pty_exit"] == 0
    assert story["autosave_fabrics"] == ["iscsi", "iscsi", "loopback", "vhost"]
    assert "iqn.2024-01.com.example:edit" in story["autosave_targets"]


def test_a_restore_failing_midway_leaves_every_fabric_as_it_was(story):
    assert story["fail_rc"] == 1 and "192.0.2.99" in story["fail_err"], story["fail_err"]
    assert story["fail_unchanged"], story.get("fail_fp")


def test_backups_rotate_at_max_backup_files(story):
    backups = story["backups"]
    assert len(backups) == 2, backups
    assert all(b.startswith("saveconfig-") and b.endswith("-json.gz") for b in backups)
    assert story["backup_modes"] == ["0o600"]
    # the newest backups hold the file before the last two changing saves; the two
    # unchanged saves at the end made none
    assert story["backup_holds_bk"] == [["bk0", "bk1", "bk2"], ["bk0", "bk1", "bk2", "bk3"]]


def test_restore_of_one_target_changes_only_it_and_the_default_merges(story):
    assert story["sel_removed"] == []
    assert story["sel_added"] == [f"iscsi {IQN} tpgt_1 acl iqn.2024-01.com.example:other tag=''"]
    assert story["merge_removed"] == []
    assert f"loopback {LOOP2}" in story["merge_added"] and "so fileio/lo2 /tmp/fab/lo2.img" in story["merge_added"]
    assert "kept as it runs" in story["merge_out"]
    assert story["tc_after_loopbacks"] == [LOOP, LOOP2]        # rtslib reads what we made


def test_ls_into_a_file_has_no_escape_codes(story):
    assert story["ls_escape_codes"] is False
    assert len(story["ls_shows"]) == 5, story["ls_shows"]


def test_info_on_every_kind_of_node_and_acl_tags(story):
    info = story["info_out"]
    for line in ("path: /backstores", "kernel_module: tcm_loop", f"path: /loopback/{LOOP}/tpg1",
                 f"path: /iscsi/{IQN}/tpg1/portals/0.0.0.0:3260", "node_wwn: iqn.2024-01.com.example:host1",
                 "chap_password: ********"):
        assert line in info, info
    assert story["tag_in_configfs"] == "grp1" and story["tag_in_file"] == ["grp1"]
    assert story["untag_in_configfs"] == ""


def test_tpg_level_chap_against_an_initiator(story):
    assert story["chap_right"]["rc"] == 0 and "Product:chap0" in story["chap_right"]["out"], story["chap_right"]
    assert story["chap_wrong_rc"] != 0 and story["chap_none_rc"] != 0
    assert story["chap_secret_in_info"] is False
    assert story["final_clear"] == 0


def test_a_target_is_made_without_the_default_portal_the_kernel_refuses(story):
    assert story["nodefault_rc"] == 0, story["nodefault_out"]
    assert "Default portal not created" in story["nodefault_out"]
    assert story["nodefault_portals"] == []

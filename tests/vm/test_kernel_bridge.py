"""NETLINK_ISCSI, sysfs and module loading against the guest's real 6.1 kernel."""

import errno

import pytest

from iscsikit.kernel.constants import Param


@pytest.fixture(scope="module")
def basics(run_probe):
    return run_probe("netlink_basics.py", timeout=180)


def test_modules_load_through_libkmod(basics):
    assert basics["kmod_via"] == "libkmod"


def test_create_session_gives_a_sysfs_session_on_its_own_host(basics):
    assert basics["caps"] == 0x39
    assert basics["sid"] in basics["sysfs_sessions_after_create"]
    assert basics["host_of"] == basics["host_no"]
    assert basics["cid"] == 0 and basics["conn_dir"] is True


def test_creator_is_our_netlink_portid(basics):
    # the kernel records the creating socket's portid; autobind gives the process's pid first
    assert basics["creator"] > 0


def test_kernel_rules_are_reported_as_errnos(basics):
    assert basics["set_before_bind"] == errno.ENOTCONN
    assert basics["bind_bad_fd"] in (errno.EINVAL, errno.ENOTSOCK, errno.EEXIST)
    assert basics["destroy_busy"] == errno.EBUSY
    assert basics["destroy_unknown"] == errno.EINVAL


def test_recovery_timeout_is_set_before_bind(basics):
    assert basics["recovery_tmo"] == "17"


def test_a_batch_of_requests_is_answered_one_by_one_in_order(basics):
    # the refused TARGET_NAME in the middle neither hides the last request nor shifts the replies
    assert basics["batch_refused"] == [[int(Param.TARGET_NAME), errno.ENOTCONN]]
    assert basics["batch_recovery_tmo"] == "29"


def test_destroy_removes_the_session(basics):
    assert basics["sid"] not in basics["sysfs_sessions_after_destroy"]


def test_events_are_classified_by_type(basics):
    names = [name for name, _ in basics["events"]]
    assert "CREATE_SESSION" in names
    create = dict(basics["events"])["CREATE_SESSION"]
    assert create == {"sid": basics["sid"], "host_no": basics["host_no"]}
    assert "DESTROY_SESSION" in names

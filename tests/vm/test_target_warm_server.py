"""The warm iscsikit-target against LIO in the guest: iscsikit-targetd serves the one-shots.

One volume in OpenStack Cinder's shape (fileio backstore, target with its
default portal, LUN, ACL, another portal, `ls /iscsi`, and the errors a driver
meets) is made through the forwarding iscsikit-target with the server up, then
cleared and made again by the Python iscsikit-target-local in its own
processes: every command's stdout, stderr and exit code must be the same bytes,
and the server's log must count exactly the forwarded ones. configfs changed
behind the server's back (mkdir/rmdir, as targetcli or anyone may) shows in the
next served `ls`; with the server stopped the forwarder runs the command itself.
"""

from __future__ import annotations

import os
import shlex
import sys

import pytest

BIN = os.path.dirname(sys.executable)
SOCK = "/tmp/tserved/t.sock"
ENV = f"ISCSIKIT_TARGET_SOCKET={SOCK} ISCSIKIT_TARGET_SAVEFILE=/tmp/tserved/saveconfig.json"
WARM = f"{ENV} {shlex.quote(BIN + '/iscsikit-target')}"
LOCAL = f"{ENV} {shlex.quote(BIN + '/iscsikit-target-local')}"
IQN = "iqn.2010-10.org.openstack:volume-s1"
TPG = f"/iscsi/{IQN}/tpg1"
HOST = "iqn.1994-05.com.redhat:compute1"
CFS = "/sys/kernel/config/target/iscsi"

VOLUME = [
    "/backstores/fileio create s1 /tmp/tserved/s1.img 1M write_back=false",
    f"/iscsi create {IQN}",
    f"{TPG}/luns create /backstores/fileio/s1",
    f"{TPG}/acls create {HOST}",
    f"{TPG}/portals create 127.0.0.1 3261",
    "ls /iscsi",
    f"{TPG}/acls create {HOST}",                       # exists: exit 1 or 2, one line
    f"/iscsi create {IQN}",
    "/iscsi delete iqn.2010-10.org.openstack:volume-none",
    "/backstores/fileio create s2 /no/such/dir/s2.img 1M",
    "ls /no/such",
    "saveconfig",
    f"{TPG}/portals delete 127.0.0.1 3261",
    f"{TPG}/acls delete {HOST}",
    "ls /",
]


def served_count(g) -> int:
    return int(g.run("grep -c 'served command' /tmp/tserved/d.log || true").out.strip() or 0)


@pytest.fixture(scope="module")
def server(guest):
    guest.run("mkdir -p /tmp/tserved /run/dbus && rm -f /tmp/tserved/*; "
              f"{LOCAL} clearconfig confirm=true >/dev/null", timeout=300, check=True)
    # exec: the pid is the server's own, which the last test stops by it
    pid = guest.spawn(f"{ENV} exec {shlex.quote(BIN + '/iscsikit-targetd')} --log-level debug",
                      log="/tmp/tserved/d.log")
    guest.run(f"for i in $(seq 600); do [ -S {SOCK} ] && break; sleep 0.1; done; [ -S {SOCK} ]",
              timeout=120, check=True)
    yield pid
    guest.run(f"kill {pid} 2>/dev/null; {LOCAL} clearconfig confirm=true", timeout=300)


def run_all(g, prog: str) -> list[tuple[int, str, str]]:
    out = []
    for cmd in VOLUME:
        r = g.run(f"cd /tmp/tserved && {prog} {cmd}", timeout=300)
        out.append((r.rc, r.out, r.err))
    return out


def test_warm_and_in_process_give_the_same_bytes_and_exit_codes(guest, server):
    before = served_count(guest)
    warm = run_all(guest, WARM)
    assert served_count(guest) - before == len(VOLUME)     # every one ran in the server
    assert warm[0][0] == 0 and warm[5][0] == 0 and IQN in warm[5][1] and "127.0.0.1:3261" in warm[5][1]
    assert [rc for rc, _, _ in warm[6:11]] == [warm[6][0], warm[7][0], 3, warm[9][0], 3] and warm[6][0] != 0
    guest.run(f"{LOCAL} clearconfig confirm=true && rm -f /tmp/tserved/s1.img /tmp/tserved/saveconfig.json",
              timeout=300, check=True)
    mid = served_count(guest)
    local = run_all(guest, LOCAL)
    assert served_count(guest) == mid
    for cmd, w, loc in zip(VOLUME, warm, local):
        assert w == loc, cmd


def test_configfs_changed_behind_the_server_shows_in_the_next_served_ls(guest, server):
    other = "iqn.1994-05.com.redhat:compute2"
    acls = f"{CFS}/{IQN}/tpgt_1/acls"
    guest.run(f"{LOCAL} {TPG}/acls create {HOST} >/dev/null 2>&1; true", timeout=120)
    first = guest.run(f"{WARM} ls {TPG}/acls", timeout=120, check=True).out
    assert HOST in first and other not in first
    guest.run(f"mkdir {acls}/{other}", check=True)            # as targetcli or anyone else would
    second = guest.run(f"{WARM} ls {TPG}/acls", timeout=120, check=True).out
    assert other in second and "[ACLs: 2]" in second
    guest.run(f"rmdir {acls}/{other}", check=True)
    third = guest.run(f"{WARM} ls {TPG}/acls", timeout=120, check=True).out
    assert third == first


def test_with_the_server_stopped_the_forwarder_runs_it_itself(guest, server):
    want = guest.run(f"{LOCAL} ls /iscsi", timeout=120, check=True).out
    guest.run(f"kill {server}; for i in $(seq 300); do [ -S {SOCK} ] || break; sleep 0.1; done; ! [ -S {SOCK} ]",
              timeout=60, check=True)    # a stopped server removes its socket
    count = served_count(guest)
    r = guest.run(f"{WARM} ls /iscsi", timeout=120)
    assert (r.rc, r.out) == (0, want) and served_count(guest) == count
    r = guest.run(f"{WARM} /iscsi delete iqn.2010-10.org.openstack:volume-none", timeout=120)
    assert r.rc == 3 and "no target" in r.err

"""iscsikit-target against the real kernel and the reference tools, in the lab guest.

One module-scoped setup (iscsid, D-Bus for targetcli, an initiator name);
each test builds with our one-shot shell, proves the data path with
Debian's open-iscsi or libiscsi, and clears LIO on the way out.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from pathlib import Path

import pytest

# The guest shares the host's root, so this interpreter's bin directory and this
# checkout are at the same paths there.
SHELL = os.path.join(os.path.dirname(sys.executable), "iscsikit-target")
SAMPLES = Path(__file__).resolve().parents[1] / "data" / "target"
IKT = f"{shlex.quote(SHELL)} --save-file /tmp/ik/saveconfig.json"
INITIATOR = "iqn.2024-01.com.example:host1"
PREFIX = "iqn.2024-01.com.example"


def ikt(g, cmd: str, check: bool = True, timeout: float = 120):
    r = g.run(f"{IKT} {cmd}", timeout=timeout)
    if check:
        assert r.ok, f"iscsikit-target {cmd}: rc={r.rc}\n{r.out}\n{r.err}"
    return r


def batch(g, lines: list[str], timeout: float = 300):
    """Many commands in one process (`iscsikit-target < script`): Python starts slowly under TCG."""
    r = g.run(IKT, input="\n".join(lines) + "\n", timeout=timeout)
    assert r.ok, f"batch: rc={r.rc}\n{r.out}\n{r.err}"
    return r


def sh(g, cmd: str, timeout: float = 300):
    r = g.run(cmd, timeout=timeout)
    assert r.ok, f"{cmd}: rc={r.rc}\n{r.out}\n{r.err}"
    return r.out


@pytest.fixture(scope="module")
def lab(guest):
    sh(guest, "mkdir -p /tmp/ik /run/dbus /etc/iscsi && ip link set lo up && "
              "(pgrep -x dbus-daemon >/dev/null || dbus-daemon --system --fork) && "
              f"echo InitiatorName={INITIATOR} > /etc/iscsi/initiatorname.iscsi")
    pid = guest.spawn("iscsid -f", log="/tmp/ik/iscsid.log")
    yield guest
    guest.run("iscsiadm -m node -U all; iscsiadm -m node -o delete; "
              "iscsiadm -m discoverydb -t st -p 127.0.0.1 -o delete", timeout=120)
    guest.run(f"kill {pid}")
    guest.run(f"{IKT} clearconfig confirm=true", timeout=300)


def _login_write_read(g, iqn: str, backing: str | None, auth: dict | None = None) -> str:
    """Log in with Debian's open-iscsi, write 32 MiB, read it back; return the session's sd name."""
    node = f"iscsiadm -m node -T {iqn} -p 127.0.0.1"
    upd = "".join(f" && {node} -o update -n {k} -v {shlex.quote(v)}" for k, v in (auth or {}).items())
    sh(g, f"iscsiadm -m discovery -t st -p 127.0.0.1 >/dev/null {upd} && {node} --login")
    disk = sh(g, f"for i in $(seq 50); do d=$(iscsiadm -m session -P3 | awk '/Target: {iqn}( |$)/{{t=1}} "
                 f"t && /Attached scsi disk/{{print $4; exit}}'); [ -n \"$d\" ] && [ -b /dev/$d ] && "
                 f"echo $d && break; sleep 0.2; done").strip()
    assert disk, f"no disk for {iqn}"
    sh(g, f"head -c 32M /dev/urandom > /tmp/ik/pattern && "
          f"dd if=/tmp/ik/pattern of=/dev/{disk} bs=1M oflag=direct status=none && "
          f"dd if=/dev/{disk} of=/tmp/ik/back bs=1M count=32 iflag=direct status=none && "
          f"cmp /tmp/ik/pattern /tmp/ik/back")
    if backing:
        sh(g, f"cmp -n 33554432 /tmp/ik/pattern {backing}")
    return disk


def test_oneshot_build_then_open_iscsi_no_auth_chap_mutual(lab):
    g = lab
    targets = {"noauth": None,
               "chap": {"userid": "host1", "password": "secret-one-1"},
               "mutual": {"userid": "host1m", "password": "secret-two-2",
                          "mutual_userid": "tgt1", "mutual_password": "secret-three"}}
    # The first target through one-shot invocations, the others in one batch.
    ikt(g, f"/backstores/fileio create noauth /tmp/ik/noauth.img 40M write_back=false")
    ikt(g, f"/iscsi create {PREFIX}:noauth")
    ikt(g, f"/iscsi/{PREFIX}:noauth/tpg1/luns create /backstores/fileio/noauth")
    ikt(g, f"/iscsi/{PREFIX}:noauth/tpg1/acls create {INITIATOR}")
    lines = []
    for name, chap in list(targets.items())[1:]:
        iqn = f"{PREFIX}:{name}"
        tpg = f"/iscsi/{iqn}/tpg1"
        lines += [f"/backstores/fileio create {name} /tmp/ik/{name}.img 40M write_back=false",
                  f"/iscsi create {iqn}",
                  f"{tpg}/luns create /backstores/fileio/{name}",
                  f"{tpg}/acls create {INITIATOR}",
                  f"{tpg} set attribute authentication=1",
                  f"{tpg}/acls/{INITIATOR} set auth " + " ".join(f"{k}={v}" for k, v in chap.items())]
    batch(g, lines)
    listing = json.loads(g.run(f"{shlex.quote(SHELL)} --json ls /iscsi").out)
    assert sorted(c["wwn"] for c in listing["children"]) == [f"{PREFIX}:{n}" for n in sorted(targets)]
    assert "secret" not in json.dumps(listing)

    auth_keys = {"userid": "node.session.auth.username", "password": "node.session.auth.password",
                 "mutual_userid": "node.session.auth.username_in",
                 "mutual_password": "node.session.auth.password_in"}
    for name, chap in targets.items():
        auth = None
        if chap:
            auth = {"node.session.auth.authmethod": "CHAP", **{auth_keys[k]: v for k, v in chap.items()}}
        _login_write_read(g, f"{PREFIX}:{name}", f"/tmp/ik/{name}.img", auth)

    # a wrong CHAP secret must not log in
    sh(g, f"iscsiadm -m node -T {PREFIX}:chap -p 127.0.0.1 --logout")
    sh(g, f"iscsiadm -m node -T {PREFIX}:chap -p 127.0.0.1 -o update -n node.session.auth.password -v wrong-secret-x")
    assert not g.run(f"iscsiadm -m node -T {PREFIX}:chap -p 127.0.0.1 --login", timeout=120).ok

    sessions = json.loads(g.run(f"{shlex.quote(SHELL)} --json sessions").out)
    logged = {s["target"] for s in sessions if s["initiator"] == INITIATOR and s["state"] == "LOGGED_IN"}
    assert logged == {f"{PREFIX}:noauth", f"{PREFIX}:mutual"}
    before = {(s["target"], s["sid"]) for s in sessions}

    # Restoring the file already in force changes nothing and drops no session.
    ikt(g, "saveconfig")
    assert sh(g, "stat -c %a /tmp/ik/saveconfig.json").strip() == "600"
    out = ikt(g, "restoreconfig /tmp/ik/saveconfig.json clear_existing=true")
    assert "(0 changes)" in out.out + out.err
    out = ikt(g, "restoreconfig /tmp/ik/saveconfig.json clear_existing=true")
    assert "(0 changes)" in out.out + out.err
    after = {(s["target"], s["sid"]) for s in json.loads(
        g.run(f"{shlex.quote(SHELL)} --json sessions").out)}
    assert after == before
    sh(g, "iscsiadm -m node -U all")

    # Bad input: one line, exit 2, nothing touched.
    r = ikt(g, f"/iscsi create iqn.2024-01.com.ex_ample:x", check=False)
    assert r.rc == 2 and "underscores" in r.err and len(r.err.strip().splitlines()) == 1
    r = ikt(g, "/backstores/fileio create bad /nonexistent/dir/x.img 1M", check=False)
    assert r.rc == 2 and "does not exist" in r.err
    sh(g, "iscsiadm -m node -o delete")
    ikt(g, "clearconfig confirm=true")


def test_libiscsi_demo_mode(lab):
    g = lab
    iqn = f"{PREFIX}:demo"
    batch(g, ["/backstores/ramdisk create rd0 32M", "/backstores/ramdisk create rd1 16M",
              f"/iscsi create {iqn}",
              f"/iscsi/{iqn}/tpg1/luns create /backstores/ramdisk/rd0",
              f"/iscsi/{iqn}/tpg1/luns create /backstores/ramdisk/rd1",
              f"/iscsi/{iqn}/tpg1 set attribute generate_node_acls=1 demo_mode_write_protect=0 "
              f"cache_dynamic_acls=1"])
    # LIO raises REPORTED LUNS DATA HAS CHANGED on a new dynamic ACL's first
    # command, which iscsi-ls reports as a failure; the second look is clean.
    g.run("iscsi-ls -s iscsi://127.0.0.1")
    ls = sh(g, "iscsi-ls -s iscsi://127.0.0.1")
    assert iqn in ls and "Lun:0" in ls and "Lun:1" in ls, ls
    inq = sh(g, f"iscsi-inq iscsi://127.0.0.1/{iqn}/1")
    assert "LIO-ORG" in inq and "rd1" in inq, inq
    for test in ("ALL.Read10", "ALL.Write10"):
        r = g.run(f"iscsi-test-cu -d -s --test={test} iscsi://127.0.0.1/{iqn}/0", timeout=600)
        assert r.ok, f"{test}: {r.out[-3000:]}"
        # CUnit's run summary: "tests  <total> <ran> <passed> <failed> <inactive>"
        m = re.search(r"^\s*tests\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", r.out, re.M)
        assert m, r.out[-3000:]
        total, ran, passed, failed = map(int, m.groups())
        assert ran > 0 and passed == ran and failed == 0, r.out[-3000:]
    ikt(g, "clearconfig confirm=true")


def _canon(x):
    if isinstance(x, dict):
        return {k: _canon(v) for k, v in x.items()}
    if isinstance(x, list):
        return sorted((_canon(v) for v in x), key=lambda v: json.dumps(v, sort_keys=True))
    return x


def test_targetcli_interop_both_ways(lab):
    g = lab
    # ours -> Debian targetcli: build with our shell, save, clear, targetctl restore, ls matches.
    tpg = f"/iscsi/{PREFIX}:ours/tpg1"
    batch(g, ["/backstores/fileio create f1 /tmp/ik/f1.img 8M",
              "/backstores/ramdisk create r1 4M block_size=4096",
              f"/iscsi create {PREFIX}:ours",
              f"{tpg}/luns create /backstores/fileio/f1",
              f"{tpg}/luns create /backstores/ramdisk/r1",
              f"{tpg}/portals delete 0.0.0.0 3260",
              f"{tpg}/portals create 127.0.0.1 3260",
              f"{tpg}/portals create ::1 3261",
              f"{tpg}/acls create {INITIATOR}",
              f"{tpg}/acls/{INITIATOR} create 5 1 write_protect=true",
              f"{tpg}/acls/{INITIATOR} set auth userid=u1 password=secret-abc-12",
              f"{tpg} set parameter HeaderDigest=CRC32C MaxRecvDataSegmentLength=65536",
              "/iscsi set discovery_auth enable=true userid=disc password=disc-secret-1",
              "saveconfig /tmp/ik/ours.json"])
    before = sh(g, "targetcli ls / 2>/dev/null | grep -v ^Warning:")
    sh(g, "targetctl save /tmp/ik/tc-of-ours.json")
    assert _canon(json.load(open_guest(g, "/tmp/ik/ours.json"))) == _canon(
        json.load(open_guest(g, "/tmp/ik/tc-of-ours.json"))), "our saveconfig differs from targetctl's"
    ikt(g, "clearconfig confirm=true")
    sh(g, "targetctl restore /tmp/ik/ours.json")
    assert sh(g, "targetcli ls / 2>/dev/null | grep -v ^Warning:") == before

    # Debian targetcli -> ours: save with targetctl, clear, restore with us, targetctl saves the same.
    sh(g, "targetctl save /tmp/ik/theirs.json")
    sh(g, "targetctl clear")
    out = ikt(g, "restoreconfig /tmp/ik/theirs.json")
    assert "changes" in out.out + out.err
    sh(g, "targetctl save /tmp/ik/theirs-again.json")
    assert _canon(json.load(open_guest(g, "/tmp/ik/theirs.json"))) == _canon(
        json.load(open_guest(g, "/tmp/ik/theirs-again.json")))
    assert sh(g, "targetcli ls / 2>/dev/null | grep -v ^Warning:") == before
    ikt(g, "clearconfig confirm=true")
    assert json.loads(g.run(f"{shlex.quote(SHELL)} --json ls /iscsi").out)["children"] == []


def open_guest(g, path):
    import io
    return io.StringIO(sh(g, f"cat {path}"))


def test_importers_build_working_targets(lab):
    g = lab
    sh(g, "mkdir -p /tmp/ik/imp && for f in disk1 disk2 disk3 t1a t2a t2b; do "
          "truncate -s 8M /tmp/ik/imp/$f.img; done && modprobe brd rd_nr=4 rd_size=8192")
    try:
        out = ikt(g, f"importconfig {SAMPLES}/ietd.conf")
        text = out.out + out.err
        assert "ietd.conf:13: error: Lun 1: ScsiId" in text and "ietd.conf:47: error: Frobnicate" in text
        # discovery CHAP came from the global IncomingUser
        assert not g.run("iscsi-ls iscsi://127.0.0.1").ok
        ls = sh(g, "iscsi-ls iscsi://discuser%discsecret123@127.0.0.1")
        assert "storage.disk1" in ls and "storage.disk-2" in ls, ls
        inq = sh(g, "iscsi-inq iscsi://127.0.0.1/iqn.2001-04.com.example:storage.disk-2/3")
        assert "LIO-ORG" in inq, inq
        t1 = json.loads(g.run(f"{IKT} --json ls /iscsi/iqn.2001-04.com.example:storage.disk1").out)
        assert [l["index"] for l in t1["tpgs"][0]["luns"]] == [0, 1, 2]
        assert t1["tpgs"][0]["chap_mutual_userid"] == "jack" and "secretsecret" not in json.dumps(t1)
        ikt(g, "clearconfig confirm=true")

        out = ikt(g, f"importconfig {SAMPLES}/targets.conf")
        text = out.out + out.err
        assert "targets.conf:13: error: initiator-address" in text
        inq = sh(g, "iscsi-inq iscsi://127.0.0.1/iqn.2008-09.com.example:server.target2/5")
        assert "LIO-ORG" in inq, inq
        g.run("iscsi-ls -s iscsi://disc%discsecret123@127.0.0.1")
        ls = sh(g, "iscsi-ls -s iscsi://disc%discsecret123@127.0.0.1 2>&1 || true")
        assert "server.target2" in ls and "Lun:5" in ls, ls
        ikt(g, "saveconfig /tmp/ik/imported.json")
        out = ikt(g, "restoreconfig /tmp/ik/imported.json")
        assert "(0 changes)" in out.out + out.err
    finally:
        g.run(f"{IKT} clearconfig confirm=true", timeout=300)
        g.run("rmmod brd")


# The writer of proof 5: 1 MiB of fresh random data per round into one of 16
# slots with O_DIRECT, read straight back and compared by MD5, until a stop
# file appears.  Every round prints one line, so the test can tell rounds that
# ran across the restores and find the last data written to each slot.
WRITER = r"""
disk=$1; i=0
while [ ! -e /tmp/ik/p5.stop ]; do
  slot=$((i % 16))
  head -c 1048576 /dev/urandom > /tmp/ik/p5.chunk
  want=$(md5sum < /tmp/ik/p5.chunk | cut -c1-32)
  dd if=/tmp/ik/p5.chunk of=/dev/$disk bs=64k seek=$((slot * 16)) oflag=direct conv=notrunc status=none \
    || echo "ERR write round $i"
  got=$(dd if=/dev/$disk bs=64k skip=$((slot * 16)) count=16 iflag=direct status=none | md5sum | cut -c1-32)
  if [ "$got" = "$want" ]; then echo "ok $i $slot $want"; else echo "ERR verify round $i slot $slot"; fi
  i=$((i + 1))
done
echo stopped
"""
# Kernel messages that mean the session was disturbed.
DISTURBED = r"I/O error|detected conn error|session recovery|blk_update_request|Buffer I/O|reset"


def _rounds(g) -> list[str]:
    return g.run("cat /tmp/ik/p5.log").out.splitlines()


def _wait_rounds(g, at_least: int, timeout: float = 120) -> list[str]:
    r = g.run(f"for s in $(seq {int(timeout * 5)}); do [ $(grep -c '^ok ' /tmp/ik/p5.log) -ge {at_least} ] && "
              f"break; grep -q ^ERR /tmp/ik/p5.log && break; sleep 0.2; done", timeout=timeout + 30)
    assert r.ok
    return _rounds(g)


def test_restore_twice_under_write_load(lab):
    """Proof 5: restoring one file twice while an initiator writes keeps the session, no I/O error.

    The file holds a second target that is not running when the writer
    starts, so the first restore really changes LIO (it makes that target)
    and the second finds nothing to do; both run while the session writes.
    """
    g = lab
    iqn, extra = f"{PREFIX}:p5", f"{PREFIX}:p5extra"
    batch(g, [f"/backstores/fileio create p5 /tmp/ik/p5.img 16M write_back=false",
              f"/iscsi create {iqn}",
              f"/iscsi/{iqn}/tpg1/luns create /backstores/fileio/p5",
              f"/iscsi/{iqn}/tpg1/acls create {INITIATOR}",
              f"/backstores/fileio create p5x /tmp/ik/p5x.img 4M",
              f"/iscsi create {extra}",
              f"/iscsi/{extra}/tpg1/luns create /backstores/fileio/p5x",
              "saveconfig /tmp/ik/p5.json",
              f"/iscsi delete {extra}",
              "/backstores/fileio delete p5x"])
    node = f"iscsiadm -m node -T {iqn} -p 127.0.0.1"
    pid = None
    try:
        sh(g, f"iscsiadm -m discovery -t st -p 127.0.0.1 >/dev/null && {node} --login")
        disk = sh(g, f"for i in $(seq 50); do d=$(iscsiadm -m session -P3 | awk '/Target: {iqn}( |$)/{{t=1}} "
                     f"t && /Attached scsi disk/{{print $4; exit}}'); [ -n \"$d\" ] && [ -b /dev/$d ] && "
                     f"echo $d && break; sleep 0.2; done").strip()
        assert disk, "no disk for the p5 session"
        isid_sid = sh(g, f"iscsiadm -m session | grep '{iqn} ' | cut -d' ' -f2")
        target_sids = {s["sid"] for s in json.loads(g.run(f"{shlex.quote(SHELL)} --json sessions").out)
                       if s["target"] == iqn}
        assert len(target_sids) == 1
        g.run("dmesg -c >/dev/null")
        g.run("rm -f /tmp/ik/p5.stop /tmp/ik/p5.log; cat > /tmp/ik/p5.sh", input=WRITER)
        pid = g.spawn(f"sh /tmp/ik/p5.sh {disk}", log="/tmp/ik/p5.log")
        before = _wait_rounds(g, 1)
        assert not [x for x in before if x.startswith("ERR")], before

        first = ikt(g, "restoreconfig /tmp/ik/p5.json clear_existing=true")
        n_first = int(re.search(r"\((\d+) changes?\)", first.out).group(1))
        second = ikt(g, "restoreconfig /tmp/ik/p5.json clear_existing=true")
        during = len([x for x in _rounds(g) if x.startswith("ok ")])
        after = _wait_rounds(g, during + 1)

        g.run("touch /tmp/ik/p5.stop")
        sh(g, "for s in $(seq 300); do grep -q ^stopped /tmp/ik/p5.log && break; sleep 0.2; done")
        log = _rounds(g)
        pid = None
        assert n_first >= 3, first.out          # storage object, target, TPG, LUN, portal ...
        assert "(0 changes)" in second.out, second.out
        assert not [x for x in log if x.startswith("ERR")], log
        oks = [x.split() for x in log if x.startswith("ok ")]
        assert len(oks) >= during + 1 >= len(before) + 1, (before, during, after)

        # The session is the one that was there before either restore.
        assert sh(g, f"iscsiadm -m session | grep '{iqn} ' | cut -d' ' -f2") == isid_sid
        now = {s["sid"] for s in json.loads(g.run(f"{shlex.quote(SHELL)} --json sessions").out)
               if s["target"] == iqn}
        assert now == target_sids
        # the first restore made the target the file holds and LIO did not
        assert g.run(f"test -d /sys/kernel/config/target/iscsi/{extra}/tpgt_1/lun/lun_0").ok
        messages = g.run(f"dmesg | grep -iE '{DISTURBED}' || true").out.strip()
        assert not messages, messages

        # Data check after the fact: each slot holds what was last written to
        # it, on the disk and in the backing file behind LIO.
        last = {}
        for _, _, slot, md5 in oks:
            last[int(slot)] = md5
        checks = " ; ".join(
            f"echo {slot} $(dd if=/dev/{disk} bs=64k skip={slot * 16} count=16 iflag=direct status=none | "
            f"md5sum | cut -c1-32) $(dd if=/tmp/ik/p5.img bs=64k skip={slot * 16} count=16 status=none | "
            f"md5sum | cut -c1-32)" for slot in sorted(last))
        for line in sh(g, checks).splitlines():
            slot, on_disk, in_file = line.split()
            assert on_disk == in_file == last[int(slot)], f"slot {slot}: {line} wanted {last[int(slot)]}"
    finally:
        g.run("touch /tmp/ik/p5.stop; sleep 1")
        if pid:
            g.run(f"kill {pid} 2>/dev/null")
        g.run(f"{node} --logout; {node} -o delete", timeout=120)
        g.run(f"{IKT} clearconfig confirm=true", timeout=300)

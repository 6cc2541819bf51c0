"""iscsikit-adm: option parsing, per-mode letters, outputs, exit codes, --json, hooks.

Byte-for-byte agreement with Debian's iscsiadm is checked in
tests/interop/test_adm_differential.py; these are the fast host checks.
"""

from __future__ import annotations

import io
import json
import socket
import os
import subprocess
import sys

import pytest

from iscsikit.cli import adm
from iscsikit.initiator import nodedb as ndb

T = "iqn.2003-01.org.example:tgt1"


@pytest.fixture
def root(tmp_path):
    (tmp_path / "iscsid.conf").write_text("iscsid.startup = /bin/false\n")
    return str(tmp_path)


def run(root, *argv):
    out, err = io.StringIO(), io.StringIO()
    rc = adm.run(list(argv), out=out, err=err, db=ndb.NodeDB(root), argv0="iscsiadm")
    return rc, out.getvalue(), err.getvalue()


def lines(text):
    return text.splitlines()


# -- getopt_long emulation ---------------------------------------------------------------
def test_getopt_forms():
    opts = adm.getopt(["-mnode", "--target", T, "--op=new", "-p", "a", "-n", "k1", "-v", "v1",
                       "--name=k2", "--value", "v2", "operand", "-lS"])
    got = [(o.letter, o.arg) for o in opts]
    assert got == [("m", "node"), ("T", T), ("o", "new"), ("p", "a"), ("n", "k1"), ("v", "v1"),
                   ("n", "k2"), ("v", "v2"), ("l", None), ("S", None)]


def test_getopt_errors():
    (o,) = adm.getopt(["--log"])
    assert o.error == "option '--log' is ambiguous; possibilities: '--login' '--loginall' '--logout' '--logoutall'"
    assert adm.getopt(["--login"])[0].letter == "l"  # an exact name beats longer candidates
    assert adm.getopt(["-Z"])[0].error == "invalid option -- 'Z'"
    assert adm.getopt(["-P"])[0].error == "option requires an argument -- 'P'"
    assert adm.getopt(["--login=1"])[0].error == "option '--login' doesn't allow an argument"
    assert adm.getopt(["--", "-T", "x"]) == []


def test_mode_letters_follow_the_table(root):
    rc, out, err = run(root, "-m", "node", "-t", "st")
    assert (rc, out, err) == (7, "", "iscsiadm: node mode: option '-t' is not allowed/supported\n")
    rc, _, err = run(root, "-m", "iface", "-T", "x")
    assert rc == 7 and "iface mode: option '-T'" in err
    rc, _, err = run(root, "-m", "node", "-Z")
    assert lines(err) == ["iscsiadm: invalid option -- 'Z'",
                          "iscsiadm: node mode: option '-?' is not allowed/supported"]


def test_version_help_and_no_args(root):
    assert run(root, "-V") == (0, "iscsiadm version 2.1.8\n", "")
    rc, out, err = run(root, "-h")
    assert rc == 0 and out.startswith("iscsiadm -m discoverydb") and err == ""
    assert run(root) == (7, "", "Try `iscsiadm --help' for more information.\n")
    assert run(root, "-m", "bogus") == (7, "", "iscsiadm: mode -1 is not yet supported\n")


# -- node mode ----------------------------------------------------------------------------
def test_node_story(root):
    assert run(root, "-m", "node") == (21, "", "iscsiadm: No records found\n")
    rc, out, err = run(root, "-m", "node", "-T", T, "-p", "192.0.2.10:3260,1", "--op=new")
    assert (rc, err) == (0, "")  # os-brick reads any stderr on --op new as failure
    assert out == (f"New iSCSI node [tcp:[hw=,ip=,net_if=,iscsi_if=default] 192.0.2.10,3260,1 {T}] added\n")
    run(root, "-m", "node", "-T", T, "-p", "[2001:db8::1]", "-o", "new")
    assert run(root, "-m", "node") == (0, f"192.0.2.10:3260,1 {T}\n[2001:db8::1]:3260,4294967295 {T}\n", "")
    assert run(root, "-m", "node", "-P", "1")[1] == (
        f"Target: {T}\n\tPortal: 192.0.2.10:3260,1\n\t\tIface Name: default\n"
        "\tPortal: [2001:db8::1]:3260,-1\n\t\tIface Name: default\n")
    rc, out, err = run(root, "-m", "node", "-T", T, "-p", "192.0.2.10", "-o", "update",
                       "-n", "node.session.auth.password", "-v", "pw",
                       "-n", "node.session.auth.username", "-v", "bob")
    assert (rc, out, err) == (0, "", "")
    rc, out, _ = run(root, "-m", "node", "-T", T, "-p", "192.0.2.10")
    shown = lines(out)
    assert shown[0] == "# BEGIN RECORD 2.1.8" and shown[-1] == "# END RECORD"
    assert "node.session.auth.password = ********" in shown
    assert "node.session.auth.username = bob" in shown
    assert "node.session.auth.password_in = <empty>" in shown
    assert "pw" not in out
    assert "node.session.auth.password = pw" in run(root, "-m", "node", "-T", T, "-p", "192.0.2.10", "-S")[1]


def test_node_refusals(root):
    run(root, "-m", "node", "-T", T, "-p", "192.0.2.10", "-o", "new")
    base = ["-m", "node", "-T", T, "-p", "192.0.2.10", "-o", "update"]
    assert run(root, *base, "-n", "node.bogus", "-v", "1") == (7, "", (
        "iscsiadm: Cannot modify node.bogus. Invalid param name.\n"
        "iscsiadm: Could not execute operation on all records: invalid parameter\n"))
    assert run(root, *base, "-n", "iface.ipaddress", "-v", "1") == (
        7, "", "iscsiadm: Cannot modify iface.ipaddress. Use iface mode to update this value.\n")
    assert run(root, *base, "-n", "node.startup") == (7, "", "iscsiadm: update requires name and value\n")
    assert run(root, "-m", "node", "-T", "iqn.none") == (21, "", "iscsiadm: No records found\n")
    assert run(root, "-m", "node", "-o", "show", "-o", "delete")[0] == 7
    assert run(root, "-m", "node", "-P", "2") == (7, "", "iscsiadm: Invalid info level 2. Try 0 or 1.\n")
    assert run(root, "-m", "node", "-I", "nosuch") == (3, "", "iscsiadm: Could not read iface info for nosuch.\n")


def test_node_delete(root):
    run(root, "-m", "node", "-T", T, "-p", "192.0.2.10", "-o", "new")
    assert run(root, "-m", "node", "-T", T, "-o", "delete") == (0, "", "")
    assert run(root, "-m", "node", "-T", T, "-o", "delete")[0] == 21


# -- iface / discoverydb ------------------------------------------------------------------
def test_iface(root):
    assert run(root, "-m", "iface") == (0, "default tcp,<empty>,<empty>,<empty>,<empty>\n"
                                           "iser iser,<empty>,<empty>,<empty>,<empty>\n", "")
    assert run(root, "-m", "iface", "-I", "eth1", "-o", "new") == (0, "eth1 updated.\nNew interface eth1 added\n", "")
    assert run(root, "-m", "iface", "-I", "eth1", "-o", "update", "-n", "iface.initiatorname",
               "-v", "iqn.x:y")[0] == 0
    assert "iface.initiatorname = iqn.x:y" in run(root, "-m", "iface", "-I", "eth1")[1]
    assert lines(run(root, "-m", "iface")[1])[0] == "eth1 tcp,<empty>,<empty>,<empty>,iqn.x:y"
    rc, _, err = run(root, "-m", "iface", "-I", "default", "-o", "delete")
    assert rc == 7 and "special interface" in err
    assert run(root, "-m", "iface", "-I", "eth1", "-o", "delete") == (0, "eth1 unbound and deleted.\n", "")


def test_discoverydb(root):
    assert run(root, "-m", "discoverydb") == (21, "", "")
    assert run(root, "-m", "discoverydb", "-t", "st", "-p", "192.0.2.1", "-o", "new") == (
        0, "New discovery record for [192.0.2.1,3260] added.\n", "")
    assert run(root, "-m", "discoverydb") == (0, "192.0.2.1:3260 via sendtargets\n", "")
    rc, out, err = run(root, "-m", "discoverydb", "-t", "sendtargets", "-p", "192.0.2.1", "-o", "update",
                       "-n", "discovery.sendtargets.auth.authmethod", "-v", "CHAP",
                       "-n", "discovery.sendtargets.auth.username", "-v", "u",
                       "-n", "discovery.sendtargets.auth.password", "-v", "p")
    assert (rc, out, err) == (0, "", "")
    out = run(root, "-m", "discoverydb", "-t", "st", "-p", "192.0.2.1")[1]
    assert "discovery.sendtargets.auth.password = ********" in lines(out)
    assert run(root, "-m", "discoverydb", "-t", "st", "-p", "192.0.2.9", "-o", "update", "-n",
               "discovery.startup", "-v", "manual") == (
        6, "", "iscsiadm: Discovery record [192.0.2.9,3260] not found.\n")
    assert run(root, "-m", "discoverydb", "-t", "st", "-p", "192.0.2.1", "-o", "delete") == (0, "", "")


# -- --json ---------------------------------------------------------------------------------
def test_json_listings(root):
    run(root, "-m", "node", "-T", T, "-p", "192.0.2.10:3260,1", "-o", "new")
    run(root, "-m", "node", "-T", T, "-p", "192.0.2.10", "-o", "update",
        "-n", "node.session.auth.password", "-v", "pw")
    rc, out, _ = run(root, "-m", "node", "--json")
    assert rc == 0 and json.loads(out) == [
        {"target": T, "address": "192.0.2.10", "port": 3260, "tpgt": 1, "iface": "default"}]
    (rec,) = json.loads(run(root, "-m", "node", "-T", T, "--json")[1])
    assert rec["node.session.auth.password"] == "********" and rec["node.session.cmds_max"] == 128
    assert rec["node.session.auth.username"] is None
    assert [i["iface.iscsi_ifacename"] for i in json.loads(run(root, "-m", "iface", "--json")[1])] == ["default", "iser"]
    run(root, "-m", "discoverydb", "-t", "st", "-p", "192.0.2.1", "-o", "new")
    assert json.loads(run(root, "-m", "discoverydb", "--json")[1]) == [
        {"address": "192.0.2.1", "port": 3260, "type": "sendtargets"}]


# -- the daemon's rows ---------------------------------------------------------------------
def test_daemon_rows_answer_daemon_down(root, monkeypatch, tmp_path):
    # no sessions in this (empty) sysfs, no daemon behind this socket path
    monkeypatch.setenv("ISCSIKIT_SYSFS_ROOT", str(tmp_path / "sys"))
    monkeypatch.setenv("ISCSIKIT_SOCKET", str(tmp_path / "no-daemon.sock"))
    run(root, "-m", "node", "-T", T, "-p", "192.0.2.10", "-o", "new")
    rc, out, err = run(root, "-m", "node", "-T", T, "-p", "192.0.2.10", "--login")
    portal = f"[iface: default, target: {T}, portal: 192.0.2.10,3260]"
    assert rc == 20
    assert out == f"Logging in to {portal}\n"
    assert lines(err) == ["iscsiadm: can not connect to iSCSI daemon (111)!",
                          f"iscsiadm: Could not login to {portal}.",
                          "iscsiadm: initiator reported error (20 - could not connect to iscsid)",
                          "iscsiadm: Could not log into all portals"]
    assert run(root, "-m", "session") == (21, "", "iscsiadm: No active sessions.\n")
    assert run(root, "-m", "node", "-T", T, "-p", "192.0.2.10", "--logout") == \
        (21, "", "iscsiadm: No matching sessions found\n")


def test_discovery_against_a_closed_loopback_port_fails_cleanly(root):
    with socket.socket() as s:          # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rc, out, err = run(root, "-m", "discovery", "-t", "st", "-p", f"127.0.0.1:{port}")
    assert rc == 4 and out == "" and err.startswith("iscsiadm: cannot make connection to 127.0.0.1")


def test_daemon_rows_are_replaceable(root, monkeypatch):
    seen = []
    from iscsikit.cli.adm import login
    monkeypatch.setattr(login, "node_login", lambda ctx, nodes: seen.append([n.target for n in nodes]) or 0)
    run(root, "-m", "node", "-T", T, "-p", "192.0.2.10", "-o", "new")
    assert run(root, "-m", "node", "-L", "all") == (0, "", "")
    assert seen == [[T]]


def test_loginall_reports_a_record_gone_since_listing_and_logs_the_others_in(root, monkeypatch, tmp_path):
    """-L all sends each login as its record is read: one record failing to read must not
    stop the others (whose requests may be out already), and is reported."""
    monkeypatch.setenv("ISCSIKIT_SYSFS_ROOT", str(tmp_path / "sys"))
    monkeypatch.setenv("ISCSIKIT_SOCKET", str(tmp_path / "no-daemon.sock"))
    gone = "iqn.2003-01.org.example:gone"
    for t in (T, gone):
        run(root, "-m", "node", "-T", t, "-p", "192.0.2.10", "-o", "new")
    real = ndb.NodeDB.read_node

    def read_node(self, nid):
        if nid.target == gone:
            raise ndb.DBError(f"could not read node record {nid.target}: No such file or directory")
        return real(self, nid)

    monkeypatch.setattr(ndb.NodeDB, "read_node", read_node)
    rc, out, err = run(root, "-m", "node", "-L", "all")
    assert out == f"Logging in to [iface: default, target: {T}, portal: 192.0.2.10,3260]\n"
    assert f"iscsiadm: could not read node record {gone}: No such file or directory" in lines(err)
    assert "iscsiadm: can not connect to iSCSI daemon (111)!" in lines(err)   # T's login was still sent
    assert rc == 6


def test_login_path_imports_stay_light():
    """What `-L all` imports: each module is a round of 9p reads in the lab guest."""
    code = ("import sys, iscsikit.cli.adm, iscsikit.cli.adm.node, iscsikit.cli.adm.login, "
            "iscsikit.initiator.nodedb, iscsikit.initiator.client, iscsikit.kernel.sysfs; "
            "print(sorted(m for m in ('typing', 'socket', 'selectors', 'dataclasses', 'inspect') if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert p.stdout.strip() == "[]"


def test_import_is_light():
    code = ("import sys, iscsikit.cli.adm; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('rtslib', 'rtslib_fb', 'pyroute2', 'configshell')))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert p.stdout.strip() == "[]"


def test_entry_point_uses_environment_root(root):
    env = dict(os.environ, ISCSIKIT_DB_ROOT=root)
    p = subprocess.run([sys.executable, "-m", "iscsikit.cli.adm", "-m", "iface", "-I", "default"],
                       capture_output=True, text=True, env=env, check=False)
    assert p.returncode == 0 and "iface.transport_name = tcp" in p.stdout and p.stderr == ""


def test_an_unexpected_error_is_one_line_and_exit_9_not_a_traceback(root, monkeypatch):
    from iscsikit.cli.adm import node

    def broken(ctx):
        raise ValueError("invalid literal for int() with base 10: '²'")
    monkeypatch.setattr(node, "mode_node", broken)
    assert run(root, "-m", "node") == (9, "", "iscsiadm: internal error: ValueError: invalid literal for "
                                              "int() with base 10: '²'\n")


# -- several sessions per record (issue 19) ------------------------------------------------
class _Recorder:
    """The daemon's client for node_login: records the login requests, all succeed."""

    def __init__(self, sent):
        self.sent = sent

    def call_many(self, requests, on_done=None):
        out = []
        for op, args in requests:
            self.sent.append((op, args))
            out.append({"sid": len(self.sent)})
        return out


@pytest.fixture
def logins(root, monkeypatch):
    from iscsikit.cli.adm import login
    sent, up = [], {}
    monkeypatch.setattr(login, "client", lambda ctx: _Recorder(sent))
    monkeypatch.setattr(login, "session_counts", lambda env=None: dict(up))
    # with a tpgt: a record without one is open-iscsi's legacy single-iface file
    for iface in ("ifa", "ifb"):
        run(root, "-m", "iface", "-I", iface, "-o", "new")
        run(root, "-m", "node", "-T", T, "-p", "192.0.2.10:3260,1", "-I", iface, "-o", "new")
    return sent, up


def test_a_second_iface_to_one_portal_is_a_second_session(root, logins):
    sent, up = logins
    up[(T, "192.0.2.10", 3260, "ifa")] = 1
    rc, out, err = run(root, "-m", "node", "-T", T, "-p", "192.0.2.10", "-I", "ifb", "--login")
    assert (rc, err) == (0, "") and [a["iface_name"] for _, a in sent] == ["ifb"]
    assert "multiple" not in sent[0][1]
    # the same iface again: iscsiadm's refusal, exit 15, nothing sent
    rc, out, err = run(root, "-m", "node", "-T", T, "-p", "192.0.2.10", "-I", "ifa", "--login")
    assert rc == 15 and "iscsiadm: ifa: 1 session requested, but 1 already present." in lines(err)
    assert len(sent) == 1


def test_nr_sessions_makes_the_missing_sessions_marked_multiple(root, logins):
    sent, up = logins
    run(root, "-m", "node", "-T", T, "-p", "192.0.2.10", "-I", "ifa", "-o", "update",
        "-n", "node.session.nr_sessions", "-v", "3")
    up[(T, "192.0.2.10", 3260, "ifa")] = 1
    rc, out, err = run(root, "-m", "node", "-T", T, "-p", "192.0.2.10", "-I", "ifa", "--login")
    assert rc == 0 and len(sent) == 2 and all(a["multiple"] for _, a in sent)
    assert lines(out).count(f"Logging in to [iface: ifa, target: {T}, portal: 192.0.2.10,3260] (multiple)") == 2
    up[(T, "192.0.2.10", 3260, "ifa")] = 3
    rc, out, err = run(root, "-m", "node", "-T", T, "-p", "192.0.2.10", "-I", "ifa", "--login")
    assert rc == 15 and "iscsiadm: ifa: 3 sessions requested, but 3 already present." in lines(err)


def test_bound_iface_keys_reach_the_login_request(root, logins):
    sent, _ = logins
    run(root, "-m", "iface", "-I", "ifa", "-o", "update", "-n", "iface.net_ifacename", "-v", "veth7")
    run(root, "-m", "node", "-T", T, "-p", "192.0.2.10", "-I", "ifa", "-o", "update",
        "-n", "node.session.reopen_max", "-v", "4")
    assert run(root, "-m", "node", "-T", T, "-p", "192.0.2.10", "-I", "ifa", "--login")[0] == 0
    args = sent[0][1]
    assert (args["net_ifacename"], args["hwaddress"], args["ipaddress"], args["reopen_max"]) == ("veth7", "", "", 4)

"""Discovery CHAP from the discovery record, through iscsikit-adm, against a real tgtd on
127.0.0.1: `-m discoverydb -D` honours discovery.sendtargets.auth.* (one-way, then mutual),
and a wrong secret is exit 24 with iscsiadm's lines."""

from __future__ import annotations

import io

import pytest

from iscsikit.cli import adm
from iscsikit.initiator import nodedb

pytestmark = [pytest.mark.interop, pytest.mark.timeout(60)]

DISC, DISC_PW = "discuser", "disc-secret-12"
TGT, TGT_PW = "disctgt", "disc-target-34"
AUTH = "discovery.sendtargets.auth"


def _run(root, *argv):
    out, err = io.StringIO(), io.StringIO()
    rc = adm.run(list(argv), out=out, err=err, db=nodedb.NodeDB(root), env={})
    return rc, out.getvalue(), err.getvalue()


def test_discovery_chap_against_tgtd(tgtd, tmp_path):
    name = tgtd.add_target(7, "disc-chap")
    root = tmp_path / "iscsi"
    root.mkdir()
    (root / "iscsid.conf").write_text("")
    (root / "initiatorname.iscsi").write_text("InitiatorName=iqn.2026-11.org.example:disc\n")
    host, port = tgtd.portal
    portal = f"{host}:{port}"
    tgtd.add_account(DISC, DISC_PW)
    tgtd.add_account(TGT, TGT_PW)
    tgtd.bind_account(DISC)
    try:
        assert _run(root, "-m", "discoverydb", "-t", "st", "-p", portal, "-o", "new")[0] == 0
        # no credentials in the record: refused
        rc, out, err = _run(root, "-m", "discoverydb", "-t", "st", "-p", portal, "-D")
        assert rc == 24 and out == "" and "initiator failed authorization" in err
        # a wrong secret: refused the same way, nothing recorded
        assert _run(root, "-m", "discoverydb", "-t", "st", "-p", portal, "-o", "update",
                    "-n", f"{AUTH}.authmethod", "-v", "CHAP", "-n", f"{AUTH}.username", "-v", DISC,
                    "-n", f"{AUTH}.password", "-v", "not-the-secret")[0] == 0
        rc, out, err = _run(root, "-m", "discoverydb", "-t", "st", "-p", portal, "-D")
        assert rc == 24 and err.endswith(
            "iscsiadm: Could not perform SendTargets discovery: iSCSI login failed due to authorization failure\n")
        assert _run(root, "-m", "node")[0] == 21
        # one-way
        _run(root, "-m", "discoverydb", "-t", "st", "-p", portal, "-o", "update",
             "-n", f"{AUTH}.password", "-v", DISC_PW)
        rc, out, err = _run(root, "-m", "discoverydb", "-t", "st", "-p", portal, "-D")
        assert (rc, err) == (0, "") and f"{portal},1 {name}" in out.splitlines()
        # mutual: tgtd proves itself with the outgoing account
        tgtd.bind_account(TGT, outgoing=True)
        _run(root, "-m", "discoverydb", "-t", "st", "-p", portal, "-o", "update",
             "-n", f"{AUTH}.username_in", "-v", TGT, "-n", f"{AUTH}.password_in", "-v", TGT_PW)
        rc, out, err = _run(root, "-m", "discoverydb", "-t", "st", "-p", portal, "-D")
        assert (rc, err) == (0, "") and f"{portal},1 {name}" in out.splitlines()
        # mutual with the wrong incoming secret: the target's answer is refused
        _run(root, "-m", "discoverydb", "-t", "st", "-p", portal, "-o", "update",
             "-n", f"{AUTH}.password_in", "-v", "not-the-target-1")
        rc, out, err = _run(root, "-m", "discoverydb", "-t", "st", "-p", portal, "-D")
        assert rc == 24 and out == ""
        # the secrets never reach the output
        for text in (out, err, _run(root, "-m", "discoverydb", "-t", "st", "-p", portal)[1]):
            assert DISC_PW not in text and TGT_PW not in text
    finally:
        tgtd.unbind_account(TGT, outgoing=True)
        tgtd.unbind_account(DISC)

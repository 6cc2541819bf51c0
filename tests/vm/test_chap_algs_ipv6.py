"""Issue 14: chap_algs from the node record and IPv6 portals, against LIO (probes/chap_ipv6_story.py).

CHAP: the record's chap_algs are offered in its order (CHAP_A on the wire), LIO on 6.1
picks SHA3-256 or SHA-256 when listed first and the login succeeds; a wrong secret is 24.
IPv6: discovery, node records, login and -m session at [::1]:3260, beside Debian's
open-iscsi 2.1.8 in the same guest: same output, same record paths.
"""

import re

import pytest

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def story(run_probe):
    return run_probe("chap_ipv6_story.py", timeout=600)


@pytest.mark.parametrize("case, offered, chosen", [
    ("sha3_first", "8,7,5", "8"),
    ("sha256_first", "7,8,5", "7"),
    ("sha256_only", "7", "7"),
    ("md5", "5", "5"),
])
def test_chap_algs_offered_in_record_order_and_lio_logs_in(story, case, offered, chosen):
    res = story["chap"][case]
    assert res["rc"] == 0, res["stderr"]
    assert res["offered"] == [offered] and res["chosen"] == [chosen]
    assert res["logout"] == 0 and res["sessions_after"] == []


def test_sha256_with_a_wrong_secret_is_24_and_leaves_no_session(story):
    res = story["chap"]["sha256_wrong_secret"]
    assert res["rc"] == 24, res
    assert res["offered"] == ["7,5"] and res["chosen"] == ["7"]
    assert res["sessions"] == [] and res["sessions_after"] == []


def test_mutual_chap_with_sha3_256(story):
    # the target proves itself with SHA3-256 too: our challenge is 32 bytes, as the digest
    res = story["chap"]["sha3_mutual"]
    assert res["rc"] == 0, res["stderr"]
    assert res["offered"] == ["8,5"] and res["chosen"] == ["8"] and res["sessions_after"] == []
    bad = story["chap"]["sha3_mutual_wrong_target_secret"]
    assert bad["rc"] == 24 and bad["sessions"] == [] and bad["sessions_after"] == []


def _norm(text):
    # the session id is the only thing allowed to differ
    text = re.sub(r"\[\d+\]", "[SID]", text)
    text = re.sub(r"(SID|sid): \d+", r"\1: N", text)
    return text


def test_ipv6_transcript_matches_open_iscsi(story):
    ref, ours = story["open_iscsi"], story["iscsikit"]
    assert [s["argv"] for s in ref] == [s["argv"] for s in ours]
    for r, o in zip(ref, ours):
        assert (o["rc"], _norm(o["stdout"]), _norm(o["stderr"])) == (r["rc"], _norm(r["stdout"]), _norm(r["stderr"])), o["argv"]
    assert ref[0]["rc"] == 0 and "[::1]:3260,1 iqn.2026-11.org.iscsikit.test:ipv6" in ref[0]["stdout"]


def test_ipv6_records_are_where_open_iscsi_puts_them(story):
    ref = next(s for s in story["open_iscsi"] if s["argv"] == ["-m", "node"])
    ours = next(s for s in story["iscsikit"] if s["argv"] == ["-m", "node"])
    assert ours["node_files"] == ref["node_files"] == ["iqn.2026-11.org.iscsikit.test:ipv6/::1,3260,1/default"]


def test_ipv6_session_listing(story):
    ours = next(s for s in story["iscsikit"] if s["argv"] == ["-m", "session"])
    assert re.fullmatch(r"tcp: \[\d+\] \[::1\]:3260,1 iqn\.2026-11\.org\.iscsikit\.test:ipv6 \(non-flash\)\n",
                        ours["stdout"])

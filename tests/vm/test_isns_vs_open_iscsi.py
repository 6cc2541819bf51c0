"""iSNS discovery (issue 14; RFC 4171, proto/isns.py), differentially: the same command lines
(`-m discovery -t isns`, `-l`, `-m discoverydb -t isns -o new|show|delete`, `-D`, a target
that leaves the server, a server that is not there) through Debian's open-iscsi 2.1.8 and
through iscsikit in one guest, against one open-isns server where LIO's two targets are
registered (probes/isns_story.py): exit code, stdout and stderr equal."""


import pytest
from transcripts import differences, drop_noise, dumped, without_sids


# libisns's own log lines in the reference's stderr (its socket layer, not iscsiadm's words)
LIBISNS_NOISE = ("socket disconnect, killing socket", "Warning: Timed out while waiting for reply")


def normalize(text: str) -> str:
    text = "".join(line for line in text.splitlines(True) if not line.startswith(LIBISNS_NOISE))
    text = without_sids(text)
    return drop_noise(text)


@pytest.fixture(scope="module")
def transcripts(run_probe):
    report = run_probe("isns_story.py")
    return dumped(report)


def _in_sid_order_free(steps):
    """The two logins of `-l` run at once, so which target gets the lower sid (and is listed,
    logged out first) is the race's, in both tools: those lines are compared as sets."""
    out = []
    for s in steps:
        if s["argv"] in (["-m", "session"], ["-m", "node", "-U", "all"]):
            s = {**s, "stdout": "".join(sorted(normalize(s["stdout"]).splitlines(True)))}
        out.append(s)
    return out


def test_isns_discovery_answers_as_open_iscsi(transcripts):
    ref, ours = transcripts["open_iscsi"], transcripts["iscsikit"]
    assert [s["argv"] for s in ref] == [s["argv"] for s in ours]
    diffs = differences(_in_sid_order_free(ref), _in_sid_order_free(ours), normalize)
    assert not diffs, diffs


def test_isns_really_found_and_logged_in(transcripts):
    ours = {}
    for s in transcripts["iscsikit"]:     # the first run of each command line
        ours.setdefault(" ".join(s["argv"]), s)
    found = ours["-m discovery -t isns -p 127.0.0.1"]
    assert found["rc"] == 0 and "isns1" in found["stdout"] and "isns2" in found["stdout"]
    assert ours["-m session"]["rc"] == 0 and ours["-m session"]["stdout"].count("isns") == 2
    # after T2 left the server, rediscovery keeps only T1's record
    assert ours["-m node"]["stdout"].count("isns") == 2
    later = [s for s in transcripts["iscsikit"] if s["argv"] == ["-m", "node"]][-1]
    assert "isns1" in later["stdout"] and "isns2" not in later["stdout"]

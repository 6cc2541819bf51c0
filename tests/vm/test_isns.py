"""iSNS discovery (issue 14; RFC 4171, proto/isns.py), differentially: the same command lines
(`-m discovery -t isns`, `-l`, `-m discoverydb -t isns -o new|show|delete`, `-D`, a target
that leaves the server, a server that is not there) through Debian's open-iscsi 2.1.8 and
through iscsikit in one guest, against one open-isns server where LIO's two targets are
registered (probes/isns_story.py): exit code, stdout and stderr equal."""

import json
import os
import re

import pytest
from transcripts import differences, drop_noise


def normalize(text: str) -> str:
    text = re.sub(r"\[sid: \d+,", "[sid: N,", text)
    text = re.sub(r"^tcp: \[\d+\]", "tcp: [N]", text, flags=re.M)
    return drop_noise(text)


@pytest.fixture(scope="module")
def transcripts(run_probe):
    report = run_probe("isns_story.py")
    dump = os.environ.get("ISCSIKIT_TRANSCRIPT_DUMP")   # for reading a failure in full
    if dump:
        with open(dump, "w") as f:
            json.dump(report, f, indent=1)
    return report


def test_isns_discovery_answers_as_open_iscsi(transcripts):
    ref, ours = transcripts["open_iscsi"], transcripts["iscsikit"]
    assert [s["argv"] for s in ref] == [s["argv"] for s in ours]
    diffs = differences(ref, ours, normalize)
    assert not diffs, diffs


def test_isns_really_found_and_logged_in(transcripts):
    ours = {" ".join(s["argv"]): s for s in transcripts["iscsikit"]}
    found = ours["-m discovery -t isns -p 127.0.0.1"]
    assert found["rc"] == 0 and "isns1" in found["stdout"] and "isns2" in found["stdout"]
    assert ours["-m session"]["rc"] == 0 and ours["-m session"]["stdout"].count("isns") == 2

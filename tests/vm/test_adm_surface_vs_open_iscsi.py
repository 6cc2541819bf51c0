"""Issue 14's newly real iscsiadm modes, differentially: the same command lines (discovery
operations and stale records, discovery CHAP one-way and mutual with a wrong secret first,
discoverydb -P 1, -m host, -m fw, session -r SID -o show|update and -S, session -R with no
session, -k 0) through Debian's open-iscsi 2.1.8 and through iscsikit in one guest against
the same LIO targets: exit code, stdout and stderr equal modulo sid, host number and the
reference's systemd chatter (docs/iscsiadm-surface.md names each row's step)."""

import re

import pytest
from transcripts import differences, drop_noise, dumped, without_sids


def normalize(text: str) -> str:
    text = without_sids(text)
    text = re.sub(r"SID: \d+", "SID: N", text)
    text = re.sub(r"Host Number: \d+", "Host Number: N", text)
    text = re.sub(r"hostno \d+", "hostno N", text)
    return drop_noise(text)


@pytest.fixture(scope="module")
def transcripts(run_probe):
    report = run_probe("adm_surface_differential.py")
    return dumped(report)


def _shape(argv):
    return ["N" if a.isdigit() and i and argv[i - 1] in ("-r", "-H") else a for i, a in enumerate(argv)]


def test_every_new_mode_answers_as_open_iscsi(transcripts):
    ref, ours = transcripts["open_iscsi"], transcripts["iscsikit"]
    assert [_shape(s["argv"]) for s in ref] == [_shape(s["argv"]) for s in ours]
    diffs = differences(ref, ours, normalize)
    assert not diffs, diffs


def test_discovery_chap_really_ran(transcripts):
    # the wrong secret is refused with 24, the right one (one-way and mutual) finds the targets
    ours = [s for s in transcripts["iscsikit"] if "-D" in s["argv"]]
    assert [s["rc"] for s in ours] == [24, 24, 0, 0, 0]
    assert "surf1" in ours[2]["stdout"] and "surf1" in ours[4]["stdout"]


def test_kill_stops_the_daemon(transcripts):
    for side in ("open_iscsi_kill", "iscsikit_kill"):
        assert transcripts[side]["stopped"], transcripts[side]
    ref, ours = transcripts["open_iscsi_kill"], transcripts["iscsikit_kill"]
    assert (ours["rc"], ours["stdout"], ours["stderr"]) == (ref["rc"], ref["stdout"], ref["stderr"])

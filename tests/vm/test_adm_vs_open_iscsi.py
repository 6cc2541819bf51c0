"""The same iscsiadm command lines through Debian's open-iscsi 2.1.8 and through iscsikit
(iscsikitd + the forwarding iscsiadm; then with the daemon down, where it runs iscsikit-adm
in-process), in one guest against the same LIO targets: exit code, stdout and stderr must be
equal, modulo session ids and the reference's own systemd chatter."""

import re

import pytest
from transcripts import differences, drop_noise



def normalize(text: str) -> str:
    text = re.sub(r"\[sid: \d+,", "[sid: N,", text)
    # statistics differ run to run; their names and order must not
    text = re.sub(r"^(\t\w+): \d+$", r"\1: N", text, flags=re.M)
    text = re.sub(r"^tcp: \[\d+\]", "tcp: [N]", text, flags=re.M)
    text = re.sub(r"SID: \d+", "SID: N", text)
    return drop_noise(text)


@pytest.fixture(scope="module")
def transcripts(run_probe):
    return run_probe("adm_differential.py")


def test_every_command_line_answers_as_open_iscsi(transcripts):
    ref, ours = transcripts["open_iscsi"], transcripts["iscsikit"]
    def shape(argv):
        return ["SID" if a.isdigit() and i and argv[i - 1] == "-r" else a for i, a in enumerate(argv)]

    assert [shape(s["argv"]) for s in ref] == [shape(s["argv"]) for s in ours]
    diffs = differences(ref, ours, normalize)
    assert not diffs, diffs


def test_the_transcript_covers_the_exit_codes_that_matter(transcripts):
    codes = {s["rc"] for s in transcripts["open_iscsi"]}
    # success, bad key 7, session exists 15, daemon down 20, no record/no session 21, auth failure 24
    assert {0, 7, 15, 20, 21, 24} <= codes
    listing = next(s for s in transcripts["iscsikit"] if s["argv"] == ["-m", "session", "-P", "3"])
    assert "Attached scsi disk sd" in listing["stdout"]


def test_the_commands_ran_in_the_daemon_through_the_forwarder(transcripts):
    # every command line of the daemon-up part, and the -U all after it, was served by iscsikitd
    assert transcripts["forwarder_is_elf"]
    assert transcripts["served"] == transcripts["steps_up"] + 1

"""`iscsiadm -m fw` and `-m discovery -t fw` on a real kernel's iBFT (issue 14): the guest's
firmware carries the table tests/vm/ibft_table.py builds (conftest.BOOT_TABLE), iscsi_ibft
shows it in /sys/firmware/ibft, and the same command lines run through Debian's open-iscsi
2.1.8 and through iscsikit (probes/fw_story.py): exit code, stdout and stderr equal except
that iscsikit masks the table's CHAP secrets; both log in to LIO with the table's initiator
name and mutual CHAP, and read the boot LUN."""

import dataclasses
import json
import re

import pytest
from conftest import BOOT_TABLE, PROBES
from transcripts import differences, drop_noise, dumped, without_sids

INITIATOR, NIC, TARGET = BOOT_TABLE


def normalize(text: str) -> str:
    text = without_sids(text)
    return drop_noise(text)


def mask_secrets(text: str) -> str:
    """open-iscsi prints the table's secrets in `-m fw` (fw_entry.c dump_target); iscsikit
    prints no secret by default and fw mode has no -S, so it shows ********."""
    return re.sub(r"^(node\.session\.auth\.password(_in)?) = .*$", r"\1 = ********", text, flags=re.M)


@pytest.fixture(scope="module")
def story(guest):
    facts = {"initiator": INITIATOR, "nic": dataclasses.asdict(NIC), "target": dataclasses.asdict(TARGET)}
    report = guest.run_probe(PROBES / "fw_story.py", timeout=900, env={"IK_IBFT_FACTS": json.dumps(facts)})
    return dumped(report)


def test_the_kernel_shows_the_firmware_table(story):
    sysfs = story["sysfs"]
    assert sysfs["initiator/initiator-name"] == INITIATOR
    assert (sysfs["target0/target-name"], sysfs["target0/ip-addr"], sysfs["target0/port"]) == (
        TARGET.name, TARGET.address, str(TARGET.port))
    assert (sysfs["target0/chap-type"], sysfs["target0/rev-chap-name"]) == ("2", TARGET.reverse_chap[0])
    assert (sysfs["ethernet0/mac"], sysfs["ethernet0/ip-addr"]) == (NIC.mac, NIC.address)


def test_fw_modes_answer_as_open_iscsi(story):
    ref, ours = story["open_iscsi"], story["iscsikit"]
    assert [s["argv"] for s in ref] == [s["argv"] for s in ours]
    diffs = differences(ref, ours, lambda t: mask_secrets(normalize(t)))
    assert not diffs, diffs
    # the secrets themselves: open-iscsi prints them, iscsikit never does
    assert TARGET.chap[1] in ref[0]["stdout"] and TARGET.chap[1] not in json.dumps(ours)


def test_both_log_in_with_the_tables_name_and_mutual_chap_and_read_the_boot_lun(story):
    for side in ("open_iscsi", "iscsikit"):
        disks = story[f"{side}_disks"]
        assert len(disks) == 2, (side, disks)
        for d in disks:
            assert d and d["rc"] == 0, (side, d)
            assert d["sessions"] == [{"targetname": TARGET.name, "initiatorname": INITIATOR,
                                      "username": TARGET.chap[0], "username_in": TARGET.reverse_chap[0]}], side

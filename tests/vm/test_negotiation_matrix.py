"""Issue 14's proof against LIO: the pairwise negotiation matrix (probes/negotiation_story.py).

Each row sets the target's TPG parameters through target/ and the node record through
iscsiadm, logs in, and writes 8 MiB with O_DIRECT in mixed block sizes. The negotiated
values in sysfs (what our daemon handed the kernel) and in LIO's ACL param/ (what LIO
itself runs with) must both be RFC 7143's result of the two sides' offers, computed in
probes/matrix.py; the data must read back equal through the disk and from the backing file.
The whole 168-row matrix is bench/bench_negotiation.py.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "probes"))
import matrix  # noqa: E402

pytestmark = pytest.mark.vm
ROWS = matrix.pairwise()
IDS = [matrix.label(r) for r in ROWS]


@pytest.fixture(scope="module")
def story(run_probe):
    res = run_probe("negotiation_story.py", timeout=900)
    assert res["new_rc"] == 0
    assert [r["row"] for r in res["rows"]] == ROWS
    return res


def _row(story, index):
    res = story["rows"][index]
    assert "error" not in res, res["error"]
    return res


@pytest.mark.parametrize("index", range(len(ROWS)), ids=IDS)
def test_target_runs_the_rows_values(story, index):
    res = _row(story, index)
    want = matrix.sides(ROWS[index])["target"]
    assert res["tpg"] == {**{k: str(v) for k, v in want.items()},
                          "MaxXmitDataSegmentLength": str(want[matrix.MRDSL])}


@pytest.mark.parametrize("index", range(len(ROWS)), ids=IDS)
def test_sysfs_holds_rfc_7143s_result(story, index):
    res = _row(story, index)
    assert res["kernel"] == matrix.expected(ROWS[index])


@pytest.mark.parametrize("index", range(len(ROWS)), ids=IDS)
def test_lio_agrees_on_the_negotiated_values(story, index):
    res = _row(story, index)
    e = matrix.expected(ROWS[index])
    # LIO's ACL param/ shows a session's booleans as 1/0 (iscsi_target_configfs.c)
    assert res["lio"] == {"InitialR2T": {"Yes": "1", "No": "0"}[e["initial_r2t"]],
                          "ImmediateData": {"Yes": "1", "No": "0"}[e["immediate_data"]],
                          "FirstBurstLength": str(e["first_burst_len"]), "MaxBurstLength": str(e["max_burst_len"])}


@pytest.mark.parametrize("index", range(len(ROWS)), ids=IDS)
def test_8_mib_in_mixed_blocks_reads_back_equal(story, index):
    res = _row(story, index)
    assert res["disk"], "no disk appeared"
    io = res["io"]
    assert io["bytes"] == matrix.TOTAL and io["extents"] == len(matrix.extents())
    assert io["bad_dev"] == [] and io["bad_file"] == []
    assert res["logout_rc"] == 0 and res["sessions_left"] == []

"""Issue 14's negotiation matrix (the pairwise rows) against a real tgtd, no kernel needed.

Each row's target values go to tgtd (`tgtadm --op update --mode target`), its initiator
values into a node record, which records.login_request turns into the login's offer (the
one record → login mapping). The login runs in userspace (login_io + proto's login
machine); then 8 MiB are written in mixed block sizes (4 KiB ... 1 MiB) through proto's
WriteExchange (immediate data, unsolicited Data-Out and R2T-solicited Data-Out, every
segment within tgtd's declared MaxRecvDataSegmentLength) and read back equal. The
negotiated values must be RFC 7143's (tests/vm/probes/matrix.py computes them from the
two sides' offers, independently of proto/negotiation.py).
"""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "vm", "probes"))
import matrix  # noqa: E402

from iscsikit.initiator import nodedb as ndb, records  # noqa: E402
from iscsikit.initiator.login_io import login  # noqa: E402

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]

ROWS = matrix.pairwise()
TEST_UNIT_READY = bytes(6)


def _rw10(opcode: int, offset: int, length: int) -> bytes:
    lba, blocks = offset // 512, length // 512
    return bytes([opcode, 0]) + lba.to_bytes(4, "big") + b"\x00" + blocks.to_bytes(2, "big") + b"\x00"


def negotiated(session) -> dict:
    """The session's parameters, by the names the initiator's sysfs gives them."""
    p = session.parameters
    n = p.negotiated
    yes_no = {True: "Yes", False: "No"}
    return {"initial_r2t": yes_no[n["InitialR2T"]], "immediate_data": yes_no[n["ImmediateData"]],
            "first_burst_len": n["FirstBurstLength"], "max_burst_len": n["MaxBurstLength"],
            "max_recv_dlength": p.max_recv_data_segment, "max_xmit_dlength": p.max_xmit_data_segment}


def run_row(tgtd, iqn: str, tid: int, row: dict, seed: int) -> dict:
    """One row: configure both sides, log in, write and read back 8 MiB. What happened, as data."""
    sides = matrix.sides(row)
    for key, value in sides["target"].items():
        tgtd.set_param(tid, key, str(value))
    nid = ndb.NodeId(iqn, "127.0.0.1", tgtd.port, 1, "default")
    values = {matrix.RECORD_KEYS[k]: str(v) for k, v in sides["initiator"].items()}
    offer = records.login_request(nid, values)["operational"]
    res = {"extents": 0, "bad": [], "data_outs": 0, "r2ts": 0}
    with login(tgtd.portal, iqn, operational=offer) as session:
        res["negotiated"] = negotiated(session)
        session.scsi(TEST_UNIT_READY, lun=1)          # the power-on unit attention
        for off, length in matrix.extents():
            data = matrix.pattern(seed, off, length)
            result = session.write(_rw10(0x2A, off, length), data, lun=1)
            assert result.status == 0, (off, length, result)
            res["extents"] += 1
        for off, length in matrix.extents():
            result = session.scsi(_rw10(0x28, off, length), lun=1, expected_length=length)
            if result.status != 0 or result.data != matrix.pattern(seed, off, length):
                res["bad"].append(off)
        session.logout()
    return res


@pytest.fixture(scope="module")
def matrix_target(tgtd):
    return 1, tgtd.add_target(1, "matrix", lun_size=16 << 20)


def test_pairwise_rows_cover_every_pair():
    got = set().union(*(matrix.covered(r) for r in ROWS))
    assert got == matrix.pairs() and len(ROWS) <= 16
    assert ROWS == matrix.pairwise()                 # deterministic: CI runs the same rows each time
    for row in ROWS + matrix.full_matrix():
        for side in matrix.sides(row).values():      # RFC 7143 §13.14 on each side's offer
            assert side["FirstBurstLength"] <= side["MaxBurstLength"]
        e = matrix.expected(row)
        assert (e["initial_r2t"], e["immediate_data"], e["first_burst_len"], e["max_burst_len"]) == \
            tuple(row[k] for k in matrix.NEGOTIATED)


@pytest.mark.parametrize("index", range(len(ROWS)), ids=[matrix.label(r) for r in ROWS])
def test_row_negotiates_by_rfc_7143_and_moves_8_mib(tgtd, matrix_target, index):
    tid, iqn = matrix_target
    row = ROWS[index]
    res = run_row(tgtd, iqn, tid, row, seed=index)
    assert res["negotiated"] == matrix.expected(row)
    assert res["extents"] == len(matrix.extents()) and res["bad"] == []

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

from tgtd_harness import matrix_row  # noqa: E402

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]

ROWS = matrix.pairwise()
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
    res = matrix_row(tgtd, iqn, tid, row, seed=index)
    assert res["negotiated"] == matrix.expected(row)
    assert res["extents"] == len(matrix.extents()) and res["bad"] == []

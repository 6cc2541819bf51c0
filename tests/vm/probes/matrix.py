"""Issue 14's negotiation matrix: its factors, a deterministic pairwise subset, RFC 7143's
expected outcome of each row, and the mixed-block-size data pattern every row writes.

Used by the guest probe against LIO (probes/negotiation_story.py), the host test against
tgtd (tests/interop/test_tgtd_matrix.py) and bench/bench_negotiation.py, so the three agree
on what a row is. The expected values are computed here from the RFC's rules, not taken
from proto/negotiation.py: they are what that engine is checked against.

A row names the value each key should be negotiated to and, for the negotiated keys,
which side's offer decides it (`<key>.by`: target or initiator); the other side offers a
value that loses under the key's rule (No for OR, Yes for AND, for MIN the largest value that
keeps that side's FirstBurstLength <= MaxBurstLength), so
each rule is seen picking either side. MaxRecvDataSegmentLength is declarative (§13.12):
each side's declaration is a factor of its own. `sides(row)` turns a row into the values
set on the target's TPG and in the node record.
"""

from __future__ import annotations

import hashlib
import itertools
import random

# Issue 14's values per key (RFC 7143 §13.10-13.14).
VALUES = {
    "InitialR2T": ("Yes", "No"),
    "ImmediateData": ("Yes", "No"),
    "FirstBurstLength": (512, 65536, 262144),
    "MaxBurstLength": (4096, 262144, 16776192),
    "MaxRecvDataSegmentLength": (512, 8192, 262144),
}
KEYS = tuple(VALUES)
NEGOTIATED = KEYS[:4]
SIDES = ("target", "initiator")
MRDSL = "MaxRecvDataSegmentLength"
FACTORS: dict[str, tuple] = {
    **{k: VALUES[k] for k in NEGOTIATED},
    f"{MRDSL}.target": VALUES[MRDSL], f"{MRDSL}.initiator": VALUES[MRDSL],
    **{f"{k}.by": SIDES for k in NEGOTIATED},
}
NAMES = tuple(FACTORS)

# Where each key lives in an open-iscsi node record.
RECORD_KEYS = {
    "InitialR2T": "node.session.iscsi.InitialR2T",
    "ImmediateData": "node.session.iscsi.ImmediateData",
    "FirstBurstLength": "node.session.iscsi.FirstBurstLength",
    "MaxBurstLength": "node.session.iscsi.MaxBurstLength",
    "MaxRecvDataSegmentLength": "node.conn[0].iscsi.MaxRecvDataSegmentLength",
}


def _partial_ok(row: dict) -> bool:
    """RFC 7143 §13.14: FirstBurstLength MUST NOT exceed MaxBurstLength (the issue skips those)."""
    first, most = row.get("FirstBurstLength"), row.get("MaxBurstLength")
    return first is None or most is None or first <= most


def pairs() -> set:
    """Every pair of factor values some valid row can hold: what the pairwise rows must cover."""
    out = set()
    for fa, fb in itertools.combinations(NAMES, 2):
        for va in FACTORS[fa]:
            for vb in FACTORS[fb]:
                if _partial_ok({fa: va, fb: vb}):
                    out.add(((fa, va), (fb, vb)))
    return out


def covered(row: dict) -> set:
    return {((fa, row[fa]), (fb, row[fb])) for fa, fb in itertools.combinations(NAMES, 2)}


def pairwise() -> list[dict]:
    """A small set of valid rows covering every allowed pair of factor values.

    Greedy and deterministic (no randomness, factor order fixed): each new row starts from
    the first uncovered pair, then takes, factor by factor, the value that covers the most
    still-uncovered pairs with what the row already holds (ties: the first value)."""
    todo = pairs()
    rank = {(f, v): (NAMES.index(f), FACTORS[f].index(v)) for f in NAMES for v in FACTORS[f]}
    rows: list[dict] = []
    while todo:
        (fa, va), (fb, vb) = min(todo, key=lambda p: (rank[p[0]], rank[p[1]]))
        row = {fa: va, fb: vb}
        for f in NAMES:
            if f in row:
                continue
            best, best_gain = None, -1
            for v in FACTORS[f]:
                if not _partial_ok(dict(row, **{f: v})):
                    continue
                gain = sum(1 for g, w in row.items()
                           if tuple(sorted(((f, v), (g, w)), key=rank.__getitem__)) in todo)
                if gain > best_gain:
                    best, best_gain = v, gain
            row[f] = best
        row = {f: row[f] for f in NAMES}
        todo -= covered(row)
        rows.append(row)
    return rows


def full_matrix() -> list[dict]:
    """The bench's rows: all 84 valid assignments of the issue's five keys (2 x 2 x 7 x 3),
    each twice: once the target's offers decide every negotiated key and the initiator
    declares the next MaxRecvDataSegmentLength, once the other way round."""
    rows = []
    mr = VALUES[MRDSL]
    for vals in itertools.product(*VALUES.values()):
        a = dict(zip(KEYS, vals))
        if not _partial_ok(a):
            continue
        other = mr[(mr.index(a[MRDSL]) + 1) % len(mr)]
        for by in SIDES:
            row = {k: a[k] for k in NEGOTIATED}
            row[f"{MRDSL}.{by}"] = a[MRDSL]
            row[f"{MRDSL}.{SIDES[1 - SIDES.index(by)]}"] = other
            row.update({f"{k}.by": by for k in NEGOTIATED})
            rows.append({f: row[f] for f in NAMES})
    return rows


def _losing(key: str, value, side_values: dict):
    """The other side's offer for `key`: one that loses to `value` under the key's rule
    and keeps that side's FirstBurstLength <= MaxBurstLength."""
    if key == "InitialR2T":          # OR: a No loses to a Yes; a negotiated No needs both
        return "No"
    if key == "ImmediateData":       # AND: a Yes loses to a No; a negotiated Yes needs both
        return "Yes"
    # MIN: the largest value not below `value` that keeps the side valid
    for v in sorted(VALUES[key], reverse=True):
        if v < value:
            break
        trial = dict(side_values, **{key: v})
        if _partial_ok(trial):
            return v
    return value


def sides(row: dict) -> dict:
    """{"target": {key: value}, "initiator": {key: value}}: what each side offers or declares."""
    out = {side: {} for side in SIDES}
    # MaxBurstLength before FirstBurstLength, so a losing FirstBurstLength can respect it.
    for key in ("InitialR2T", "ImmediateData", "MaxBurstLength", "FirstBurstLength"):
        by = row[f"{key}.by"]
        other = SIDES[1 - SIDES.index(by)]
        out[by][key] = row[key]
        out[other][key] = _losing(key, row[key], out[other])
    for side in SIDES:
        out[side][MRDSL] = row[f"{MRDSL}.{side}"]
    return {side: {k: out[side][k] for k in KEYS} for side in SIDES}


def expected(row: dict) -> dict:
    """What RFC 7143 §13 says the session runs with, by the initiator's sysfs names,
    computed from the two sides' offers (not from the row, so `sides` is checked too).

    InitialR2T: OR (§13.10); ImmediateData: AND (§13.11); FirstBurstLength and
    MaxBurstLength: the minimum (§13.13, §13.14); MaxRecvDataSegmentLength is declarative
    (§13.12): the initiator receives what it declared and sends at most what the target
    declared."""
    s = sides(row)
    t, i = s["target"], s["initiator"]
    return {
        "initial_r2t": "Yes" if "Yes" in (t["InitialR2T"], i["InitialR2T"]) else "No",
        "immediate_data": "Yes" if t["ImmediateData"] == i["ImmediateData"] == "Yes" else "No",
        "first_burst_len": min(t["FirstBurstLength"], i["FirstBurstLength"]),
        "max_burst_len": min(t["MaxBurstLength"], i["MaxBurstLength"]),
        "max_recv_dlength": i[MRDSL],
        "max_xmit_dlength": t[MRDSL],
    }


def label(row: dict) -> str:
    s = sides(row)
    short = {"InitialR2T": "R2T", "ImmediateData": "Imm", "FirstBurstLength": "FB",
             "MaxBurstLength": "MB", MRDSL: "MRDSL"}
    return " ".join(f"{short[k]}={s['target'][k]}/{s['initiator'][k]}" for k in KEYS)


# -- the data each row writes ------------------------------------------------------------

TOTAL = 8 << 20
BLOCKS = tuple(4096 << n for n in range(9))          # 4 KiB ... 1 MiB


def extents(total: int = TOTAL) -> list[tuple[int, int]]:
    """(offset, length) of each write: the block sizes in a fixed shuffled cycle, back to back."""
    rng = random.Random(14)
    out, off = [], 0
    while off < total:
        sizes = list(BLOCKS)
        rng.shuffle(sizes)
        for size in sizes:
            size = min(size, total - off)
            if size <= 0:
                break
            out.append((off, size))
            off += size
    return out


def pattern(seed: int, offset: int, length: int) -> bytes:
    """Bytes unique to the row (`seed`) and the extent: a stale block from another row fails."""
    head = hashlib.sha256(f"{seed}:{offset}".encode()).digest()
    return (head * (length // len(head) + 1))[:length]

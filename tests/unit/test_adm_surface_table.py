"""docs/iscsiadm-surface.md, the table of iscsiadm 2.1.8's modes and options, is complete
and true to the tree: every mode and long option has a row, every row a known status, and
every test a row names exists (a row without a test must say it is not done)."""

from __future__ import annotations

import re
from pathlib import Path

from iscsikit.cli.adm.main import MODES
from iscsikit.cli.adm.options import LONG_OPTIONS

REPO = Path(__file__).resolve().parents[2]
TABLE = REPO / "docs" / "iscsiadm-surface.md"
STATUSES = ("real", "refused", "differs", "not done")


def rows():
    out = []
    for line in TABLE.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 3 and cells[1] not in ("status", "---"):
            out.append(cells)
    return out


def test_every_mode_and_long_option_has_a_row():
    text = "\n".join(r[0] for r in rows())
    for mode in MODES:
        assert f"-m {mode}" in text, f"no row for -m {mode}"
    for name, _, _ in LONG_OPTIONS:
        assert re.search(rf"`--{re.escape(name)}`", text), f"no row for --{name}"


def test_every_row_has_a_status_and_a_test_that_exists():
    assert len(rows()) > 40
    for what, status, test in rows():
        assert status.startswith(STATUSES), f"{what}: unknown status {status!r}"
        if test == "—":
            assert status.startswith("not done"), f"{what}: a done row needs a test"
            continue
        path, _, name = test.partition("::")
        source = (REPO / path).read_text()
        assert re.search(rf"^def {re.escape(name)}\(", source, re.M), f"{what}: {test} does not exist"


def test_every_stored_key_named_is_a_record_key():
    """The "Stored keys" rows name keys as the record spells them (records.py), so a row cannot
    claim a key that does not exist (there is no node.session.auth.auth_timeout, say)."""
    from iscsikit.initiator import records
    known = set(records.FIELD_BY_KEY) | {f.key for fs in records.DISCOVERY_FIELDS.values() for f in fs}
    text = TABLE.read_text()
    section = text[text.index("## Stored keys"):]
    named = re.findall(r"`((?:node|discovery)\.[^`*]+)`", section)
    assert len(named) >= 8
    for key in named:
        assert key in known, f"{key} is not a record key"

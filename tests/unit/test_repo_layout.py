"""Repository rules that break CI in confusing ways when forgotten."""

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent


def test_test_module_basenames_are_unique():
    # pytest imports test modules by basename (rootdir-relative packages are not used here)
    names = Counter(p.name for p in TESTS.rglob("test_*.py"))
    assert [n for n, c in names.items() if c > 1] == []


def test_readme_holds_the_ci_test_command():
    ci = (TESTS.parent / ".ci" / "run").read_text()
    command = ci.split("TEST_COMMAND='", 1)[1].split("'", 1)[0]
    assert command in (TESTS.parent / "README.md").read_text().splitlines()

"""Shared pytest set-up: tests under tests/vm/ are marked `vm` by where they live."""

from pathlib import Path

import pytest

VM_DIR = Path(__file__).parent / "vm"


def pytest_collection_modifyitems(config, items):
    for item in items:
        if VM_DIR in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.vm)

"""Interop fixtures: a private tgtd per test module (tests/interop/tgtd_harness.py)."""

from __future__ import annotations

import os

import pytest

import tgtd_harness


@pytest.fixture(scope="module")
def tgtd(tmp_path_factory):
    if not tgtd_harness.available():
        message = "tgtd/tgtadm not installed (Debian package tgt)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + ": CI must run the interop tests")
        pytest.skip(message)
    daemon = tgtd_harness.Tgtd(tmp_path_factory.mktemp("tgtd"))
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()

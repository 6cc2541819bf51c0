"""The part every bench shares: one guest boot, the lab's modules, one probe's JSON.

A bench script (bench/bench_*.py, run as `.venv/bin/python bench/bench_X.py`) calls
`run("X_probe.py", env)`; the probe (bench/probes/) runs inside the guest with the
host's tree and interpreter and prints one JSON document. A probe that fails has the
end of its stderr printed and gives None, which the bench turns into exit status 1.
A bench that drives the guest from the host, command by command, takes the same
boot from `guest()`.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from iscsikit.lab.errors import GuestCommandError
from iscsikit.lab.guest import Guest
from iscsikit.lab.story import LAB_MODULES

PROBES = Path(__file__).resolve().parent / "probes"


@contextlib.contextmanager
def guest(memory_mb: int = 2048, modules: tuple[str, ...] = LAB_MODULES):
    """A booted guest with `modules` loaded (the lab's by default)."""
    with Guest(memory_mb=memory_mb) as g:
        g.modprobe(*modules)
        yield g


def run(probe: str, env: dict[str, str] | None = None, *, memory_mb: int = 2048,
        timeout: float = 1800, modules: tuple[str, ...] = LAB_MODULES) -> dict | None:
    with guest(memory_mb, modules) as g:
        try:
            return g.run_probe(PROBES / probe, timeout=timeout, env=env or {})
        except GuestCommandError as e:
            print(e.result.err[-3000:], file=sys.stderr)
            return None

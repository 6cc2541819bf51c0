"""Build debian/'s packages from a copy of this checkout (tests/unit/test_debian_packaging.py
checks them, tests/vm/test_debian_install.py installs them in the guest)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Debian's tools run on Debian's python3, whatever interpreter runs the tests
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def tree_files() -> list[str]:
    """The checkout's files: tracked, and untracked but not ignored (a unit being added)."""
    out = subprocess.run(["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard", "-z"],
                         capture_output=True, check=True).stdout
    return [p for p in out.decode().split("\0") if p and (REPO / p).is_file()]


def build(base: Path) -> dict[str, Path]:
    """dpkg-buildpackage -us -uc -b in base/src; {package name: .deb} (debug symbols left out)."""
    src = base / "src"
    for rel in tree_files():
        dest = src / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes((REPO / rel).read_bytes())
        dest.chmod((REPO / rel).stat().st_mode & 0o777)
    proc = subprocess.run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=src, env={**os.environ, "PATH": SYSTEM_PATH},
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise AssertionError("dpkg-buildpackage failed:\n" + proc.stdout[-4000:] + proc.stderr[-4000:])
    debs = {}
    for deb in base.glob("*.deb"):
        name = deb.name.split("_")[0]
        if not name.endswith("-dbgsym"):
            debs[name] = deb
    return debs

"""Repository rules that break CI in confusing ways when forgotten."""

from __future__ import annotations

import re
import subprocess
import tomllib
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


# --- no path of one machine ------------------------------------------------
# A test that names a venv's bin/tool or a checkout's tests/data by absolute path passes on
# the machine it was written on and nowhere else (issue 12: CI was green there,
# a fresh clone failed 8 tests).  Paths are derived from __file__ or
# sys.executable instead.  Absolute paths under the system prefixes are fine:
# they are the same on every Debian machine (the Vagrantfile's /opt venv is
# made by the Vagrantfile itself).
REPO = TESTS.parent
SYSTEM_PREFIXES = ("usr", "sys", "etc", "tmp", "run", "dev", "proc", "lib", "lib64",
                   "bin", "sbin", "var", "opt", "boot")
# Components that only a Python installation or a virtual environment has.
VENV_PARTS = {"venv", ".venv", "virtualenv", ".virtualenvs", ".pyenv", "site-packages",
              "dist-packages", "pyvenv.cfg", "conda", ".conda", "miniconda3", "anaconda3"}
# Roots that hold people's files: nothing under them is the same on two machines.
HOME_ROOTS = {"home", "root", "Users", "work"}
# Absolute paths a file rightly names although they look foreign: .gitignore's
# patterns are relative to the repository, and the Vagrantfile's VMs see this
# checkout at /vagrant, the synced folder it declares itself.
OWN_ROOTS = {".gitignore": {"*"}, "Vagrantfile": {"vagrant"}}
ABSOLUTE = re.compile(r"(?<![\w.~$}\-/:%<])/[A-Za-z_.][\w.+\-]*(?:/[\w.+\-]+)*")


def tracked_files() -> list[str]:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True,
                             check=True, timeout=30).stdout
        return [p for p in out.decode().split("\0") if p]
    except (OSError, subprocess.CalledProcessError):
        # not a git checkout (an sdist, say): every file but the ignored trees
        skip = {".git", ".venv", "build", "dist"}
        return [str(p.relative_to(REPO)) for p in REPO.rglob("*")
                if p.is_file() and not skip & set(p.relative_to(REPO).parts)
                and "__pycache__" not in p.parts and ".egg-info" not in str(p)]


def console_scripts() -> set[str]:
    return set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"])


def foreign_path(path: str, tracked: set[str], scripts: set[str], own=frozenset()) -> str | None:
    """Why `path` names a place outside this checkout that only one machine has, or None."""
    parts = path.strip("/").split("/")
    if parts[0] in SYSTEM_PREFIXES or parts[0] in own or "*" in own:
        return None
    if VENV_PARTS & set(parts):
        return "a Python installation or virtual environment"
    for i, p in enumerate(parts[:-1]):
        if p == "bin" and (re.fullmatch(r"python[\d.]*|pip[\d.]*|pytest", parts[i + 1])
                           or parts[i + 1] in scripts):
            return "a virtual environment's bin directory"
    if parts[0] in HOME_ROOTS and len(parts) > 1:
        return f"a folder under /{parts[0]}"
    for i in range(1, len(parts) - 1):
        if "/".join(parts[i:]) in tracked:
            return "this repository at the path of one checkout"
    return None


def machine_paths(files: list[str]) -> list[str]:
    tracked = set(files)
    tracked |= {str(Path(f).parent) for f in files}       # directories, too
    scripts = console_scripts()
    found = []
    for name in files:
        try:
            text = (REPO / name).read_text()
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue
        for n, line in enumerate(text.splitlines(), 1):
            for m in ABSOLUTE.finditer(line):
                why = foreign_path(m.group(), tracked, scripts, OWN_ROOTS.get(name, frozenset()))
                if why:
                    found.append(f"{name}:{n}: {m.group()} ({why})")
    return found


def test_no_tracked_file_names_a_path_of_one_machine():
    assert machine_paths(tracked_files()) == []


def test_the_path_scan_finds_what_it_is_for():
    # the scan itself (each example is written "/" "rest" so that the scan of this file skips it), on the shapes issue 12 found and on what must stay allowed
    tracked = {"tests/data/target/ietd.conf", "tests/data/target", "tests/data", "tests"}
    scripts = {"iscsikit-target"}
    assert foreign_path("/" "work/venv/bin/iscsikit-target", tracked, scripts)
    assert foreign_path("/" "srv/ci/checkout/tests/data/target/ietd.conf", tracked, scripts)
    assert foreign_path("/" "root/.pyenv/versions/3.11.7/bin/python3", tracked, scripts)
    assert foreign_path("/" "builds/x/.venv/bin/pytest", tracked, scripts)
    assert foreign_path("/" "home/dev/iscsikit", tracked, scripts)
    for ok in ("/usr/local/bin/iscsikit-target", "/tmp/ik/saveconfig.json", "/etc/iscsi/nodes",
               "/opt/iscsikit/bin/pip", "/backstores/fileio", "/iscsi", "/root", "/srv/a.img"):
        assert foreign_path(ok, tracked, scripts) is None, ok

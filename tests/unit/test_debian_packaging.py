"""debian/: the packages build with Debian's own tools, lintian finds no error, and every
console script, unit, udev rule, D-Bus policy and kmod/ source of the tree lands in a package.

The tree is the list: what another change adds to pyproject's [project.scripts], systemd/,
udev/ or kmod/ must show up in the built .debs, or these tests fail. The packages are
built once (about 15 s) from a copy of the checkout (tracked and untracked, not ignored
files), so the tree is never touched. tests/vm/test_debian_install.py installs them in
the guest, under systemd as PID 1.
"""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from debian_build import REPO, SYSTEM_PATH, build, tree_files

UNITDIR = "lib/systemd/system"
UDEVDIR = "lib/udev/rules.d"
DBUSDIR = "usr/share/dbus-1/system.d"
PACKAGES = ("python3-iscsikit", "iscsikit", "iscsikit-iscsiadm", "iscsikit-lio-dkms")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    base = tmp_path_factory.mktemp("deb")
    debs = {}
    for name, deb in build(base).items():
        root = base / "x" / name
        root.parent.mkdir(exist_ok=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        fields = subprocess.run(["dpkg-deb", "-f", str(deb)], capture_output=True, text=True, check=True).stdout
        debs[name] = {"deb": deb, "root": root, "control": fields}
    return {"base": base, "debs": debs, "env": {**os.environ, "PATH": SYSTEM_PATH}}


def shipped(built, pkg: str) -> set[str]:
    root = built["debs"][pkg]["root"]
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def test_all_packages_are_built(built):
    assert set(PACKAGES) <= set(built["debs"])


def test_lintian_finds_no_error(built):
    changes = next(built["base"].glob("*.changes"))
    proc = subprocess.run(["lintian", "--tag-display-limit", "0", str(changes)], env=built["env"],
                          capture_output=True, text=True, timeout=600)
    errors = [l for l in proc.stdout.splitlines() if l.startswith("E:")]
    assert not errors, "\n".join(errors)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_console_script_is_in_usr_bin(built):
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    files = shipped(built, "iscsikit")
    for name in scripts:
        if name == "iscsiadm":
            continue  # the C forwarder's name: iscsikit-iscsiadm, below
        assert f"usr/bin/{name}" in files, name
        data = (built["debs"]["iscsikit"]["root"] / "usr/bin" / name).read_bytes()
        if name == "iscsikit-target":
            # the C forwarder to iscsikit-targetd, whose fallback is the packaged Python CLI
            assert data[:4] == b"\x7fELF" and b"/usr/bin/iscsikit-target-local\0" in data, name
            continue
        head = data.decode().splitlines()[0]
        assert head == "#!/usr/bin/python3", (name, head)
    # no console script outside pyproject's list, and none shadows the forwarder
    assert {f[len("usr/bin/"):] for f in files if f.startswith("usr/bin/")} == set(scripts) - {"iscsiadm"}


def test_iscsiadm_is_the_c_forwarder_at_both_fixed_paths(built):
    root = built["debs"]["iscsikit-iscsiadm"]["root"]
    binary = root / "sbin/iscsiadm"
    assert binary.read_bytes()[:4] == b"\x7fELF"
    # run as /sbin/iscsiadm (= /usr/sbin), its fallback is still the Python CLI in /usr/bin
    assert b"/usr/bin/iscsikit-adm\0" in binary.read_bytes()
    # /proc/self/exe of either name is /usr/sbin/iscsiadm (/sbin is /usr/sbin on Debian 12),
    # and the forwarder's fallback is iscsikit-adm in the folder /usr/bin/iscsiadm links from
    assert os.readlink(root / "usr/bin/iscsiadm") == "/sbin/iscsiadm"
    fields = built["debs"]["iscsikit-iscsiadm"]["control"]
    assert re.search(r"^Conflicts: .*\bopen-iscsi\b", fields, re.M)
    assert re.search(r"^Replaces: .*\bopen-iscsi\b", fields, re.M)


def test_fallback_finds_iscsikit_adm():
    # the forwarder execs "iscsikit-adm" next to the file /proc/self/exe names
    text = (REPO / "userspace/iscsiadm-forward/iscsiadm.c").read_text()
    assert '"/proc/self/exe"' in text and '"%s/" FALLBACK' in text and '#define FALLBACK "iscsikit-adm"' in text


def test_every_unit_udev_rule_and_bus_policy_is_packaged_unchanged(built):
    files = shipped(built, "iscsikit")
    root = built["debs"]["iscsikit"]["root"]
    wanted = {}
    for p in (REPO / "systemd").iterdir():
        if p.is_file():
            wanted[f"{UNITDIR}/{p.name}"] = p
    for p in (REPO / "udev").glob("*.rules"):
        wanted[f"{UDEVDIR}/{p.name}"] = p
    for p in (REPO / "systemd" / "dbus").glob("*.conf"):
        wanted[f"{DBUSDIR}/{p.name}"] = p
    assert len(wanted) >= 9
    for rel, src in wanted.items():
        assert rel in files, rel
        assert (root / rel).read_bytes() == src.read_bytes(), rel


def test_unit_commands_are_packaged(built):
    everything = set().union(*(shipped(built, p) for p in PACKAGES))
    root = built["debs"]["iscsikit"]["root"] / UNITDIR
    for unit in root.iterdir():
        for line in unit.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.startswith("Exec") and value:
                binary = value.lstrip("-@:+!").split()[0]
                assert not binary.startswith("/usr/local/"), (unit.name, binary)
                if binary.startswith("/usr/bin/") and "iscsikit" in binary:
                    assert binary[1:] in everything, (unit.name, binary)


def test_every_python_module_is_packaged(built):
    files = shipped(built, "python3-iscsikit")
    pkg = REPO / "userspace" / "iscsikit"
    for py in pkg.rglob("*.py"):
        if "__pycache__" in py.parts:
            continue
        assert f"usr/lib/python3/dist-packages/iscsikit/{py.relative_to(pkg)}" in files, py


def test_python_dependencies_are_debian_packages(built):
    fields = built["debs"]["python3-iscsikit"]["control"]
    depends = re.search(r"^Depends: (.*)$", fields, re.M).group(1)
    for name in ("python3-rtslib-fb", "python3-configshell-fb", "python3-crc32c"):
        assert name in depends, depends


def test_dkms_package_holds_kmod_sources_and_loads_at_boot(built):
    conf = (REPO / "kmod" / "dkms.conf").read_text()
    name = re.search(r'^PACKAGE_NAME="(.*)"', conf, re.M).group(1)
    version = re.search(r'^PACKAGE_VERSION="(.*)"', conf, re.M).group(1)
    modules = re.findall(r'^BUILT_MODULE_NAME\[\d+\]="(.*)"', conf, re.M)
    files = shipped(built, "iscsikit-lio-dkms")
    root = built["debs"]["iscsikit-lio-dkms"]["root"]
    tracked = [p for p in tree_files() if p.startswith("kmod/")]
    assert "kmod/iscsikit_lio.c" in tracked
    for rel in tracked:
        assert f"usr/src/{name}-{version}/{Path(rel).name}" in files, rel
    # nothing but the tracked sources: no build outputs of a local make
    srcfiles = {f for f in files if f.startswith("usr/src/")}
    assert srcfiles == {f"usr/src/{name}-{version}/{Path(r).name}" for r in tracked}
    load = (root / f"usr/lib/modules-load.d/{name}.conf").read_text().split()
    assert set(modules) <= set(load)
    assert "dkms" in built["debs"]["iscsikit-lio-dkms"]["control"]

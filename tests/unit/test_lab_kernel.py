import subprocess

import pytest

from iscsikit.lab import kernel
from iscsikit.lab.errors import LabError


def _fake_root(root, ver="6.1.0-99-amd64", depmod=True):
    (root / "boot").mkdir(parents=True)
    (root / "boot" / f"vmlinuz-{ver}").write_bytes(b"not really a kernel")
    mods = root / "lib" / "modules" / ver
    (mods / "kernel" / "drivers" / "scsi").mkdir(parents=True)
    (mods / "kernel" / "drivers" / "scsi" / "iscsi_tcp.ko").write_bytes(b"")
    if depmod:
        (mods / "modules.dep").write_text("")
    return ver


def test_path_to_unpacked_folder(tmp_path):
    ver = _fake_root(tmp_path)
    k = kernel.resolve(str(tmp_path))
    assert (k.version, k.origin) == (ver, "path")
    assert k.root == tmp_path and k.modules == tmp_path / "lib" / "modules" / ver


def test_path_without_module_index_is_refused(tmp_path):
    _fake_root(tmp_path, depmod=False)
    with pytest.raises(LabError, match="depmod"):
        kernel.resolve(str(tmp_path))


def test_path_that_is_nothing(tmp_path):
    with pytest.raises(LabError) as e:
        kernel.resolve(str(tmp_path / "nope"))
    assert "not a linux-image .deb" in str(e.value)


def test_deb_is_unpacked_into_the_cache_once(tmp_path):
    pkg = tmp_path / "pkg"
    ver = _fake_root(pkg, depmod=False)
    (pkg / "DEBIAN").mkdir()
    (pkg / "DEBIAN" / "control").write_text(
        "Package: linux-image-test\nVersion: 1\nArchitecture: amd64\nMaintainer: t <t@t>\nDescription: t\n")
    deb = tmp_path / "linux-image-test.deb"
    subprocess.run(["dpkg-deb", "-b", "-Zgzip", str(pkg), str(deb)], check=True, capture_output=True)
    k = kernel.resolve(str(deb), cache_dir=tmp_path / "cache")
    assert k.version == ver and (k.modules / "modules.dep").is_file()   # depmod ran
    entries = list((tmp_path / "cache" / "kernels").iterdir())
    assert len(entries) == 1 and not entries[0].name.startswith(".tmp-")
    stamp = (k.modules / "modules.dep").stat().st_mtime_ns
    again = kernel.resolve(str(deb), cache_dir=tmp_path / "cache")
    assert again == k and (k.modules / "modules.dep").stat().st_mtime_ns == stamp


def test_missing_apt_names_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))   # no apt-cache anywhere
    with pytest.raises(LabError) as e:
        kernel.fetch_debian(cache_dir=tmp_path)
    assert "apt-cache not found" in str(e.value) and "--kernel PATH" in str(e.value)


def test_host_without_modules_falls_back(monkeypatch):
    monkeypatch.setattr(kernel, "host_kernel", lambda: None)
    with pytest.raises(LabError, match="--kernel debian"):
        kernel.resolve("host")

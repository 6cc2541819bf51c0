"""Which kernel the guest boots, and fetching Debian's into the cache.

`--kernel host|debian|PATH`:
- host: the running kernel, when /boot has its image and /lib/modules has iscsi_tcp;
- debian: the image `linux-image-amd64` depends on today (Debian 12: 6.1), fetched
  with `apt-get download` and unpacked into the cache, never installed;
- PATH: a `linux-image-*.deb`, or a folder holding `boot/vmlinuz-VER` and `lib/modules/VER`.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from . import cache
from .errors import LabError

DEBIAN_META_PACKAGE = "linux-image-amd64"
# The extracted image is about 400 MiB; the .deb about 70 MiB beside it while unpacking.
KERNEL_SPACE_MB = 600


@dataclass(frozen=True)
class Kernel:
    version: str          # e.g. 6.1.0-56-amd64
    image: Path           # the bzImage QEMU boots
    modules: Path         # the lib/modules/<version> folder the guest mounts as its own
    origin: str           # host | debian | path

    @property
    def root(self) -> Path:
        """The folder with lib/modules/<version> in it, as depmod/modprobe -d want it."""
        return self.modules.parent.parent.parent


def _run(argv: list[str], what: str, fix: str, cwd: Path | None = None) -> str:
    if shutil.which(argv[0]) is None:
        raise LabError(f"{argv[0]} not found ({what})", fix)
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise LabError(f"{what} failed: {' '.join(argv)}: {err}", fix)
    return proc.stdout


def _has_iscsi_tcp(modules: Path) -> bool:
    drv = modules / "kernel" / "drivers" / "scsi"
    return any(drv.glob("iscsi_tcp.ko*"))


def host_kernel() -> Kernel | None:
    """The running kernel, if it can serve as the guest's (image readable, iscsi_tcp built)."""
    ver = platform.release()
    image = Path("/boot") / f"vmlinuz-{ver}"
    modules = Path("/lib/modules") / ver
    if image.is_file() and os.access(image, os.R_OK) and _has_iscsi_tcp(modules) and (modules / "modules.dep").is_file():
        return Kernel(ver, image, modules, "host")
    return None


def debian_package() -> str:
    """Resolve the current image package through the meta package (so a point release moves with Debian)."""
    out = _run(
        ["apt-cache", "depends", DEBIAN_META_PACKAGE],
        "resolving Debian's kernel package",
        "run on Debian with apt (and `apt-get update` once), or pass --kernel PATH",
    )
    for line in out.splitlines():
        m = re.match(r"\s*Depends:\s*(linux-image-\S+)", line)
        if m:
            return m.group(1)
    raise LabError(
        f"apt-cache knows no image behind {DEBIAN_META_PACKAGE}",
        "run `apt-get update` once, or pass --kernel PATH",
    )


def _unpack_deb(deb: Path, dest: Path) -> str:
    """Unpack a linux-image .deb into dest (boot/ and lib/modules/ only); return its version."""
    raw = dest / "raw"
    _run(["dpkg-deb", "-x", str(deb), str(raw)], "unpacking the kernel package", "install dpkg (Debian's dpkg package)")
    mods = raw / "lib" / "modules"
    if not mods.is_dir():
        # merged-/usr packagings put it under usr/
        mods = raw / "usr" / "lib" / "modules"
    versions = sorted(p.name for p in mods.iterdir()) if mods.is_dir() else []
    if len(versions) != 1 or not (raw / "boot" / f"vmlinuz-{versions[0]}").is_file():
        raise LabError(f"{deb} does not look like a linux-image package (no boot/vmlinuz-VER with lib/modules/VER)",
                       "pass a linux-image-*.deb")
    ver = versions[0]
    (dest / "boot").mkdir()
    os.rename(raw / "boot" / f"vmlinuz-{ver}", dest / "boot" / f"vmlinuz-{ver}")
    (dest / "lib" / "modules").mkdir(parents=True)
    os.rename(mods / ver, dest / "lib" / "modules" / ver)
    shutil.rmtree(raw)
    _run(["depmod", "-b", str(dest), ver], "indexing the guest's modules", "install kmod (Debian's kmod package)")
    return ver


def _cached(folder: Path) -> Kernel | None:
    images = sorted((folder / "boot").glob("vmlinuz-*")) if folder.is_dir() else []
    if len(images) != 1:
        return None
    ver = images[0].name.removeprefix("vmlinuz-")
    modules = folder / "lib" / "modules" / ver
    if not (modules / "modules.dep").is_file():
        return None
    return Kernel(ver, images[0], modules, "debian")


def fetch_debian(cache_dir: Path | None = None) -> Kernel:
    kernels = (cache_dir or cache.cache_root()) / "kernels"
    package = debian_package()
    final = kernels / package.removeprefix("linux-image-")
    found = _cached(final)
    if found:
        return found
    cache.sweep_stale(kernels)
    cache.ensure_space(kernels, KERNEL_SPACE_MB, f"Debian's kernel ({package})")
    with cache.building(final, is_dir=True) as tmp:
        dl = tmp / "dl"
        dl.mkdir()
        # apt drops privileges to _apt for downloads and warns when it cannot; the file lands anyway.
        _run(["apt-get", "download", "-q", package], f"downloading {package}",
             "check that apt reaches Debian's mirror (`apt-get update`), or pass --kernel PATH", cwd=dl)
        debs = list(dl.glob("*.deb"))
        if len(debs) != 1:
            raise LabError(f"apt-get download {package} left no .deb", "retry; check `apt-get download` by hand")
        _unpack_deb(debs[0], tmp)
        shutil.rmtree(dl)
    found = _cached(final)
    assert found is not None
    return found


def from_path(path: Path, cache_dir: Path | None = None) -> Kernel:
    path = path.expanduser().resolve()
    if path.is_file() and path.suffix == ".deb":
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        final = (cache_dir or cache.cache_root()) / "kernels" / f"deb-{digest}"
        found = _cached(final)
        if not found:
            cache.ensure_space(final.parent, KERNEL_SPACE_MB, f"the kernel in {path.name}")
            with cache.building(final, is_dir=True) as tmp:
                _unpack_deb(path, tmp)
            found = _cached(final)
        assert found is not None
        return Kernel(found.version, found.image, found.modules, "path")
    found = _cached(path)
    if found:
        return Kernel(found.version, found.image, found.modules, "path")
    raise LabError(f"--kernel {path}: not a linux-image .deb, nor a folder with boot/vmlinuz-VER and an indexed lib/modules/VER",
                   "pass host, debian, a .deb, or such a folder (run `depmod -b FOLDER VER` first)")


def resolve(spec: str | None = None, cache_dir: Path | None = None) -> Kernel:
    """Turn `--kernel` into a bootable kernel; None means host when it can, else debian."""
    spec = spec or os.environ.get("ISCSIKIT_LAB_KERNEL") or "auto"
    if spec in ("auto", "host"):
        found = host_kernel()
        if found:
            return found
        if spec == "host":
            raise LabError(f"the host kernel {platform.release()} cannot boot the lab (no readable /boot image or no iscsi_tcp module)",
                           "use --kernel debian")
        return fetch_debian(cache_dir)
    if spec == "debian":
        return fetch_debian(cache_dir)
    return from_path(Path(spec), cache_dir)


def version(spec: str | None = None) -> str:
    """The version `resolve(spec)` boots, without fetching anything (.ci/setup builds kmod/
    against its headers): the host's release, Debian's current image, or a cached/unpacked one."""
    spec = spec or os.environ.get("ISCSIKIT_LAB_KERNEL") or "auto"
    if spec in ("auto", "host"):
        found = host_kernel()
        if found:
            return found.version
        if spec == "host":
            raise LabError(f"the host kernel {platform.release()} cannot boot the lab", "use --kernel debian")
    if spec in ("auto", "debian"):
        return debian_package().removeprefix("linux-image-")
    return from_path(Path(spec)).version


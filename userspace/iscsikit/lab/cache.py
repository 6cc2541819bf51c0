"""The lab's cache folder and the rule that nothing half-written is ever found in it.

Every entry is built under a temporary name inside the cache folder (same
file system) and renamed into place only when complete, so an interrupted
build leaves at worst a `.tmp-*` folder that the next build removes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from .errors import LabError

TMP_PREFIX = ".tmp-"


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "iscsikit"


def ensure_space(folder: Path, need_mb: int, what: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    free_mb = shutil.disk_usage(folder).free // (1 << 20)
    if free_mb < need_mb:
        raise LabError(
            f"not enough space in {folder} for {what} ({free_mb} MiB free, {need_mb} MiB needed)",
            "free some space there or point XDG_CACHE_HOME at a larger file system",
        )


def sweep_stale(folder: Path) -> None:
    """Remove the temporaries of builds that were interrupted (not ours: we hold none yet)."""
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if entry.name.startswith(TMP_PREFIX):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()


@contextlib.contextmanager
def building(final: Path, *, is_dir: bool):
    """Yield a temporary path next to `final`; rename it to `final` if the body succeeds."""
    final.parent.mkdir(parents=True, exist_ok=True)
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=final.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=TMP_PREFIX, dir=final.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if not is_dir:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        try:
            os.rename(tmp, final)
        except OSError:
            # A concurrent build of the same entry finished first; its copy is as good as ours.
            if not final.exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink()
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        raise

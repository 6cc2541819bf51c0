"""Run in the lab guest beside `iscsikit-target ls /iscsi`: the kernel's own cost of reading what it draws.

`ls /iscsi` draws, per target: its TPGs; per TPG its enable flag, authentication
and generate_node_acls (the TPG's summary); per LUN the storage object its link
names, that object's file or device and the LUN's ALUA group; per portal its
iser and offload flags; per ACL its tag and, per mapped LUN, the TPG LUN its
link names and write_protect (target/listing.py). This probe reads exactly that
with the fewest syscalls Python can make (os.open/os.read/os.close per file, one
scandir per directory, one readlink per link), builds nothing and prints
nothing: what any tool must at least wait for in this boot. Three ways:

- "paths": every file by its absolute path (the kernel walks ~10 configfs
  dentries per open);
- "dirfd": each target's files opened relative to an fd of its TPG directory
  (openat: the walk starts there);
- "threads2": "dirfd" with the targets split over 2 threads (the syscalls
  release the GIL; the guest has 2 vCPUs);
- "c": "paths" in C (target_ls_floor.c, compiled here when `cc` exists): the
  syscalls without an interpreter around them.

The portals' iser and cxgbit files are read only while their modules are
loaded, as target/configfs.py does (they can only say 0 otherwise).

    python bench/probes/target_ls_floor.py [--reps 2]     # after a restore of N targets
prints one JSON line: seconds per way (fastest of --reps), syscalls per way,
and the counts of what it read.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import threading
import time

ROOT = "/sys/kernel/config/target"
NOT_TARGETS = ("discovery_auth",)
HERE = os.path.dirname(os.path.abspath(__file__))
# a portal's iser / cxgbit file can say 1 only while its module is in the kernel (the rule
# target/configfs.py's portal_flags() applies; built-in modules aside, which the lab has not)
FLAGS = tuple(f for f, module in (("iser", "ib_isert"), ("cxgbit", "cxgbit")) if os.path.isdir(f"/sys/module/{module}"))


class Count:
    def __init__(self):
        self.files = self.dirs = self.links = 0

    @property
    def syscalls(self) -> int:
        # a file: open + read + close; a directory: open + getdents64 until empty (2) + close
        return 3 * self.files + 4 * self.dirs + self.links


def _read(path: str, c: Count, dir_fd=None) -> bytes:
    c.files += 1
    fd = os.open(path, os.O_RDONLY, dir_fd=dir_fd)
    try:
        return os.read(fd, 4096)
    finally:
        os.close(fd)


def _entries(path, c: Count, dirs_only: bool = False) -> list:
    c.dirs += 1
    with os.scandir(path) as it:      # the entries' types come from configfs's readdir
        return [e.name for e in it if not dirs_only or e.is_dir()]


def _link(absdir: str, rel: str, c: Count, dir_fd=None) -> str | None:
    """The one symlink of a LUN or mapped-LUN directory (its name is free: listed)."""
    for name in _entries(absdir, c):
        if name != "statistics" and not name.startswith(("alua_", "write_protect")):
            c.links += 1
            return os.readlink(f"{rel}/{name}", dir_fd=dir_fd)
    return None


def one_target(td: str, c: Count, dirfd: bool) -> None:
    for tp in _entries(td, c):
        if not tp.startswith("tpgt_"):
            continue
        base = f"{td}/{tp}"
        fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY) if dirfd else None
        at = (lambda rel: rel) if dirfd else (lambda rel: f"{base}/{rel}")
        try:
            for f in ("enable", "attrib/authentication", "attrib/generate_node_acls"):
                _read(at(f), c, fd)
            for lun in _entries(f"{base}/lun", c):
                target = _link(f"{base}/lun/{lun}", at(f"lun/{lun}"), c, fd)
                _read(at(f"lun/{lun}/alua_tg_pt_gp"), c, fd)
                if target:
                    # ../../../../../core/fileio_N/NAME -> the object's file (its udev_path)
                    so = "/".join(target.rstrip("/").split("/")[-2:])
                    _read(f"{ROOT}/core/{so}/udev_path", c)
            for np in _entries(f"{base}/np", c):
                for fname in FLAGS:
                    _read(at(f"np/{np}/{fname}"), c, fd)
            for acl in _entries(f"{base}/acls", c):
                _read(at(f"acls/{acl}/tag"), c, fd)
                for ml in _entries(f"{base}/acls/{acl}", c):
                    if ml.startswith("lun_"):
                        _link(f"{base}/acls/{acl}/{ml}", at(f"acls/{acl}/{ml}"), c, fd)
                        _read(at(f"acls/{acl}/{ml}/write_protect"), c, fd)
        finally:
            if fd is not None:
                os.close(fd)


def walk(way: str) -> tuple[float, Count]:
    t0 = time.monotonic()
    top = Count()
    targets = [f"{ROOT}/iscsi/{t}" for t in _entries(f"{ROOT}/iscsi", top, True) if t not in NOT_TARGETS]
    if way == "threads2":
        counts = [Count(), Count()]
        threads = [threading.Thread(target=lambda i=i: [one_target(td, counts[i], True)
                                                        for td in targets[i::2]]) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    else:
        counts = [Count()]
        for td in targets:
            one_target(td, counts[0], way == "dirfd")
    dt = time.monotonic() - t0
    total = Count()
    for c in [top, *counts]:
        total.files += c.files
        total.dirs += c.dirs
        total.links += c.links
    return dt, total


def c_floor(reps: int) -> dict | None:
    """The "paths" walk in C (target_ls_floor.c), when a compiler is there: no interpreter."""
    with tempfile.TemporaryDirectory() as tmp:
        exe = f"{tmp}/floor"
        made = subprocess.run(["cc", "-O2", "-o", exe, f"{HERE}/target_ls_floor.c"], capture_output=True)
        if made.returncode != 0:
            return None
        mask = ("iser" in FLAGS) + 2 * ("cxgbit" in FLAGS)
        runs = [json.loads(subprocess.run([exe, str(mask)], capture_output=True, text=True,
                                          check=True).stdout) for _ in range(reps)]
    return min(runs, key=lambda r: r["seconds"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()
    out: dict = {"targets": len([t for t in os.listdir(f"{ROOT}/iscsi") if t.startswith(("iqn.", "eui.", "naa."))])}
    for way in ("paths", "dirfd", "threads2"):
        runs = [walk(way) for _ in range(args.reps)]
        out[way] = round(min(dt for dt, _ in runs), 3)
        c = runs[0][1]
        out[f"{way}_syscalls"] = c.syscalls
    out.update(files=c.files, dirs=c.dirs, links=c.links)
    out["c"] = c_floor(args.reps)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

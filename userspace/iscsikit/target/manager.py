"""The target manager's API: every change is "make the tree look like this".

Each change, from a shell command or a whole saveconfig.json, goes the same
way: validate the desired Config, snapshot the running one, plan the
difference, check what can be checked outside configfs, apply, and roll back
on failure.  A lock serialises writers only while a change is under way, so
an idle shell blocks nobody (targetcli-fb #199).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Callable

from . import configfs, saveconfig
from .errors import TargetError
from .model import Config
from .plan import Step, plan

LOCK_FILE = "/run/lock/iscsikit-target.lock"


class Manager:
    def __init__(self, root: str = configfs.ROOT, save_file: str = saveconfig.DEFAULT_SAVE_FILE,
                 lock_file: str = LOCK_FILE):
        self.root = root
        self.save_file = save_file
        self.lock_file = lock_file

    @contextlib.contextmanager
    def locked(self):
        Path(self.lock_file).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def ensure_loaded(self) -> None:
        """configfs mounted and target_core_mod loaded (the CLI may be the first user)."""
        if os.path.isdir(self.root):
            return
        from rtslib.utils import modprobe, mount_configfs
        try:
            if not os.path.isdir("/sys/kernel/config/target") and not os.path.ismount("/sys/kernel/config"):
                modprobe("configfs")
                mount_configfs()
            modprobe("target_core_mod")
        except Exception as e:
            raise TargetError(f"LIO is not available: {e}") from None
        if not os.path.isdir(self.root):
            raise TargetError(f"LIO is not available: {self.root} does not exist")

    def state(self, attributes: bool = True) -> Config:
        self.ensure_loaded()
        return configfs.snapshot(self.root, attributes=attributes)

    def apply(self, desired: Config, current: Config | None = None, dry_run: bool = False) -> list[Step]:
        """Make the running tree equal `desired`; return the steps taken (none when equal)."""
        desired.check()
        partial = current is None
        if current is None:
            # Read only what the plan compares (configfs.snapshot's `wanted`).
            self.ensure_loaded()
            current = configfs.snapshot(self.root, wanted=desired)
        steps = plan(current, desired)
        if dry_run or not steps:
            return steps
        if partial:
            # A storage object that is remade (its file or size changed) was
            # read with only the attributes the file names; its undo needs all.
            for st in steps:
                if st.op == "so_delete":
                    st.obj.attributes = configfs.so_all_attributes(self.root, st.obj)
        # rtslib (and pyudev under it) costs seconds to import in the lab guest;
        # listings and no-op restores never need it.
        from .apply import Executor, preflight
        preflight(steps)
        Executor(current, self.root).run(steps)
        return steps

    def edit(self, change: Callable[[Config], object]) -> tuple[list[Step], object]:
        """Apply `change` to a copy of the running tree.

        The snapshot skips attribute files: an attribute the change sets is
        compared with the kernel by the executor, which writes only what differs.
        """
        with self.locked():
            current = self.state(attributes=False)
            desired = current.copy()
            result = change(desired)
            return self.apply(desired, current), result

    def restore(self, path: str | None = None, warnings: list | None = None,
                dry_run: bool = False) -> list[Step]:
        desired = saveconfig.load(path or self.save_file, warnings)
        with self.locked():
            return self.apply(desired, dry_run=dry_run)

    def clear(self) -> list[Step]:
        # Storage objects' attribute files are most of the snapshot's cost and
        # only serve a rollback: if a clear fails midway, the storage objects
        # it deleted come back with their file, size and serial but default
        # attributes.
        with self.locked():
            self.ensure_loaded()
            current = configfs.snapshot(self.root, attributes=True, so_attributes=False)
            return self.apply(Config(), current)

    def save(self, path: str | None = None) -> str:
        path = path or self.save_file
        saveconfig.save(self.state(), path)
        return path

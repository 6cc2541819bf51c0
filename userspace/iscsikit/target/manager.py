"""The target manager's API: every change is "make the tree look like this".

Each change, from a shell command or a whole saveconfig.json, goes the same
way: validate the desired Config, snapshot the running one, plan the
difference, check what can be checked outside configfs, apply, and roll back
on failure.  A lock serialises writers only while a change is under way, so
an idle shell blocks nobody (targetcli-fb #199).
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import os
from collections.abc import Callable

from . import alua, configfs, saveconfig
from .errors import NotFoundError, TargetError, ValidationError
from .model import Config
from .plan import Step, keep_unmade, plan

LOCK_FILE = "/run/lock/iscsikit-target.lock"


class Manager:
    def __init__(self, root: str = configfs.ROOT, save_file: str = saveconfig.DEFAULT_SAVE_FILE,
                 lock_file: str = LOCK_FILE, max_backup_files: int = saveconfig.MAX_BACKUP_FILES):
        self.root = root
        self.max_backup_files = max_backup_files
        self.save_file = save_file
        self.lock_file = lock_file

    @contextlib.contextmanager
    def locked(self):
        os.makedirs(os.path.dirname(self.lock_file), exist_ok=True)
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

    def apply(self, desired: Config, current: Config | None = None, dry_run: bool = False,
              warnings: list | None = None, partial: bool | None = None) -> list[Step]:
        """Make the running tree equal `desired`; return the steps taken (none when equal).

        `partial`: `current` was read without attribute files (a fresh snapshot
        here reads only what `desired` names); a storage object the plan remakes
        then has its attributes read whole first, for its undo.
        """
        if partial is None:
            partial = current is None
        if current is None:
            # Read only what the plan compares (configfs.snapshot's `wanted`).
            self.ensure_loaded()
            current = configfs.snapshot(self.root, wanted=desired)
        # Never delete what cannot be made again (plan.keep_unmade): the FC/SRP ... targets.
        for note in keep_unmade(current, desired):
            if warnings is not None:
                warnings.append(note)
        desired.check()
        steps = plan(current, desired)
        if dry_run or not steps:
            return steps
        if partial:
            for st in steps:
                if st.op == "so_delete":
                    st.obj.attributes = configfs.so_all_attributes(self.root, st.obj)
        # rtslib (and pyudev under it) costs seconds to import in the lab guest;
        # listings and no-op restores never need it.
        from .apply import Executor, preflight
        preflight(steps)
        Executor(current, self.root).run(steps)
        return steps

    def edit(self, change: Callable[[Config], object], targets: set | None = None,
             sos: set | None = None) -> tuple[list[Step], object]:
        """Apply `change` to a copy of the running tree.

        The snapshot skips attribute files: an attribute the change sets is
        compared with the kernel by the executor, which writes only what differs.
        targets / sos limit the snapshot to the iSCSI targets and storage objects
        the change may touch (configfs.snapshot): the plan then compares only
        those, so a change must not reach outside them (ops.py names each scope).
        """
        with self.locked():
            self.ensure_loaded()
            current = configfs.snapshot(self.root, attributes=False, targets=targets, sos=sos)
            desired = current.copy()
            result = change(desired)
            return self.apply(desired, current, partial=True), result

    def restore(self, path: str | None = None, warnings: list | None = None, dry_run: bool = False,
                clear_existing: bool = False, target: str | None = None,
                storage_object: str | None = None) -> list[Step]:
        """restoreconfig, with targetcli's options (rtslib RTSRoot.restore):

        - clear_existing=true, nothing selected: the running tree becomes the
          file (only what differs changes, so sessions on unchanged targets stay);
        - clear_existing=false (targetcli's default): a merge.  What the file has
          and the tree lacks is made; an object that already runs is left as it
          runs (rtslib refuses the whole restore there; we say which and go on);
          nothing is removed;
        - target=WWN / storage_object=NAME: only that target (of any fabric) and
          that storage object, as rtslib: a selected target's LUNs need their
          storage objects running (or selected too); with clear_existing=true the
          selected ones are replaced by the file's, and a storage object that is
          made again keeps the LUNs that export it.
        """
        warnings = warnings if warnings is not None else []
        desired = saveconfig.load(path or self.save_file, warnings)
        with self.locked():
            if clear_existing and not (target or storage_object):
                return self.apply(desired, dry_run=dry_run, warnings=warnings)
            self.ensure_loaded()
            current = configfs.snapshot(self.root, attributes=False)
            merged = select(current, desired, clear_existing, target, storage_object, warnings,
                            groups_of=lambda so: alua.groups(self.root, so))
            return self.apply(merged, current, dry_run=dry_run, warnings=warnings, partial=True)

    def clear(self, warnings: list | None = None) -> list[Step]:
        # Storage objects' attribute files are most of the snapshot's cost and
        # only serve a rollback: if a clear fails midway, the storage objects
        # it deleted come back with their file, size and serial but default
        # attributes.
        with self.locked():
            self.ensure_loaded()
            current = configfs.snapshot(self.root, attributes=True, so_attributes=False)
            return self.apply(Config(), current, warnings=warnings, partial=False)

    def save(self, path: str | None = None) -> str:
        """Write the running configuration; the manager's own save file keeps targetcli's backups."""
        path = path or self.save_file
        text = saveconfig.dumps(self.state())
        try:
            with open(path) as f:
                if f.read() == text:
                    return path         # unchanged: no write, no backup
        except (OSError, UnicodeDecodeError):
            pass
        if os.path.abspath(path) == os.path.abspath(self.save_file):
            saveconfig.backup(path, text, saveconfig.max_backup_files(path, self.max_backup_files))
        saveconfig.write_atomic(path, text)
        return path


def select(current: Config, file: Config, clear_existing: bool, target: str | None,
           storage_object: str | None, warnings: list, groups_of=None) -> Config:
    """The desired tree of a merge or selective restore (Manager.restore): the running
    tree with the file's objects put in.

    ALUA (`groups_of(so)`: a running object's groups, alua.groups): a storage object the
    file replaces gets the file's groups (plan.py compares them, and keeps a group a LUN
    outside the restore is in); a target put in whose LUN names a group its running
    storage object lacks gets that group made from the file's definition of the object
    (said in `warnings`; nothing else of the object changes), else nothing is changed and
    the restore fails naming the group. rtslib's restore writes the LUN's group and ignores
    a refusal: the LUN would sit in default_tg_pt_gp unsaid."""
    desired = current.copy()
    everything = not (target or storage_object)
    if target:
        want = target.strip().lower()
        found = {k: t for k, t in file.all_targets().items() if k[1] == want}
        if not found:
            raise NotFoundError(f"target {target} is not in the file")
    else:
        found = file.all_targets() if everything else {}
    if storage_object:
        sos = {k: so for k, so in file.storage_objects.items() if k[1] == storage_object}
        if not sos:
            raise NotFoundError(f"storage object {storage_object} is not in the file")
    else:
        sos = file.storage_objects if everything else {}
    running = desired.all_targets()
    read: dict[tuple, list] = {}

    def running_groups(key) -> list:
        """The running object's groups, read once; also put into `current` for the plan."""
        if key not in read:
            read[key] = groups_of(current.storage_objects[key]) if groups_of else []
            current.storage_objects[key].alua_tpgs = copy.deepcopy(read[key])
        return read[key]

    replaced = set()
    for key, so in sos.items():
        if key in desired.storage_objects and not clear_existing:
            warnings.append(f"storage object {so.path} exists; kept as it runs "
                            f"(clear_existing=true replaces it)")
            continue
        if key in current.storage_objects:
            running_groups(key)
        desired.storage_objects[key] = copy.deepcopy(so)
        replaced.add(key)
    for (F, wwn), t in found.items():
        if (F, wwn) in running and not clear_existing:
            warnings.append(f"{'' if F == 'iscsi' else F + ' '}target {wwn} exists; kept as it runs "
                            f"(clear_existing=true replaces it)")
            continue
        if F == "iscsi":
            desired.targets[wwn] = copy.deepcopy(t)
        else:
            desired.fabric_targets[(F, wwn)] = copy.deepcopy(t)
        for tpg in t.tpgs.values():
            for lun in tpg.luns.values():
                if lun.so_key not in desired.storage_objects:
                    raise NotFoundError(f"target {wwn} lun{lun.index} needs {lun.storage_object}, which is not "
                                        f"running: restore it too (storage_object={lun.so_key[1]})")
                gp = lun.alua_tg_pt_gp_name
                if not gp or gp == "default_tg_pt_gp" or lun.so_key in replaced \
                        or lun.so_key not in current.storage_objects:
                    continue
                _add_group(desired.storage_objects[lun.so_key], running_groups(lun.so_key), gp,
                           file.storage_objects.get(lun.so_key), f"target {wwn} tpg{tpg.tag} lun{lun.index}",
                           warnings)
    if everything and file.discovery.enable and (clear_existing or not current.discovery.enable):
        desired.discovery = copy.deepcopy(file.discovery)
    return desired


def _add_group(so, running: list, name: str, file_so, who: str, warnings: list) -> None:
    """Group `name` put into the desired `so` (kept as it runs but for that) from the file's
    definition of the object, for the LUN `who`; nothing when it runs already."""
    if not so.alua_tpgs:
        so.alua_tpgs = copy.deepcopy(running)
    if any(g.get("name") == name for g in so.alua_tpgs):
        return
    g = next((g for g in (file_so.alua_tpgs if file_so else []) if g.get("name") == name), None)
    if g is None:
        raise NotFoundError(f"{who} is in ALUA group {name}, which {so.path} does not have and the file "
                            f"does not define")
    taken = next((h["name"] for h in so.alua_tpgs if h.get("tg_pt_gp_id") == g.get("tg_pt_gp_id")), None)
    if taken:
        raise ValidationError(f"{who} is in ALUA group {name} (id {g.get('tg_pt_gp_id')}), but {so.path}'s "
                              f"group {taken} has that id")
    so.alua_tpgs.append(copy.deepcopy(g))
    warnings.append(f"{so.path}: ALUA group {name} made from the file (for {who})")

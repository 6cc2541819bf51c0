"""Carry out a plan against the kernel, and take it back if a step fails.

One handler per step kind (a table, as open-iscsi's mgmt_ipc_functions).
Each handler does its step and returns how to undo it; on the first failure
the undos run in reverse, so a restore that fails midway leaves the
previous configuration (a ramdisk that was deleted comes back empty: its
data lived only in the kernel).

Targets, TPGs, portals, ACLs and their attributes, parameters and CHAP are
made through rtslib's objects; storage objects, TPG LUNs and mapped LUNs
through configfs.Writer, where rtslib would scan; and every deletion is a
plain rmdir on the directory the plan names (its children went in earlier
steps). rtslib is imported on first use only: a clear never needs it, and
its import alone is ~1.3 s of a clear's start-up in the lab guest.
"""

from __future__ import annotations

import os
import errno
import stat
import sys
import threading
# typing is not imported: its import is a share of a one-shot command's start-up
TYPE_CHECKING = False

from . import alua, configfs, fabrics
from .errors import ApplyError, TargetError, ValidationError
from .model import Config, StorageObject
from .plan import Step

if TYPE_CHECKING:
    from typing import Callable

    from rtslib import TPG, Target

Undo = "Callable[[], None]"


class _Rtslib:
    """rtslib's classes, imported on first use."""

    def __getattr__(self, name: str):
        import rtslib
        value = getattr(rtslib, name)
        setattr(self, name, value)
        return value


rts = _Rtslib()


def _is_rtslib_error(e: BaseException) -> bool:
    # if rtslib was never imported, nothing raised one of its errors
    utils = sys.modules.get("rtslib.utils")
    return utils is not None and isinstance(e, utils.RTSLibError)

# Steps made with configfs.Writer: each touches only its own directories, so
# many of one kind may run at once.  Steps through rtslib objects stay serial.
# Not so_delete: the kernel tears a device down under configfs's subsystem mutex,
# so workers only queue there (measured at 250: 5.1 s with 8 threads, 4.4 s serial).
PARALLEL_OPS = {"so_create", "lun_create", "lun_delete", "mlun_create", "mlun_delete", "tpg_delete"}
# Enough to overlap the kernel's waits; more only adds contention on the
# kernel's per-TPG mutexes (measured in the lab guest: 8 threads ~3.5x on LUN links).
# ISCSIKIT_TARGET_WORKERS=1 gives the serial executor back (the bench's A/B).
# Read per run, not at import: iscsikit-targetd serves many runs, each with its client's value.
def workers() -> int:
    return max(1, int(os.environ.get("ISCSIKIT_TARGET_WORKERS", "8") or 8))


def _across_tpgs(batch: list[Step]) -> list[Step]:
    """The steps reordered one per TPG in turn: (t1 a, t2 a, t3 a, t1 b, t2 b, ...)."""
    groups: dict[tuple, list[Step]] = {}
    for s in batch:
        groups.setdefault((s.target, s.tag), []).append(s)
    lanes = list(groups.values())
    return [lane[k] for k in range(max(map(len, lanes))) for lane in lanes if k < len(lane)]


class Executor:
    def __init__(self, current: Config, root: str = configfs.ROOT):
        # `current` is the snapshot the plan was made from; it gives HBA indexes
        # and is kept up to date so later steps find what earlier ones made.
        self.current = current
        self.root = root
        self.writer = configfs.Writer(root)
        self._fabrics: dict = {}
        self._targets: dict[tuple, Target] = {}
        self._tpgs: dict[tuple, TPG] = {}

    # ---- rtslib objects, looked up once each ----
    @property
    def fabric(self):
        return self.fabric_module("iscsi")

    def fabric_module(self, name: str):
        """rtslib's FabricModule, its kernel module loaded first (or a one-line error naming it)."""
        fm = self._fabrics.get(name)
        if fm is None:
            load_fabric(self.root, name)
            fm = self._fabrics[name] = rts.FabricModule(name)
        return fm

    def target_dir(self, wwn: str, fabric: str = "iscsi") -> str:
        fab = fabrics.FABRICS[fabric]
        return f"{self.root}/{fab.dir}/{fab.to_dir(wwn)}"

    def target(self, wwn: str, fabric: str = "iscsi") -> Target:
        t = self._targets.get((fabric, wwn))
        if t is None or not t.exists:
            t = self._targets[(fabric, wwn)] = rts.Target(self.fabric_module(fabric), wwn, "lookup")
        return t

    def tpg(self, wwn: str, tag: int, fabric: str = "iscsi") -> TPG:
        key = (fabric, wwn, tag)
        t = self._tpgs.get(key)
        if t is None or not t.exists:
            t = self._tpgs[key] = rts.TPG(self.target(wwn, fabric), tag, "lookup")
        return t

    def acl(self, wwn: str, tag: int, node: str, fabric: str = "iscsi"):
        return rts.NodeACL(self.tpg(wwn, tag, fabric), node, "lookup")

    def so(self, key) -> StorageObject:
        so = self.current.storage_objects.get(key)
        if so is None or so.hba_index is None:
            raise TargetError(f"storage object {key[0]}/{key[1]} is not in configfs")
        return so

    # ---- running a plan ----
    def run(self, steps: list[Step]) -> None:
        """Do the steps in order; a run of same-kind bulk steps goes through a thread pool.

        LIO waits inside the kernel on each LUN link and unlink (an RCU grace
        period and the LUN's percpu reference: ~20-40 ms each in the lab
        guest, most of a bulk restore or clear).  Those waits are sleeps, so
        steps of one phase that touch different objects overlap them;
        phases still run one after another, so order between kinds holds.
        """
        undos: list[tuple[Step, Undo]] = []
        i = 0
        pool = None
        try:
            while i < len(steps):
                j = i + 1
                if steps[i].op in PARALLEL_OPS:
                    while j < len(steps) and steps[j].op == steps[i].op:
                        j += 1
                batch = steps[i:j]
                if len(batch) == 1 or workers() == 1:
                    results = []
                    for s in batch:         # serial: nothing runs after a failure
                        results.append(self._do(s))
                        if results[-1][1] is not None:
                            break
                else:
                    if pool is None:
                        from concurrent.futures import ThreadPoolExecutor
                        pool = ThreadPoolExecutor(workers(), thread_name_prefix="lio")
                    # submitted round-robin over TPGs: the LUNs of one TPG share the kernel's
                    # per-TPG locks, so concurrent workers are spread over different TPGs
                    futures = dict((id(s), pool.submit(self._do, s)) for s in _across_tpgs(batch))
                    futures = [futures[id(s)] for s in batch]
                    try:
                        results = [f.result() for f in futures]
                    except BaseException:
                        # ^C while workers run: let them finish, keep what they made
                        # undoable, and take everything back.
                        from concurrent.futures import wait
                        wait(futures)
                        undos += [(s, f.result()[0]) for s, f in zip(batch, futures)
                                  if not f.cancelled() and f.result()[0] is not None]
                        self.rollback(undos)
                        raise
                failure = None
                for step, (undo, err) in zip(batch, results):
                    if err is None:
                        if undo is not None:
                            undos.append((step, undo))
                    elif failure is None:
                        failure = (step, err)        # the first in plan order is reported
                if failure is not None:
                    step, e = failure
                    failed = self.rollback(undos)
                    if not isinstance(e, (TargetError, OSError)) and not _is_rtslib_error(e):
                        raise e
                    msg = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
                    raise ApplyError(f"{step.describe()}: {msg}", failed) from None
                i = j
        finally:
            if pool is not None:
                pool.shutdown(wait=True)

    def _do(self, step: Step) -> tuple[Undo | None, BaseException | None]:
        try:
            return HANDLERS[step.op](self, step), None
        except Exception as e:
            return None, e
        except BaseException:
            if threading.current_thread() is threading.main_thread():
                raise
            return None, TargetError(f"{step.describe()}: interrupted")

    def rollback(self, undos) -> list[str]:
        failed = []
        for step, undo in reversed(undos):
            try:
                undo()
            except Exception as e:  # keep going: each undo left standing is one more thing restored
                failed.append(f"undo of {step.describe()}: {e}")
                import logging
                logging.getLogger(__name__).warning("rollback: undo of %s failed: %s", step.describe(), e)
        return failed


def load_fabric(root: str, name: str) -> None:
    """Make sure the fabric's configfs directory exists, loading its kernel module if needed.

    mkdir of target/<fabric> registers it; the kernel itself request_module()s
    only iscsi and loopback there (target_core_configfs.c), so for the others
    the module is loaded first.  A fabric that cannot be loaded is an error
    naming its modules, never a silent skip.
    """
    fab = fabrics.FABRICS[name]
    d = f"{root}/{fab.dir}"
    if os.path.isdir(d):
        return
    try:
        os.mkdir(d)
        return
    except FileExistsError:
        return
    except OSError:
        pass
    from ..kernel import kmod
    errors = []
    for m in fab.modules:
        try:
            kmod.load(m)
        except kmod.ModuleError as e:
            errors.append(str(e))
            continue
        try:
            os.mkdir(d)
        except FileExistsError:
            pass
        except OSError as e:
            errors.append(f"{d}: {e.strerror}")
            continue
        return
    raise TargetError(f"fabric {name}: its kernel module ({' or '.join(fab.modules)}) cannot be loaded: "
                      f"{errors[-1] if errors else 'unknown error'}")


# ---- storage objects -------------------------------------------------------------

def _so_create(ex: Executor, step: Step) -> Undo:
    so: StorageObject = step.obj
    if so.plugin == "pscsi":
        # pscsi needs udev to map a path to H:C:T:L; rtslib already does that.
        from rtslib import PSCSIStorageObject
        PSCSIStorageObject(so.name, so.dev)
        fresh = configfs.snapshot(ex.root, attributes=False).storage_objects[so.key]
        so.hba_index = fresh.hba_index
    else:
        if so.plugin == "fileio":
            try:
                so.is_block_dev = stat.S_ISBLK(os.stat(so.dev).st_mode)
            except OSError:
                so.is_block_dev = False
        ex.writer.create_so(so)
    ex.current.storage_objects[so.key] = so
    return lambda: (ex.writer.delete_so(so), ex.current.storage_objects.pop(so.key, None))


def _so_delete(ex: Executor, step: Step) -> Undo:
    so: StorageObject = step.obj
    ex.writer.delete_so(so)
    ex.current.storage_objects.pop(so.key, None)

    def undo():
        again = StorageObject(**{f: getattr(so, f) for f in (
            "plugin", "name", "dev", "size", "wwn", "write_back", "aio", "readonly", "exclusive", "nullio",
            "config", "hw_max_sectors", "control", "attributes")})
        again.is_block_dev = so.is_block_dev
        ex.writer.create_so(again)
        so.hba_index = again.hba_index
        ex.current.storage_objects[so.key] = so
    return undo


def _so_attrs(ex: Executor, step: Step) -> Undo:
    so = ex.so(step.obj.key)
    old = ex.writer.set_so_attributes(so, step.values)
    return lambda: ex.writer.set_so_attributes(so, old)


# ---- ALUA groups of a kept storage object (a new one gets them at so_create) -------

def _alua_create(ex: Executor, step: Step) -> Undo:
    so, values = ex.so(step.obj.key), dict(step.values)
    name = values.pop("name")
    alua.create(ex.root, so, name, values.pop("tg_pt_gp_id"))
    try:
        if values:
            alua.set_values(ex.root, so, name, values)
    except BaseException:
        alua.delete(ex.root, so, name)
        raise
    return lambda: alua.delete(ex.root, so, name)


def _alua_attrs(ex: Executor, step: Step) -> Undo:
    so, values = ex.so(step.obj.key), dict(step.values)
    name = values.pop("name")
    old = {g["name"]: g for g in alua.groups(ex.root, so)}[name]
    alua.set_values(ex.root, so, name, values)
    return lambda: alua.set_values(ex.root, so, name, {k: old[k] for k in values if k in old})


def _alua_delete(ex: Executor, step: Step) -> Undo:
    """A group the file does not have (alua_delete: after the LUNs moved out; alua_free_id:
    before a new group takes its id, or it is made again with another). Its undo makes it
    again with its values and puts back the LUNs the snapshot had in it (the kernel moved
    them to default_tg_pt_gp); a LUN the plan moved or deleted gets its group back from its
    own step's undo, which runs later."""
    so, name = ex.so(step.obj.key), step.values["name"]
    old = {g["name"]: g for g in alua.groups(ex.root, so)}[name]
    if step.op == "alua_delete" and (members := alua.members(ex.root, so, name)):
        # the plan deletes only groups no kept LUN is in: one that is, is not dropped
        raise TargetError(f"{so.path}: ALUA group {name} still has LUNs ({', '.join(members)})")
    luns = [(F, wwn, tag, lun.index) for (F, wwn), t in ex.current.all_targets().items()
            for tag, tpg in t.tpgs.items() for lun in tpg.luns.values()
            if lun.so_key == so.key and lun.alua_tg_pt_gp_name == name]
    alua.delete(ex.root, so, name)

    def undo() -> None:
        alua.create(ex.root, so, name, old["tg_pt_gp_id"])
        alua.set_values(ex.root, so, name, {k: v for k, v in old.items() if k not in ("name", "tg_pt_gp_id")})
        for F, wwn, tag, index in luns:
            path = f"{ex.writer.tpg_dir(wwn, tag, F)}/lun/lun_{index}/alua_tg_pt_gp"
            if os.path.exists(path):
                configfs.write(path, name)
    return undo


def _lun_alua(ex: Executor, step: Step) -> Undo:
    # the group's name written to the LUN's alua_tg_pt_gp (target_core_configfs.c); any fabric
    path = f"{ex.writer.tpg_dir(step.target, step.tag, step.fabric)}/lun/lun_{step.obj.index}/alua_tg_pt_gp"
    first = configfs.read(path).splitlines()
    old = first[0].split(":", 1)[1].strip() if first and ":" in first[0] else alua.DEFAULT_GROUP
    configfs.write(path, step.values["alua_tg_pt_gp_name"])
    return lambda: configfs.write(path, old)


# ---- targets and TPGs ------------------------------------------------------------

# iSCSI targets, TPGs, portals and ACLs are one mkdir each (what rtslib's
# constructors do for them: rtslib/target.py); made here with configfs.Writer
# they cost no rtslib import (~1.3 s of a one-shot command in the lab guest)
# and no rtslib object.  Other fabrics go through rtslib: a loopback or vhost
# TPG needs its nexus, which rtslib's TPG() makes.

def _target_create(ex: Executor, step: Step) -> Undo:
    if step.fabric == "iscsi":
        load_fabric(ex.root, "iscsi")
        d = ex.target_dir(step.target)
        configfs.mkdir(d, f"target {step.target}")
        return lambda: configfs.rmdir(d)
    t = rts.Target(ex.fabric_module(step.fabric), step.target, "create")
    ex._targets[(step.fabric, step.target)] = t
    return t.delete


def _remove(path: str, recursive: Callable[[], None]) -> None:
    """rmdir a directory whose children the plan removed already; if the kernel
    holds one the model does not know, rtslib's recursive delete takes it all."""
    try:
        os.rmdir(path)
    except OSError as e:
        if e.errno != errno.ENOTEMPTY:
            raise
        recursive()


def _target_delete(ex: Executor, step: Step) -> Undo:
    _remove(ex.target_dir(step.target, step.fabric), lambda: ex.target(step.target, step.fabric).delete())
    ex._targets.pop((step.fabric, step.target), None)
    return lambda: rts.Target(ex.fabric_module(step.fabric), step.target, "create")


def _target_params(ex: Executor, step: Step) -> Undo:
    t = ex.target(step.target, step.fabric)
    old = {k: t.get_parameter(k) for k in step.values}
    for k, v in step.values.items():
        t.set_parameter(k, v)
    return lambda: [t.set_parameter(k, v) for k, v in old.items()]


def _tpg_create(ex: Executor, step: Step) -> Undo:
    if step.fabric == "iscsi":
        d = ex.writer.tpg_dir(step.target, step.tag)
        configfs.mkdir(d, f"{step.target} tpg{step.tag}")
        return lambda: configfs.rmdir(d)
    tpg = rts.TPG(ex.target(step.target, step.fabric), step.tag, "create")
    ex._tpgs[(step.fabric, step.target, step.tag)] = tpg
    return tpg.delete


def _tpg_delete(ex: Executor, step: Step) -> Undo:
    spec = step.obj
    _remove(ex.writer.tpg_dir(step.target, step.tag, step.fabric),
            lambda: ex.tpg(step.target, step.tag, step.fabric).delete())
    ex._tpgs.pop((step.fabric, step.target, step.tag), None)

    def undo():
        tpg = rts.TPG(ex.target(step.target, step.fabric), step.tag, "create")
        _write_changed(tpg.get_attribute, tpg.set_attribute, spec.attributes)
        _write_changed(tpg.get_parameter, tpg.set_parameter, spec.parameters)
        if spec.chap.is_set():
            _set_chap(tpg, spec.chap.__dict__)
    return undo


def _write_changed(get, put, values: dict) -> dict:
    """Write only values that differ from the running ones; return the old ones."""
    old = {}
    for k, v in values.items():
        cur = get(k)
        if str(cur).strip() != str(int(v) if isinstance(v, bool) else v).strip():
            put(k, v)
            old[k] = cur
    return old


def _files_of(d: str, what: str):
    """get/put for the attrib/ or param/ files of a configfs directory (rtslib's get_attribute...)."""
    def get(k):
        try:
            return configfs.read(f"{d}/{k}")
        except FileNotFoundError:
            raise TargetError(f"{d}: this kernel has no {what} {k}") from None

    def put(k, v):
        configfs.write(f"{d}/{k}", str(int(v)) if isinstance(v, bool) else str(v))
    return get, put


def _tpg_attrs(ex: Executor, step: Step) -> Undo:
    get, put = _files_of(f"{ex.writer.tpg_dir(step.target, step.tag, step.fabric)}/attrib", "attribute")
    old = _write_changed(get, put, step.values)
    return lambda: _write_changed(get, put, old)


def _tpg_params(ex: Executor, step: Step) -> Undo:
    get, put = _files_of(f"{ex.writer.tpg_dir(step.target, step.tag, step.fabric)}/param", "parameter")
    old = _write_changed(get, put, step.values)
    return lambda: _write_changed(get, put, old)


_CHAP_PROPS = ("userid", "password", "mutual_userid", "mutual_password")


def _set_chap(obj, values: dict, prefix: str = "chap_") -> dict:
    old = {f: getattr(obj, prefix + f) or "" for f in _CHAP_PROPS}
    # Clear mutual before one-way and set one-way before mutual: the kernel
    # checks a mutual set against the one-way one.
    order = sorted(_CHAP_PROPS, key=lambda f: ("mutual" in f) == bool(values.get(f)))
    for f in order:
        if f in values and (values[f] or "") != old[f]:
            setattr(obj, prefix + f, values[f] or "")
    return old


def _tpg_auth(ex: Executor, step: Step) -> Undo:
    tpg = ex.tpg(step.target, step.tag, step.fabric)
    old = _set_chap(tpg, step.values)
    return lambda: _set_chap(tpg, old)


def _tpg_enable(ex: Executor, step: Step) -> Undo | None:
    path = f"{ex.writer.tpg_dir(step.target, step.tag, step.fabric)}/enable"
    if not os.path.exists(path):
        return None         # loopback, vhost ...: a TPG without the file is always enabled
    old = configfs.read(path)
    configfs.write(path, str(int(step.values["enable"])))
    return lambda: configfs.write(path, old)


# ---- LUNs, portals ---------------------------------------------------------------

def _lun_create(ex: Executor, step: Step) -> Undo:
    lun = step.obj
    ex.writer.create_lun(step.target, step.tag, lun, ex.so(lun.so_key), step.fabric)
    return lambda: ex.writer.delete_lun(step.target, step.tag, lun, step.fabric)


def _lun_delete(ex: Executor, step: Step) -> Undo:
    lun = step.obj
    ex.writer.delete_lun(step.target, step.tag, lun, step.fabric)
    return lambda: ex.writer.create_lun(step.target, step.tag, lun, ex.so(lun.so_key), step.fabric)


def _portal_create(ex: Executor, step: Step) -> Undo:
    p = step.obj
    if step.fabric == "iscsi":
        d = f"{ex.writer.tpg_dir(step.target, step.tag)}/np/{p.dirname}"
        configfs.mkdir(d, f"portal {p.dirname}")
        return lambda: configfs.rmdir(d)
    np = rts.NetworkPortal(ex.tpg(step.target, step.tag, step.fabric), p.ip_address, p.port, "create")
    return np.delete


def _portal_delete(ex: Executor, step: Step) -> Undo:
    p = step.obj
    _remove(f"{ex.writer.tpg_dir(step.target, step.tag, step.fabric)}/np/{p.dirname}",
            lambda: rts.NetworkPortal(ex.tpg(step.target, step.tag, step.fabric), p.ip_address, p.port,
                                      "lookup").delete())

    def undo():
        np = rts.NetworkPortal(ex.tpg(step.target, step.tag, step.fabric), p.ip_address, p.port, "create")
        if p.iser:
            np.iser = True
        if p.offload:
            np.offload = True
    return undo


def _portal_flags(ex: Executor, step: Step) -> Undo:
    p = step.obj
    np = rts.NetworkPortal(ex.tpg(step.target, step.tag, step.fabric), p.ip_address, p.port, "lookup")
    old = {"iser": np.iser, "offload": np.offload}
    for k, v in step.values.items():
        if getattr(np, k) != v:
            setattr(np, k, v)
            if getattr(np, k) != v:
                raise TargetError(f"portal {p.dirname}: this kernel cannot set {k}={v}")
    return lambda: [setattr(np, k, v) for k, v in old.items()]


# ---- ACLs and mapped LUNs ---------------------------------------------------------

def _acl_create(ex: Executor, step: Step) -> Undo:
    if step.fabric == "iscsi":
        d = ex.writer.acl_dir(step.target, step.tag, step.node)
        configfs.mkdir(d, f"ACL {step.node}")
        return lambda: configfs.rmdir(d)
    acl = rts.NodeACL(ex.tpg(step.target, step.tag, step.fabric), step.node, "create")
    return acl.delete


def _acl_delete(ex: Executor, step: Step) -> Undo:
    spec = step.obj
    _remove(ex.writer.acl_dir(step.target, step.tag, step.node, step.fabric),
            lambda: ex.acl(step.target, step.tag, step.node, step.fabric).delete())

    def undo():
        acl = rts.NodeACL(ex.tpg(step.target, step.tag, step.fabric), step.node, "create")
        _write_changed(acl.get_attribute, acl.set_attribute, spec.attributes)
        if spec.chap.is_set():
            _set_chap(acl, spec.chap.__dict__)
        if spec.tag:
            acl.tag = spec.tag
    return undo


def _acl_attrs(ex: Executor, step: Step) -> Undo:
    acl = ex.acl(step.target, step.tag, step.node, step.fabric)
    old = _write_changed(acl.get_attribute, acl.set_attribute, step.values)
    return lambda: _write_changed(acl.get_attribute, acl.set_attribute, old)


def _acl_auth(ex: Executor, step: Step) -> Undo:
    acl = ex.acl(step.target, step.tag, step.node, step.fabric)
    old = _set_chap(acl, step.values)
    return lambda: _set_chap(acl, old)


def _acl_tag(ex: Executor, step: Step) -> Undo:
    acl = ex.acl(step.target, step.tag, step.node, step.fabric)
    old = acl.tag
    acl.tag = step.values["tag"]
    return lambda: setattr(acl, "tag", old)


def _acl_depth(ex: Executor, step: Step) -> Undo:
    acl = ex.acl(step.target, step.tag, step.node, step.fabric)
    old = acl.tcq_depth
    acl.tcq_depth = step.values["tcq_depth"]
    return lambda: setattr(acl, "tcq_depth", old)


def _mlun_create(ex: Executor, step: Step) -> Undo:
    ex.writer.create_mapped_lun(step.target, step.tag, step.node, step.obj, step.fabric)
    return lambda: ex.writer.delete_mapped_lun(step.target, step.tag, step.node, step.obj, step.fabric)


def _mlun_delete(ex: Executor, step: Step) -> Undo:
    ex.writer.delete_mapped_lun(step.target, step.tag, step.node, step.obj, step.fabric)
    return lambda: ex.writer.create_mapped_lun(step.target, step.tag, step.node, step.obj, step.fabric)


def _mlun_wp(ex: Executor, step: Step) -> Undo:
    m = step.obj
    old = ex.writer.set_write_protect(step.target, step.tag, step.node, m.index, step.values["write_protect"],
                                    step.fabric)
    return lambda: ex.writer.set_write_protect(step.target, step.tag, step.node, m.index, old, step.fabric)


def _discovery_auth(ex: Executor, step: Step) -> Undo:
    fm = ex.fabric
    old_enable = fm.discovery_enable_auth
    if not step.values["enable"]:
        fm.discovery_enable_auth = False
    old = _set_chap(fm, step.values, prefix="discovery_")
    if step.values["enable"]:
        fm.discovery_enable_auth = True

    def undo():
        fm.discovery_enable_auth = False
        _set_chap(fm, old, prefix="discovery_")
        fm.discovery_enable_auth = old_enable
    return undo


HANDLERS = {
    "tpg_disable": _tpg_enable,
    "tpg_enable": _tpg_enable,
    "mlun_delete": _mlun_delete,
    "acl_delete": _acl_delete,
    "lun_delete": _lun_delete,
    "portal_delete": _portal_delete,
    "tpg_delete": _tpg_delete,
    "target_delete": _target_delete,
    "so_delete": _so_delete,
    "so_create": _so_create,
    "so_attrs": _so_attrs,
    "alua_create": _alua_create,
    "alua_attrs": _alua_attrs,
    "alua_free_id": _alua_delete,
    "alua_delete": _alua_delete,
    "lun_alua": _lun_alua,
    "target_create": _target_create,
    "target_params": _target_params,
    "tpg_create": _tpg_create,
    "tpg_attrs": _tpg_attrs,
    "tpg_params": _tpg_params,
    "tpg_auth": _tpg_auth,
    "lun_create": _lun_create,
    "portal_create": _portal_create,
    "portal_flags": _portal_flags,
    "acl_create": _acl_create,
    "acl_attrs": _acl_attrs,
    "acl_auth": _acl_auth,
    "acl_tag": _acl_tag,
    "acl_depth": _acl_depth,
    "mlun_create": _mlun_create,
    "mlun_wp": _mlun_wp,
    "discovery_auth": _discovery_auth,
}


def preflight(steps: list[Step]) -> None:
    """What can be checked outside configfs is checked before the first step."""
    for s in steps:
        if s.op != "so_create":
            continue
        so: StorageObject = s.obj
        if so.plugin == "fileio":
            parent = os.path.dirname(so.dev) or "/"
            if not os.path.exists(so.dev) and not os.path.isdir(parent):
                raise ValidationError(f"{so.path}: directory {parent} does not exist")
            if os.path.exists(so.dev):
                mode = os.stat(so.dev).st_mode
                if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
                    raise ValidationError(f"{so.path}: {so.dev} is neither a file nor a block device")
                so.is_block_dev = stat.S_ISBLK(mode)
        elif so.plugin == "block":
            try:
                mode = os.stat(so.dev).st_mode
            except OSError:
                raise ValidationError(f"{so.path}: {so.dev} does not exist") from None
            if not stat.S_ISBLK(mode):
                raise ValidationError(f"{so.path}: {so.dev} is not a block device")

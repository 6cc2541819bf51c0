"""The shell's everyday commands as plain functions: the shell nodes call them, and so does
the one-shot fast path (cli/target.py), which runs them without configshell.

Each command names its scope, the part of the tree it reads and may change
(Manager.edit's `targets` / `sos`): a command inside one target reads that
target and the storage objects it needs, not the whole tree.  This is what
keeps a one-shot command cheap at 1000 targets (OpenStack Cinder's LIO driver
makes one target per volume, one process per step: bench_target_cinder.py);
configshell and pyparsing are not imported on this path at all (their import
alone is seconds in the lab guest).

Each function returns the message the shell logs on success; errors are
TargetError subclasses with one line and an exit code.
"""

from __future__ import annotations

import os
import stat

from . import validate
from .errors import ApplyError, NotFoundError, TargetError, ValidationError
from .manager import Manager
from .model import LUN, PLUGIN_ALIASES, Config, MappedLUN, NodeACL, Portal, StorageObject, Target, TPG

# targetcli's preferences that change what a command makes (targetcli/ui_node.py defaults)
PREFS = {
    "auto_enable_tpgt": True, "auto_add_mapped_luns": True, "auto_add_default_portal": True,
    "default_portal_ip": "0.0.0.0", "auto_save_on_exit": True, "export_backstore_name_as_model": True,
    "max_backup_files": 10,
}


def generate_iqn() -> str:
    """rtslib's form: iqn.2003-01.org.linux-iscsi.<host>.<arch>:sn.<12 hex>."""
    import socket
    host = socket.gethostname().split(".")[0].replace("_", "").lower() or "localhost"
    arch = os.uname().machine.replace("_", "").lower()
    return f"iqn.2003-01.org.linux-iscsi.{host}.{arch}:sn.{os.urandom(6).hex()}"


# ---- storage objects ----------------------------------------------------------------

def file_backing(path: str, size, sparse: bool) -> tuple[int | None, str | None, bool]:
    """(size, file we created or None, is a block device) for a fileio create."""
    path = validate.path(path, "fileio path")
    if os.path.exists(path):
        mode = os.stat(path).st_mode
        if stat.S_ISBLK(mode):
            return None, None, True
        if not stat.S_ISREG(mode):
            raise ValidationError(f"{path} is neither a file nor a block device")
        actual = os.path.getsize(path)
        if size is not None and validate.size(size) != actual:
            raise ValidationError(f"{path} exists with size {actual}; leave size out or resize the file first")
        return validate.size(actual, f"size of {path}"), None, False
    if size is None:
        raise ValidationError(f"{path} does not exist: give a size to create it")
    n = validate.size(size)
    parent = os.path.dirname(path) or "/"
    if not os.path.isdir(parent):
        raise ValidationError(f"directory {parent} does not exist")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        if sparse:
            os.ftruncate(fd, n)
        else:
            os.posix_fallocate(fd, 0, n)
    except OSError as e:
        os.close(fd)
        os.unlink(path)
        raise TargetError(f"cannot create {path}: {e.strerror}") from None
    os.close(fd)
    return n, path, False


def _dev_in_use(root: str, dev: str) -> str | None:
    """The storage object already on `dev`, read from configfs (a scoped edit does not read
    every storage object, and two objects on one file would corrupt it)."""
    core = f"{root}/core"
    real = os.path.realpath(dev)
    try:
        hbas = os.listdir(core)
    except OSError:
        return None
    for hba in hbas:
        try:
            names = os.listdir(f"{core}/{hba}")
        except (NotADirectoryError, FileNotFoundError):
            continue
        for name in names:
            try:
                with open(f"{core}/{hba}/{name}/udev_path") as f:
                    used = f.read().strip()
            except OSError:
                continue
            # realpath only for a name that could be the same file: one lstat chain, not 1000
            if used and (used == dev or (os.path.basename(used) == os.path.basename(real)
                                         and os.path.realpath(used) == real)):
                return f"{hba.rpartition('_')[0]}/{name}"
    return None


def create_so(manager: Manager, prefs: dict, so: StorageObject, block_size=None,
              made_file: str | None = None) -> str:
    try:
        if block_size is not None:
            so.attributes["block_size"] = validate.block_size(block_size)
        if prefs["export_backstore_name_as_model"]:
            so.attributes.setdefault("emulate_model_alias", 1)
        so.check()
        # A file this command just made (O_EXCL) is used by nothing; any other path is looked
        # up in every storage object (1000 reads at 1000 volumes, ~1 s in the lab guest).
        if so.plugin in ("fileio", "block") and so.dev and not made_file:
            other = _dev_in_use(manager.root, so.dev)
            if other:
                raise ValidationError(f"{so.path} and /backstores/{other} would both use {so.dev}")

        def add(cfg: Config):
            if so.key in cfg.storage_objects:
                raise ValidationError(f"storage object {so.path} already exists")
            cfg.storage_objects[so.key] = so
        manager.edit(add, targets=set(), sos={so.key})
    except TargetError:
        if made_file:
            os.unlink(made_file)
        raise
    return f"Created {so.plugin} {so.name}" + (f" with size {so.size}" if so.size else "")


def fileio_create(manager, prefs, name, file_or_dev, size=None, write_back="true", sparse="true", wwn=None,
                  block_size=None) -> str:
    validate.so_name(name)
    wb = validate.boolean(write_back, "write_back")
    n, made, is_blk = file_backing(file_or_dev, size, validate.boolean(sparse, "sparse"))
    so = StorageObject("fileio", name, dev=file_or_dev, size=n, wwn=wwn, write_back=wb)
    so.is_block_dev = is_blk
    return create_so(manager, prefs, so, block_size, made)


def block_create(manager, prefs, name, dev, readonly="false", wwn=None, exclusive="true", block_size=None) -> str:
    so = StorageObject("block", name, dev=validate.path(dev, "device"), wwn=wwn,
                       readonly=validate.boolean(readonly, "readonly"),
                       exclusive=validate.boolean(exclusive, "exclusive"))
    if not os.path.exists(dev) or not stat.S_ISBLK(os.stat(dev).st_mode):
        raise ValidationError(f"{dev} is not a block device")
    return create_so(manager, prefs, so, block_size)


def ramdisk_create(manager, prefs, name, size, nullio="false", wwn=None, block_size=None) -> str:
    so = StorageObject("ramdisk", name, size=validate.size(size), wwn=wwn,
                       nullio=validate.boolean(nullio, "nullio"))
    return create_so(manager, prefs, so, block_size)


# ---- targets ---------------------------------------------------------------------------

def iscsi_create(manager, prefs, wwn=None) -> str:
    name = validate.wwn(wwn, "target name") if wwn else generate_iqn()

    def add(cfg: Config, portal: bool = True):
        if name in cfg.targets:
            raise ValidationError(f"target {name} already exists")
        tpg = TPG(tag=1, enable=bool(prefs["auto_enable_tpgt"]), attributes={"authentication": 0})
        if portal:
            p = Portal(validate.portal_ip(prefs["default_portal_ip"]), 3260)
            tpg.portals[p.key] = p
        cfg.targets[name] = Target(name, tpgs={1: tpg})
    want_portal = bool(prefs["auto_add_default_portal"])
    try:
        manager.edit(lambda cfg: add(cfg, want_portal), targets={name}, sos=set())
    except ApplyError as e:
        # The kernel refuses the wildcard portal when another target listens on a
        # specific address of that port (OpenStack Cinder's shape); targetcli then
        # makes the target without it and says so (targetcli/ui_target.py), as here.
        # The failed attempt was rolled back whole, so the second starts clean.
        if not want_portal or not str(e).startswith("portal_create"):
            raise
        manager.edit(lambda cfg: add(cfg, False), targets={name}, sos=set())
        return (f"Created target {name}. Default portal not created: the kernel refused "
                f"{prefs['default_portal_ip']}:3260 ({e})")
    return f"Created target {name}."


def iscsi_delete(manager, prefs, wwn) -> str:
    key = wwn.lower()

    def remove(cfg: Config):
        if key not in cfg.targets:
            raise NotFoundError(f"no target {wwn}")
        del cfg.targets[key]
    manager.edit(remove, targets={key}, sos=set())
    return f"Deleted target {wwn}."


def _tpg_edit(manager, wwn: str, tag, fn, sos=frozenset()):
    wwn, tag = wwn.lower(), int(tag)

    def edit(cfg: Config):
        t = cfg.targets.get(wwn)
        if t is None or tag not in t.tpgs:
            raise NotFoundError(f"no target {wwn} tpg{tag}")
        return fn(cfg, t.tpgs[tag])
    return manager.edit(edit, targets={wwn}, sos=set(sos))[1]


def lun_create(manager, prefs, target, tag, storage_object, lun=None, add_mapped_luns=None) -> str:
    auto = prefs["auto_add_mapped_luns"] if add_mapped_luns is None \
        else validate.boolean(add_mapped_luns, "add_mapped_luns")
    index = validate.lun_index(lun) if lun is not None else None
    new_so = None
    if not storage_object.startswith("/backstores/"):
        path = validate.path(storage_object, "storage object path")
        if not os.path.exists(path):
            raise NotFoundError(f"{path} does not exist")
        name = validate.so_name(os.path.basename(path).replace(".", "_") or "disk")
        if stat.S_ISBLK(os.stat(path).st_mode):
            new_so = StorageObject("block", name, dev=path)
        else:
            new_so = StorageObject("fileio", name, dev=path, size=os.path.getsize(path))
        new_so.check()
        storage_object = new_so.path
    parts = storage_object.strip("/").split("/")
    if len(parts) != 3:
        raise NotFoundError(f"no storage object {storage_object}")
    so_key = (PLUGIN_ALIASES.get(parts[1], parts[1]), parts[2])

    def edit(cfg, tpg):
        if new_so is not None:
            if new_so.key in cfg.storage_objects:
                raise ValidationError(f"storage object {new_so.path} already exists")
            cfg.storage_objects[new_so.key] = new_so
        so = cfg.so_by_path(storage_object)
        if so is None:
            raise NotFoundError(f"no storage object {storage_object}")
        n = index if index is not None else min(set(range(len(tpg.luns) + 1)) - set(tpg.luns))
        if n in tpg.luns:
            raise ValidationError(f"lun{n} already exists")
        tpg.luns[n] = LUN(n, so.path)
        if auto:
            for acl in tpg.node_acls.values():
                m = min(set(range(len(acl.mapped_luns) + 1)) - set(acl.mapped_luns))
                acl.mapped_luns[m] = MappedLUN(m, n)
        return n
    n = _tpg_edit(manager, target, tag, edit, sos={so_key})
    return f"Created LUN {n}."


def lun_delete(manager, prefs, target, tag, lun) -> str:
    def edit(cfg, tpg):
        n = validate.lun_index(lun)
        if n not in tpg.luns:
            raise NotFoundError(f"no lun{n}")
        del tpg.luns[n]
        for acl in tpg.node_acls.values():
            for m in [m for m in acl.mapped_luns.values() if m.tpg_lun == n]:
                del acl.mapped_luns[m.index]
    _tpg_edit(manager, target, tag, edit)
    return f"Deleted LUN {lun}."


def acl_create(manager, prefs, target, tag, wwn, add_mapped_luns=None) -> str:
    auto = prefs["auto_add_mapped_luns"] if add_mapped_luns is None \
        else validate.boolean(add_mapped_luns, "add_mapped_luns")
    node = validate.wwn(wwn, "initiator name")

    def edit(cfg, tpg):
        if node in tpg.node_acls:
            raise ValidationError(f"ACL {node} already exists")
        acl = NodeACL(node)
        if auto:
            for i in tpg.luns:
                acl.mapped_luns[i] = MappedLUN(i, i)
        tpg.node_acls[node] = acl
    _tpg_edit(manager, target, tag, edit)
    return f"Created Node ACL for {node}"


def acl_delete(manager, prefs, target, tag, wwn) -> str:
    def edit(cfg, tpg):
        node = wwn.lower()
        if node not in tpg.node_acls:
            raise NotFoundError(f"no ACL {wwn}")
        del tpg.node_acls[node]
    _tpg_edit(manager, target, tag, edit)
    return f"Deleted Node ACL {wwn}."


def portal_create(manager, prefs, target, tag, ip_address=None, ip_port=None) -> str:
    p = Portal(validate.portal_ip(ip_address or prefs["default_portal_ip"]), validate.portal_port(ip_port or 3260))

    def edit(cfg, tpg):
        if p.key in tpg.portals:
            raise ValidationError(f"portal {p.dirname} already exists")
        tpg.portals[p.key] = p
    _tpg_edit(manager, target, tag, edit)
    return f"Created network portal {p.dirname}."


def portal_delete(manager, prefs, target, tag, ip_address, ip_port) -> str:
    key = validate.portal_key(validate.portal_ip(ip_address), validate.portal_port(ip_port))

    def edit(cfg, tpg):
        if key not in tpg.portals:
            raise NotFoundError(f"no portal {ip_address}:{ip_port}")
        del tpg.portals[key]
    _tpg_edit(manager, target, tag, edit)
    return f"Deleted network portal {ip_address}:{ip_port}"

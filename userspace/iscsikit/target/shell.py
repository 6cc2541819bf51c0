"""targetcli's tree and verbs on configshell-fb, over the target manager.

The tree is rebuilt from one configfs snapshot (no attribute files read) after
every change, instead of one rtslib object per node stat'ing its directory
(targetcli's startup cost, lio-facts.md §5.2).  Every command that changes
something builds the desired configuration and hands it to Manager.edit(),
so the shell validates and rolls back exactly as restore does.  Reading an
attribute (`get attribute …`) goes through rtslib's objects.

Nothing here holds a lock between commands (targetcli-fb #199); D-Bus is
not used: TCMU handlers are found from their installed plugins.
"""

from __future__ import annotations

import copy
import glob
import os
import sys

from configshell import ConfigNode, ConfigShell, ExecutionError

from . import alua, fabrics, listing, ops, saveconfig, sessions as sessions_mod, validate
from .errors import NotFoundError, TargetError, ValidationError
from .manager import Manager
from .model import Config, LUN, MappedLUN, NodeACL, Portal, StorageObject, Target, TPG

SO_ATTRIBUTES = sorted(validate.SO_FLAG_ATTRIBUTES | set(validate.SO_RANGED_ATTRIBUTES) | {
    "block_size", "optimal_sectors", "max_unmap_lba_count", "max_unmap_block_desc_count",
    "unmap_granularity", "unmap_granularity_alignment", "max_write_same_len", "pi_prot_format",
})


human_size = listing.human_size


generate_iqn = ops.generate_iqn


class TargetShell(ConfigShell):
    default_prefs = dict(ConfigShell.default_prefs, **ops.PREFS, **{
        "bookmarks": None, "path_history": ["/"], "path_history_index": 0,
        # configshell's debug logging inspects the stack on every call: costly
        "loglevel_file": "info",
    })

    def __init__(self, manager: Manager, preferences_dir: str | None = None, oneshot: bool = False):
        super().__init__(preferences_dir)
        self.oneshot = oneshot
        # configshell's Log.debug() calls inspect.stack(), which reads the source of every
        # frame, for each message even when nothing is logged: seconds per command under
        # emulation, and targetcli's own prefs (shared in ~/.targetcli) log debug to a file.
        # The same line, caller included, from the caller's frame alone:
        self.log.debug = self._debug
        if not use_colour(sys.stdout):
            # configshell colours its log lines whenever the color_mode preference
            # is on, even into a file or a pipe; every colour goes through
            # render_text, so plain text here keeps escape codes out of both.
            # (Setting the preference instead would be saved to the prefs file.)
            self.con.render_text = _plain
        self.manager = manager
        self.last_error: TargetError | None = None
        self.json_output = False
        UIRoot(self)


    def _debug(self, msg) -> None:
        caller = sys._getframe(1)
        self.log._log("debug", f"{caller.f_code.co_filename}:{caller.f_lineno} {caller.f_code.co_name}() {msg}")


use_colour = listing.use_colour


def _plain(text, *args, **kwargs) -> str:
    return text


# Our preferences settable with `set global name=value`, as targetcli's (targetcli/ui_node.py).
GLOBALS = (("auto_save_on_exit", "bool"), ("auto_enable_tpgt", "bool"), ("auto_add_mapped_luns", "bool"),
           ("auto_add_default_portal", "bool"), ("default_portal_ip", "string"),
           ("export_backstore_name_as_model", "bool"), ("max_backup_files", "number"))


class UINode(ConfigNode):
    """Base: access to the manager, one-line errors, batched `set` for object groups."""

    def __init__(self, name, parent=None, shell=None):
        super().__init__(name, parent, shell)
        for pref, kind in GLOBALS:
            self.define_config_group_param("global", pref, kind)

    # groups whose parameters are applied together (CHAP needs userid and password at once)
    batch_groups: tuple = ()

    @property
    def manager(self) -> Manager:
        return self.shell.manager

    @property
    def config(self) -> Config:
        return self.get_root().cfg

    def change(self, fn, message: str | None = None):
        """Run one edit through the manager; turn our errors into the shell's."""
        try:
            steps, result = self.manager.edit(fn)
        except TargetError as e:
            self.shell.last_error = e
            raise ExecutionError(str(e)) from None
        root = self.get_root()
        root.refresh()
        if message:
            self.shell.log.info(message)
        return result

    def fail(self, e: TargetError):
        self.shell.last_error = e
        raise ExecutionError(str(e))

    def op(self, fn, *args, **kwargs):
        """Run one of ops.py's commands (the same code the one-shot fast path runs)."""
        try:
            message = fn(self.manager, self.shell.prefs, *args, **kwargs)
        except TargetError as e:
            self.shell.last_error = e
            raise ExecutionError(str(e)) from None
        self.get_root().refresh()
        if message:
            self.shell.log.info(message)

    def ui_command_set(self, group=None, **parameter):
        if group in self.batch_groups and parameter:
            for p in parameter:
                if p not in self.list_group_params(group):
                    self.fail(ValidationError(f"unknown parameter {p} in group {group}"))
            self.set_group(group, parameter)
            for p in parameter:
                shown = "********" if "password" in p and parameter[p] else parameter[p]
                self.shell.con.display(f"Parameter {p} is now '{shown}'.")
            return None
        return super().ui_command_set(group, **parameter)

    def set_group(self, group: str, values: dict) -> None:
        raise NotImplementedError

    def to_json(self) -> dict:
        return {"path": self.path, "name": self.name,
                "children": [c.to_json() for c in sorted(self.children, key=lambda c: c.name)]}

    def info(self) -> dict:
        """What `info` prints: the node's own settings, secrets masked (to_json's are)."""
        d = self.to_json()
        d.pop("children", None)
        return d

    def ui_command_info(self):
        '''
        Shows this node's settings, one "name: value" per line (targetcli's
        info); lists are summarised by their length, CHAP passwords masked.
        '''
        for k, v in sorted(self.info().items()):
            if isinstance(v, dict):
                continue
            if isinstance(v, list):
                v = f"{len(v)} item{'s' if len(v) != 1 else ''}"
            self.shell.con.display(f"{k}: {v}")


# ---- root ------------------------------------------------------------------------

class UIRoot(UINode):
    def __init__(self, shell: TargetShell):
        super().__init__("/", shell=shell)
        self.cfg = Config()
        self._stale = True

    # The tree is built on first use: a one-shot `restoreconfig` or `sessions`
    # never needs it, and building it costs a snapshot.
    def _ensure(self) -> None:
        if self._stale:
            self._stale = False
            self._build()

    def get_child(self, name):
        self._ensure()
        return super().get_child(name)

    @property
    def children(self):
        self._ensure()
        return super()._list_children()

    def _build(self) -> None:
        try:
            self.cfg = self.manager.state(attributes=False)
        except TargetError as e:
            self.shell.log.warning(str(e))
            self.cfg = Config()
        for child in list(self._children):
            self.remove_child(child)
        UIBackstores(self)
        UIISCSI(self)
        for name in sorted({f for f, _ in self.cfg.fabric_targets}):
            UIFabric(name, self)

    def refresh(self) -> None:
        """Rebuild the tree from configfs and keep the shell where it was."""
        if getattr(self.shell, "oneshot", False):
            self._stale = True          # nothing runs after this command
            return
        here = self.shell._current_node.path if self.shell._current_node is not None else "/"
        self._stale = True
        self._ensure()
        node = self
        for part in [p for p in here.split("/") if p]:
            try:
                node = node.get_child(part)
            except ValueError:
                break
        self.shell._current_node = node

    def ui_command_saveconfig(self, savefile=None):
        '''
        Saves the running configuration to savefile (default: the manager's
        save file, /etc/target/saveconfig.json unless overridden). The file is
        replaced atomically and is readable by root only (it holds CHAP secrets).
        '''
        try:
            self.manager.max_backup_files = int(self.shell.prefs["max_backup_files"])
            path = self.manager.save(savefile)
        except (TargetError, OSError) as e:
            self.fail(e if isinstance(e, TargetError) else TargetError(f"cannot save: {e}"))
        self.shell.log.info(f"Configuration saved to {path}")

    def ui_command_restoreconfig(self, savefile=None, clear_existing="false", target=None, storage_object=None,
                                 dry_run="false"):
        '''
        Restores savefile (default: the save file). As targetcli, without
        clear_existing=true it is a merge: what the file has and the running
        tree lacks is made, objects that already run are kept as they are
        (each one is named), nothing is removed. With clear_existing=true the
        running tree becomes the file, changing only what differs: restoring
        the file already in force drops no session. target=WWN and
        storage_object=NAME restore only that target or storage object.
        If a step fails, the steps done so far are undone.
        '''
        warnings: list[str] = []
        dry = validate.boolean(dry_run, "dry_run")
        try:
            steps = self.manager.restore(savefile, warnings, dry_run=dry,
                                         clear_existing=validate.boolean(clear_existing, "clear_existing"),
                                         target=target, storage_object=storage_object)
        except TargetError as e:
            self.fail(e)
        for w in warnings:
            self.shell.log.warning(w)
        self.refresh()
        if dry:
            for s in steps:
                self.shell.con.display(s.describe())
        self.shell.log.info(f"Configuration restored from {savefile or self.manager.save_file} "
                            f"({len(steps)} change{'s' if len(steps) != 1 else ''})")

    def ui_command_clearconfig(self, confirm=None):
        '''
        Removes every target and storage object. Needs confirm=true.
        '''
        if not validate.boolean(confirm or "false", "confirm"):
            self.fail(ValidationError("clearconfig removes everything: run it with confirm=true"))
        warnings: list[str] = []
        try:
            steps = self.manager.clear(warnings)
        except TargetError as e:
            self.fail(e)
        for w in warnings:
            self.shell.log.warning(w)
        self.refresh()
        self.shell.log.info(f"All configuration cleared ({len(steps)} steps)")

    def ui_command_sessions(self, action="list", sid=None):
        '''
        Lists the iSCSI sessions logged in (explicit ACLs and demo mode).
        action is list or detail; sid limits the output to one session.
        '''
        found = sessions_mod.list_sessions(self.manager.root)
        if sid is not None:
            found = [s for s in found if str(s.sid) == str(sid)]
        if self.shell.json_output:
            import json
            self.shell.con.raw_write(json.dumps([s.to_dict() for s in found], indent=2) + "\n")
            return
        if not found:
            self.shell.con.display("(no open sessions)")
        for s in found:
            kind = "demo-mode" if s.dynamic else "acl"
            self.shell.con.display(f"{s.initiator} -> {s.target} tpg{s.tpg} [{kind}] "
                                   f"sid {s.sid if s.sid is not None else '-'} {s.state}")
            if action == "detail":
                for c in s.connections:
                    self.shell.con.display(f"    cid {c.cid} {c.state} {c.address} {c.transport}")


    def ui_command_importconfig(self, file, format="auto", dry_run="false"):
        '''
        Adds the targets of an IET ietd.conf (format=ietd) or tgt targets.conf
        (format=tgt) to the running configuration. Every line LIO cannot
        express is listed with its line number; nothing is dropped silently.
        dry_run=true only lists the findings and the changes.
        '''
        from . import ietd, tgtconf
        try:
            fmt = format
            if fmt == "auto":
                text = open(file).read()
                fmt = "tgt" if "<target" in text.lower() else "ietd"
            imported = (ietd if fmt == "ietd" else tgtconf).load(file) if fmt in ("ietd", "tgt") else None
            if imported is None:
                raise ValidationError(f"format {format!r} is not auto, ietd or tgt")
        except OSError as e:
            self.fail(NotFoundError(f"{file}: {e.strerror}"))
        except TargetError as e:
            self.fail(e)
        for f in imported.findings:
            self.shell.con.display(str(f))
        new = imported.config

        def merge(cfg: Config):
            for key, so in new.storage_objects.items():
                if key in cfg.storage_objects:
                    raise ValidationError(f"storage object {so.path} already exists")
                cfg.storage_objects[key] = so
            for wwn, t in new.targets.items():
                if wwn in cfg.targets:
                    raise ValidationError(f"target {wwn} already exists")
                cfg.targets[wwn] = t
            if new.discovery.enable:
                cfg.discovery = new.discovery
        if validate.boolean(dry_run, "dry_run"):
            try:
                with self.manager.locked():
                    current = self.manager.state(attributes=False)
                    desired = current.copy()
                    merge(desired)
                    for s in self.manager.apply(desired, current, dry_run=True):
                        self.shell.con.display(s.describe())
            except TargetError as e:
                self.fail(e)
            return
        self.change(merge, f"Imported {len(new.targets)} target(s) from {file} "
                           f"({len(imported.findings)} finding(s), {len(imported.errors())} not imported)")

    def ui_command_version(self):
        '''Shows the iscsikit version.'''
        from iscsikit import __version__
        self.shell.con.display(f"iscsikit-target {__version__}")


# ---- backstores ------------------------------------------------------------------

class UIBackstore(UINode):
    def __init__(self, plugin: str, parent, name: str | None = None):
        super().__init__(name or plugin, parent)
        self.plugin = plugin
        for so in sorted(self.config.storage_objects.values(), key=lambda s: s.name):
            if so.plugin == plugin and self.owns(so):
                UIStorageObject(so, self)

    def owns(self, so: StorageObject) -> bool:
        return True

    def summary(self):
        return f"Storage Objects: {len(self.children)}", None

    def _create(self, so: StorageObject, block_size=None, made_file: str | None = None):
        self.op(ops.create_so, so, block_size, made_file)

    def ui_command_delete(self, name, save=None):
        '''
        Deletes the storage object name, and every LUN and mapped LUN that
        exports it.
        '''
        def remove(cfg: Config):
            key = (self.plugin, name)
            if key not in cfg.storage_objects:
                raise NotFoundError(f"no storage object {self.plugin}/{name}")
            cfg.drop_so(key)
        self.change(remove, f"Deleted storage object {name}.")
        if save and validate.boolean(save, "save"):
            self.get_root().ui_command_saveconfig()

    def ui_complete_delete(self, parameters, text, current_param):
        if current_param == "name":
            names = [c.name for c in self.children if c.name.startswith(text)]
            return [n + " " for n in names] if len(names) == 1 else names
        return []


def _add_backstore_commands():
    def fileio_create(self, name, file_or_dev, size=None, write_back="true", sparse="true", wwn=None,
                      block_size=None):
        '''
        Creates a fileio storage object backed by file_or_dev. A missing file
        is created with size (sparse unless sparse=false). write_back=true is
        IET's IOMode=wb; write_back=false is write-through (IOMode=wt).
        block_size is 512 (default), 1024, 2048 or 4096.
        '''
        self.op(ops.fileio_create, name, file_or_dev, size, write_back, sparse, wwn, block_size)

    def block_create(self, name, dev, readonly="false", wwn=None, exclusive="true", block_size=None):
        '''
        Creates a block (iblock) storage object on the block device dev.
        readonly=true exports it read-only (IET's IOMode=ro).
        '''
        self.op(ops.block_create, name, dev, readonly, wwn, exclusive, block_size)

    def ramdisk_create(self, name, size, nullio="false", wwn=None, block_size=None):
        '''
        Creates a ramdisk storage object of size bytes (K/M/G suffixes).
        nullio=true discards writes and reads zeros.
        '''
        self.op(ops.ramdisk_create, name, size, nullio, wwn, block_size)

    def pscsi_create(self, name, dev):
        '''Creates a pscsi (passthrough) storage object for dev (a path or H:C:T:L).'''
        self._create(StorageObject("pscsi", name, dev=dev))

    def complete_path(self, parameters, text, current_param):
        if current_param in ("file_or_dev", "dev"):
            matches = glob.glob(text + "*") if text.startswith("/") else []
            out = [m + ("/" if os.path.isdir(m) else "") for m in matches]
            return [out[0] + ("" if out[0].endswith("/") else " ")] if len(out) == 1 else out
        if current_param in ("write_back", "sparse", "readonly", "nullio", "exclusive"):
            return [v for v in ("true", "false") if v.startswith(text)]
        if current_param == "block_size":
            return [str(b) for b in validate.BLOCK_SIZES if str(b).startswith(text)]
        return []

    for plugin, fn in (("fileio", fileio_create), ("block", block_create), ("ramdisk", ramdisk_create),
                       ("pscsi", pscsi_create)):
        cls = type(f"UI{plugin.capitalize()}Backstore", (UIBackstore,),
                   {"ui_command_create": fn, "ui_complete_create": complete_path})
        _BACKSTORE_CLASSES[plugin] = cls


_BACKSTORE_CLASSES: dict[str, type] = {}
_add_backstore_commands()


class UIUserBackstore(UIBackstore):
    """/backstores/user:<handler> (TCMU); the handler daemon (tcmu-runner) serves the I/O."""

    def __init__(self, handler: str, parent):
        self.handler = handler
        super().__init__("user", parent, name=f"user:{handler}")

    def owns(self, so):
        return (so.config or "").split("/", 1)[0] == self.handler

    def ui_command_create(self, name, size, cfgstring, wwn=None, hw_max_sectors=None, control=None):
        '''
        Creates a user-backed (TCMU) storage object of size bytes; cfgstring
        is the handler's configuration (without the leading handler name).
        '''
        try:
            so = StorageObject("user", name, size=validate.size(size), wwn=wwn,
                               config=f"{self.handler}/{cfgstring}", hw_max_sectors=hw_max_sectors,
                               control=control)
        except TargetError as e:
            self.fail(e)
        self._create(so)


class UIBackstores(UINode):
    def __init__(self, parent):
        super().__init__("backstores", parent)
        for plugin in ("block", "fileio", "pscsi", "ramdisk"):
            _BACKSTORE_CLASSES[plugin](plugin, self)
        for h in listing.tcmu_handlers(self.config):
            UIUserBackstore(h, self)


class UIStorageObject(UINode):
    def __init__(self, so: StorageObject, parent):
        super().__init__(so.name, parent)
        self.so = so
        for name in SO_ATTRIBUTES:
            self.define_config_group_param("attribute", name, "string")
        if so.plugin != "pscsi":       # pscsi passes the device's own ALUA through
            UIALUAGroups(self)

    def summary(self):
        return listing.so_summary(self.so)

    def _rtslib(self):
        from rtslib.tcm import so_mapping
        return so_mapping[self.so.plugin](self.so.name, index=self.so.hba_index)

    def ui_getgroup_attribute(self, name):
        try:
            return self._rtslib().get_attribute(name)
        except Exception as e:  # rtslib raises its own error for a missing file
            return f"<{e}>"

    def ui_setgroup_attribute(self, name, value):
        self.set_group("attribute", {name: value})

    batch_groups = ("attribute",)

    def set_group(self, group, values):
        try:
            values = {k: validate.so_attribute(k, v, self.so.path) for k, v in values.items()}
        except TargetError as e:
            self.fail(e)
        if "block_size" in values:
            # The planner treats block size as fixed at creation; the kernel
            # allows a change only while nothing exports the object.
            if list(self.config.luns_using(self.so.key)):
                self.fail(ValidationError(f"{self.so.path} is exported: its block size cannot change now"))
            try:
                with self.manager.locked():
                    self._rtslib().set_attribute("block_size", values.pop("block_size"))
            except Exception as e:
                self.fail(TargetError(f"cannot set block_size: {e}"))

        def edit(cfg: Config):
            cfg.storage_objects[self.so.key].attributes.update(values)
        self.change(edit)

    def ui_command_info(self):
        '''Shows the storage object's settings.'''
        d = saveconfig.so_to_dict(self.so)
        d.pop("attributes", None)
        d.pop("alua_tpgs", None)
        for k in sorted(d):
            self.shell.con.display(f"{k}: {d[k]}")

    def to_json(self):
        d = saveconfig.so_to_dict(self.so)
        d.pop("alua_tpgs", None)
        d.update(path=self.path, status=self.so.status)
        return d


class UIALUAGroups(UINode):
    """/backstores/<type>/<name>/alua: the object's ALUA target port groups (target/alua.py)."""

    def __init__(self, parent: UIStorageObject):
        super().__init__("alua", parent)
        self.so = parent.so
        # what `ls` shows comes from the file listing.tree reads too, so both draw the same
        for name, state in alua.access_states(self.manager.root, self.so):
            UIALUAGroup(name, state, self)

    def summary(self):
        return listing.count("ALUA Groups", len(self.children))

    def _alua(self, fn, *args, message=None):
        try:
            with self.manager.locked():
                fn(self.manager.root, self.so, *args)
        except TargetError as e:
            self.fail(e)
        self.get_root().refresh()
        if message:
            self.shell.log.info(message)

    def ui_command_create(self, name, tag):
        '''
        Creates the ALUA target port group name with id tag (1-65535), as
        targetcli's alua create; its LUNs are then moved in with
        "set alua alua_tg_pt_gp_name=name" on each TPG LUN.
        '''
        self._alua(alua.create, name, tag, message=f"Created ALUA TG PT Group {name}.")

    def ui_command_delete(self, name):
        '''Deletes the ALUA target port group name; its LUNs go back to default_tg_pt_gp.'''
        self._alua(alua.delete, name, message=f"Deleted ALUA TG PT Group {name}.")

    def ui_complete_delete(self, parameters, text, current_param):
        names = [c.name for c in self.children if c.name.startswith(text) and c.name != alua.DEFAULT_GROUP]
        return [n + " " for n in names] if len(names) == 1 else names


class UIALUAGroup(UINode):
    batch_groups = ("alua",)

    def __init__(self, name: str, state, parent: UIALUAGroups):
        super().__init__(name, parent)
        self.state, self.so = state, parent.so
        for name in sorted(alua.SETTABLE):
            self.define_config_group_param("alua", name, "string")

    def summary(self):
        return listing.alua_group_summary(self.state)

    def ui_getgroup_alua(self, name):
        try:
            return alua.get(self.manager.root, self.so, self.name, name)
        except (TargetError, OSError) as e:
            return f"<{e}>"

    def ui_setgroup_alua(self, name, value):
        self.set_group("alua", {name: value})

    def set_group(self, group, values):
        self.parent._alua(alua.set_values, self.name, values)

    def to_json(self):
        try:
            group = {g["name"]: g for g in alua.groups(self.manager.root, self.so)}.get(self.name, {})
        except TargetError:
            group = {}
        return {"path": self.path, "name": self.name, **group}


# ---- iSCSI -------------------------------------------------------------------------

class UIISCSI(UINode):
    batch_groups = ("discovery_auth",)

    def __init__(self, parent):
        super().__init__("iscsi", parent)
        for f in validate.CHAP_FIELDS:
            self.define_config_group_param("discovery_auth", f, "string")
        self.define_config_group_param("discovery_auth", "enable", "bool")
        for t in sorted(self.config.targets.values(), key=lambda t: t.wwn):
            UITarget(t, self)

    def summary(self):
        return f"Targets: {len(self.children)}", None

    def ui_command_create(self, wwn=None):
        '''
        Creates an iSCSI target named wwn (iqn./naa./eui.; generated when
        omitted) with TPG 1, authentication off (as targetcli), a default
        portal when auto_add_default_portal is set, enabled when
        auto_enable_tpgt is set.
        '''
        self.op(ops.iscsi_create, wwn)

    def ui_command_delete(self, wwn):
        '''Deletes the target wwn with all its TPGs, LUNs, ACLs and portals.'''
        self.op(ops.iscsi_delete, wwn)

    def ui_complete_delete(self, parameters, text, current_param):
        names = [c.name for c in self.children if c.name.startswith(text)]
        return [n + " " for n in names] if len(names) == 1 else names

    def ui_getgroup_discovery_auth(self, name):
        d = self.config.discovery
        if name == "enable":
            return d.enable
        return "********" if "password" in name and getattr(d.chap, name) else getattr(d.chap, name)

    def ui_setgroup_discovery_auth(self, name, value):
        self.set_group("discovery_auth", {name: value})

    def set_group(self, group, values):
        def edit(cfg: Config):
            d = cfg.discovery
            for k, v in values.items():
                if k == "enable":
                    d.enable = validate.boolean(v, "discovery_auth enable")
                else:
                    setattr(d.chap, k, validate.chap_value(v, f"discovery CHAP {k}"))
        self.change(edit)

    def to_json(self):
        d = super().to_json()
        d["discovery_auth"] = {"enable": self.config.discovery.enable, "userid": self.config.discovery.chap.userid,
                               "mutual_userid": self.config.discovery.chap.mutual_userid}
        return d


class UITarget(UINode):
    def __init__(self, t: Target, parent):
        super().__init__(t.wwn, parent)
        self.t = t
        for tpg in sorted(t.tpgs.values(), key=lambda x: x.tag):
            UITPG(t, tpg, self)

    def summary(self):
        return f"TPGs: {len(self.children)}", None

    def ui_command_create(self, tag=None):
        '''Creates a TPG with tag (the lowest free one when omitted).'''
        def add(cfg: Config):
            t = cfg.targets[self.t.wwn]
            n = validate.tpg_tag(tag) if tag is not None else min(set(range(1, len(t.tpgs) + 2)) - set(t.tpgs))
            if n in t.tpgs:
                raise ValidationError(f"tpg{n} already exists")
            t.tpgs[n] = TPG(tag=n, enable=False, attributes={"authentication": 0})
            return n
        self.change(add, "Created TPG.")

    def ui_command_delete(self, tag):
        '''Deletes TPG tag with its LUNs, ACLs and portals.'''
        def remove(cfg: Config):
            t = cfg.targets[self.t.wwn]
            n = validate.tpg_tag(tag)
            if n not in t.tpgs:
                raise NotFoundError(f"no tpg{n}")
            del t.tpgs[n]
        self.change(remove, f"Deleted TPG {tag}.")

    def to_json(self):
        d = saveconfig.target_to_dict(self.t, secrets=False)
        d["path"] = self.path
        return d


class UITPG(UINode):
    batch_groups = ("attribute", "parameter", "auth")

    def __init__(self, t: Target, tpg: TPG, parent):
        super().__init__(f"tpg{tpg.tag}", parent)
        self.t, self.tpg = t, tpg
        for name in validate.TPG_ATTRIBUTES:
            self.define_config_group_param("attribute", name, "number")
        for name in validate.TPG_PARAMETERS:
            self.define_config_group_param("parameter", name, "string")
        for f in validate.CHAP_FIELDS:
            self.define_config_group_param("auth", f, "string")
        UILUNs(self)
        UIACLs(self)
        UIPortals(self)

    def summary(self):
        return listing.tpg_summary(self.tpg)

    def _rts(self):
        from rtslib import FabricModule, Target as RTarget, TPG as RTPG
        return RTPG(RTarget(FabricModule("iscsi"), self.t.wwn, "lookup"), self.tpg.tag, "lookup")

    def _edit_tpg(self, fn, message=None):
        def edit(cfg: Config):
            return fn(cfg, cfg.targets[self.t.wwn].tpgs[self.tpg.tag])
        return self.change(edit, message)

    def ui_command_enable(self):
        '''Enables the TPG: its portals accept logins.'''
        self._edit_tpg(lambda cfg, tpg: setattr(tpg, "enable", True), "The TPGT has been enabled.")

    def ui_command_disable(self):
        '''Disables the TPG: new logins are refused.'''
        self._edit_tpg(lambda cfg, tpg: setattr(tpg, "enable", False), "The TPGT has been disabled.")

    def ui_getgroup_attribute(self, name):
        try:
            return self._rts().get_attribute(name)
        except Exception as e:
            return f"<{e}>"

    def ui_getgroup_parameter(self, name):
        try:
            return self._rts().get_parameter(name)
        except Exception as e:
            return f"<{e}>"

    def ui_getgroup_auth(self, name):
        v = getattr(self.tpg.chap, name)
        return "********" if "password" in name and v else v

    def ui_setgroup_attribute(self, name, value):
        self.set_group("attribute", {name: value})

    def ui_setgroup_parameter(self, name, value):
        self.set_group("parameter", {name: value})

    def ui_setgroup_auth(self, name, value):
        self.set_group("auth", {name: value})

    def set_group(self, group, values):
        where = f"{self.t.wwn} tpg{self.tpg.tag}"

        def edit(cfg, tpg):
            for k, v in values.items():
                if group == "attribute":
                    tpg.attributes[k] = validate.tpg_attribute(k, v, where)
                elif group == "parameter":
                    tpg.parameters[k] = validate.tpg_parameter(k, v, where)
                else:
                    setattr(tpg.chap, k, validate.chap_value(v, f"{where} CHAP {k}"))
        self._edit_tpg(edit)

    def to_json(self):
        d = saveconfig.tpg_to_dict(self.tpg, secrets=False)
        d["path"] = self.path
        return d


class UILUNs(UINode):
    def __init__(self, parent: UITPG):
        super().__init__("luns", parent)
        self.tpgnode = parent
        for lun in sorted(parent.tpg.luns.values(), key=lambda l: l.index):
            UILUN(lun, self)

    def summary(self):
        return f"LUNs: {len(self.children)}", None

    def ui_command_create(self, storage_object, lun=None, add_mapped_luns=None):
        '''
        Exports storage_object (/backstores/<plugin>/<name>, or a file or block
        device path, which gets a storage object named after it) as LUN lun
        (the lowest free index when omitted). With add_mapped_luns (default:
        the auto_add_mapped_luns preference) every ACL of the TPG gets it too.
        '''
        t = self.tpgnode
        self.op(ops.lun_create, t.t.wwn, t.tpg.tag, storage_object, lun, add_mapped_luns)

    def ui_complete_create(self, parameters, text, current_param):
        if current_param == "storage_object":
            paths = [so.path for so in self.config.storage_objects.values() if so.path.startswith(text)]
            return [paths[0] + " "] if len(paths) == 1 else paths
        return []

    def ui_command_delete(self, lun):
        '''Removes LUN lun and the mapped LUNs pointing at it.'''
        self.op(ops.lun_delete, self.tpgnode.t.wwn, self.tpgnode.tpg.tag, lun)


class UILUN(UINode):
    batch_groups = ("alua",)

    def __init__(self, lun: LUN, parent):
        super().__init__(f"lun{lun.index}", parent)
        self.lun = lun
        self.define_config_group_param("alua", "alua_tg_pt_gp_name", "string")

    def _where(self):
        t = self.parent.tpgnode
        return t.t.wwn, t.tpg.tag

    def ui_getgroup_alua(self, name):
        wwn, tag = self._where()
        try:
            return alua.lun_group(self.manager.root, wwn, tag, self.lun.index)
        except TargetError as e:
            return f"<{e}>"

    def ui_setgroup_alua(self, name, value):
        self.set_group("alua", {name: value})

    def set_group(self, group, values):
        """`set alua alua_tg_pt_gp_name=G`: the LUN joins group G of its storage object."""
        wwn, tag = self._where()
        so = self.config.storage_objects.get(self.lun.so_key)
        if so is None:
            self.fail(NotFoundError(f"no storage object {self.lun.storage_object}"))
        try:
            with self.manager.locked():
                alua.move_lun(self.manager.root, wwn, tag, self.lun.index, so, values["alua_tg_pt_gp_name"])
        except TargetError as e:
            self.fail(e)
        self.get_root().refresh()

    def summary(self):
        return listing.lun_summary(self.config, self.lun)

    def to_json(self):
        return {"path": self.path, "index": self.lun.index, "storage_object": self.lun.storage_object,
                "alias": self.lun.alias, "alua_tg_pt_gp_name": self.lun.alua_tg_pt_gp_name}


class UIPortals(UINode):
    def __init__(self, parent: UITPG):
        super().__init__("portals", parent)
        self.tpgnode = parent
        for p in sorted(parent.tpg.portals.values(), key=lambda p: p.dirname):
            UIPortal(p, self)

    def summary(self):
        return f"Portals: {len(self.children)}", None

    def ui_command_create(self, ip_address=None, ip_port=None):
        '''
        Adds a portal listening on ip_address (IPv4, IPv6, 0.0.0.0 or ::0 for
        all; default from the default_portal_ip preference) and ip_port (3260).
        '''
        self.op(ops.portal_create, self.tpgnode.t.wwn, self.tpgnode.tpg.tag, ip_address, ip_port)

    def ui_command_delete(self, ip_address, ip_port):
        '''Removes the portal ip_address:ip_port.'''
        self.op(ops.portal_delete, self.tpgnode.t.wwn, self.tpgnode.tpg.tag, ip_address, ip_port)


class UIPortal(UINode):
    def __init__(self, p: Portal, parent):
        super().__init__(p.dirname, parent)
        self.p = p

    def summary(self):
        return listing.portal_summary(self.p)

    def to_json(self):
        return {"path": self.path, "ip_address": self.p.ip_address, "port": self.p.port,
                "iser": self.p.iser, "offload": self.p.offload}

    def _flag(self, name, value):
        v = validate.boolean(value, name)
        tpgnode = self.parent.tpgnode

        def edit(cfg, tpg):
            setattr(tpg.portals[self.p.key], name, v)
        tpgnode._edit_tpg(edit, f"{name} is now {'enabled' if v else 'disabled'}.")

    def ui_command_enable_iser(self, boolean):
        '''Turns iSER on or off on this portal.'''
        self._flag("iser", boolean)

    def ui_command_enable_offload(self, boolean):
        '''Turns Chelsio (cxgbit) offload on or off on this portal.'''
        self._flag("offload", boolean)


class UIACLs(UINode):
    def __init__(self, parent: UITPG):
        super().__init__("acls", parent)
        self.tpgnode = parent
        for acl in sorted(parent.tpg.node_acls.values(), key=lambda a: a.node_wwn):
            UIACL(acl, self)

    def summary(self):
        return f"ACLs: {len(self.children)}", None

    def ui_command_create(self, wwn, add_mapped_luns=None):
        '''
        Adds an ACL for the initiator wwn. With add_mapped_luns (default: the
        auto_add_mapped_luns preference) it sees every LUN of the TPG at the
        same LUN number.
        '''
        self.op(ops.acl_create, self.tpgnode.t.wwn, self.tpgnode.tpg.tag, wwn, add_mapped_luns)

    def ui_command_delete(self, wwn):
        '''Removes the ACL of initiator wwn.'''
        self.op(ops.acl_delete, self.tpgnode.t.wwn, self.tpgnode.tpg.tag, wwn)

    def ui_complete_delete(self, parameters, text, current_param):
        names = [c.name for c in self.children if c.name.startswith(text)]
        return [n + " " for n in names] if len(names) == 1 else names

    def ui_command_tag(self, wwn_or_tag, new_tag):
        '''
        Gives the ACLs named by wwn_or_tag (an initiator name, or a tag some
        ACLs already carry) the tag new_tag (no '.'; it is kept in the ACL's
        configfs `tag` file and in saveconfig.json). If other ACLs already
        carry new_tag, the newly tagged ones adopt their settings (mapped
        LUNs, attributes, CHAP), as targetcli's tags do.
        '''
        if wwn_or_tag == new_tag:
            return
        if "." in new_tag or not new_tag.strip() or new_tag.strip() != new_tag:
            self.fail(ValidationError(f"tag {new_tag!r}: a tag has no '.' (initiator names have) and no spaces"))

        def edit(cfg, tpg):
            src = _tagged(tpg, wwn_or_tag)
            if not src:
                raise NotFoundError(f"no ACL or tag {wwn_or_tag}")
            peers = [a for a in tpg.node_acls.values() if a.tag == new_tag and a not in src]
            for acl in src:
                acl.tag = new_tag
                if peers:
                    model = peers[0]
                    acl.attributes = dict(model.attributes)
                    acl.chap = copy.deepcopy(model.chap)
                    acl.tcq_depth = model.tcq_depth
                    acl.mapped_luns = {i: MappedLUN(m.index, m.tpg_lun, m.write_protect)
                                       for i, m in model.mapped_luns.items()}
            return len(src)
        n = self.tpgnode._edit_tpg(edit)
        self.shell.log.info(f"Tagged {n} ACL{'s' if n != 1 else ''} {new_tag}.")

    def ui_command_untag(self, wwn_or_tag):
        '''Removes the tag from the ACLs named by wwn_or_tag; they keep their settings.'''
        def edit(cfg, tpg):
            src = _tagged(tpg, wwn_or_tag)
            if not src:
                raise NotFoundError(f"no ACL or tag {wwn_or_tag}")
            for acl in src:
                acl.tag = None
            return len(src)
        n = self.tpgnode._edit_tpg(edit)
        self.shell.log.info(f"Untagged {n} ACL{'s' if n != 1 else ''}.")

    def ui_complete_tag(self, parameters, text, current_param):
        if current_param != "wwn_or_tag":
            return []
        names = sorted({c.name for c in self.children} | {c.acl.tag for c in self.children if c.acl.tag})
        names = [n for n in names if n.startswith(text)]
        return [n + " " for n in names] if len(names) == 1 else names

    ui_complete_untag = ui_complete_tag


def _tagged(tpg: TPG, wwn_or_tag: str) -> list:
    """The ACLs a tag command names: the one with that initiator name, or all carrying that tag."""
    return [a for a in tpg.node_acls.values() if a.node_wwn == wwn_or_tag.lower() or a.tag == wwn_or_tag]


class UIACL(UINode):
    batch_groups = ("attribute", "auth")

    def __init__(self, acl: NodeACL, parent: UIACLs):
        super().__init__(acl.node_wwn, parent)
        self.acl = acl
        self.tpgnode = parent.tpgnode
        for name in validate.ACL_ATTRIBUTES:
            self.define_config_group_param("attribute", name, "string")
        for f in validate.CHAP_FIELDS:
            self.define_config_group_param("auth", f, "string")
        for m in sorted(acl.mapped_luns.values(), key=lambda m: m.index):
            UIMappedLUN(m, self)

    def summary(self):
        return listing.acl_summary(self.acl)

    def to_json(self):
        d = {"path": self.path, "node_wwn": self.acl.node_wwn, "tag": self.acl.tag,
             "cmdsn_depth": self.acl.tcq_depth,
             "mapped_luns": [{"index": m.index, "tpg_lun": m.tpg_lun, "write_protect": m.write_protect}
                             for m in sorted(self.acl.mapped_luns.values(), key=lambda m: m.index)]}
        for f in validate.CHAP_FIELDS:
            v = getattr(self.acl.chap, f)
            if v:
                d[f"chap_{f}"] = "********" if "password" in f else v
        return d

    def _edit_acl(self, fn, message=None):
        return self.tpgnode._edit_tpg(lambda cfg, tpg: fn(tpg, tpg.node_acls[self.acl.node_wwn]), message)

    def ui_command_create(self, mapped_lun, tpg_lun_or_backstore, write_protect="false"):
        '''
        Lets this initiator see TPG LUN tpg_lun_or_backstore (a LUN number or
        the storage object it exports) as LUN mapped_lun; write_protect=true
        makes it read-only for this initiator only.
        '''
        try:
            m_index = validate.lun_index(mapped_lun, "mapped LUN")
            wp = validate.boolean(write_protect, "write_protect")
        except TargetError as e:
            self.fail(e)

        def edit(tpg, acl):
            ref = str(tpg_lun_or_backstore)
            if ref.startswith("/backstores/"):
                hits = [l.index for l in tpg.luns.values() if l.storage_object == ref]
                if not hits:
                    raise NotFoundError(f"{ref} is not exported by this TPG")
                n = hits[0]
            else:
                n = validate.lun_index(ref.removeprefix("lun"), "TPG LUN")
            if n not in tpg.luns:
                raise NotFoundError(f"no TPG LUN {n}")
            if m_index in acl.mapped_luns:
                raise ValidationError(f"mapped_lun{m_index} already exists")
            acl.mapped_luns[m_index] = MappedLUN(m_index, n, write_protect=wp)
        self._edit_acl(edit, f"Created Mapped LUN {m_index}.")

    def ui_command_delete(self, mapped_lun):
        '''Removes mapped LUN mapped_lun.'''
        def edit(tpg, acl):
            n = validate.lun_index(mapped_lun, "mapped LUN")
            if n not in acl.mapped_luns:
                raise NotFoundError(f"no mapped_lun{n}")
            del acl.mapped_luns[n]
        self._edit_acl(edit, f"Deleted Mapped LUN {mapped_lun}.")

    def ui_getgroup_attribute(self, name):
        try:
            from rtslib import NodeACL as RACL
            return RACL(self.tpgnode._rts(), self.acl.node_wwn, "lookup").get_attribute(name)
        except Exception as e:
            return f"<{e}>"

    def ui_getgroup_auth(self, name):
        v = getattr(self.acl.chap, name)
        return "********" if "password" in name and v else v

    def ui_setgroup_attribute(self, name, value):
        self.set_group("attribute", {name: value})

    def ui_setgroup_auth(self, name, value):
        self.set_group("auth", {name: value})

    def set_group(self, group, values):
        where = f"ACL {self.acl.node_wwn}"

        def edit(tpg, acl):
            for k, v in values.items():
                if group == "attribute":
                    acl.attributes[k] = validate.acl_attribute(k, v, where)
                else:
                    setattr(acl.chap, k, validate.chap_value(v, f"{where} CHAP {k}"))
        self._edit_acl(edit)


class UIMappedLUN(UINode):
    def __init__(self, m: MappedLUN, parent: UIACL):
        super().__init__(f"mapped_lun{m.index}", parent)
        self.m = m

    def summary(self):
        return listing.mapped_lun_summary(self.parent.tpgnode.tpg, self.m)

    def ui_command_write_protect(self, boolean):
        '''Makes this mapped LUN read-only (true) or writable (false) for its initiator.'''
        v = validate.boolean(boolean, "write_protect")
        acl_node = self.parent
        acl_node._edit_acl(lambda tpg, acl: setattr(acl.mapped_luns[self.m.index], "write_protect", v),
                           f"Write protect is now {'on' if v else 'off'}.")

    def to_json(self):
        return {"path": self.path, "index": self.m.index, "tpg_lun": self.m.tpg_lun,
                "write_protect": self.m.write_protect}



# ---- other fabrics (loopback, vhost, FC, SRP ...) ------------------------------------
#
# Shown so that what a save keeps is visible (targetcli shows every fabric that
# has targets); iscsikit builds only iSCSI targets from the shell.

class UIFabric(UINode):
    def __init__(self, name: str, parent):
        super().__init__(name, parent)
        self.fabric = fabrics.FABRICS[name]
        for (f, wwn), t in sorted(self.config.fabric_targets.items()):
            if f == name:
                UIFabricTarget(t, self)

    def summary(self):
        return f"Targets: {len(self.children)}", None

    def info(self):
        fab = self.fabric
        return {"fabric": fab.name, "configfs_path": f"{self.manager.root}/{fab.dir}",
                "wwn_types": ", ".join(fab.wwn_types), "features": ", ".join(sorted(fab.features)) or "-",
                "kernel_module": " or ".join(fab.modules),
                "restore_makes_and_deletes": fab.makes}


class UIFabricTarget(UINode):
    def __init__(self, t: Target, parent):
        super().__init__(t.wwn, parent)
        self.t = t
        for tpg in sorted(t.tpgs.values(), key=lambda x: x.tag):
            UIFabricTPG(tpg, self)

    def summary(self):
        return f"TPGs: {len(self.children)}", None

    def to_json(self):
        d = saveconfig.target_to_dict(self.t, secrets=False)
        d["path"] = self.path
        return d


class UIFabricTPG(UINode):
    def __init__(self, tpg: TPG, parent):
        super().__init__(f"tpg{tpg.tag}", parent)
        self.tpg = tpg
        luns = UINode("luns", self)
        luns.summary = lambda: (f"LUNs: {len(tpg.luns)}", None)
        for lun in sorted(tpg.luns.values(), key=lambda l: l.index):
            UILUN(lun, luns)
        if tpg.node_acls:
            acls = UINode("acls", self)
            acls.summary = lambda: (f"ACLs: {len(tpg.node_acls)}", None)
            for acl in sorted(tpg.node_acls.values(), key=lambda a: a.node_wwn):
                node = UINode(acl.node_wwn, acls)
                node.summary = (lambda a=acl: (f"Mapped LUNs: {len(a.mapped_luns)}", None))

    def summary(self):
        return listing.fabric_tpg_summary(self.tpg)

    def to_json(self):
        d = saveconfig.tpg_to_dict(self.tpg, secrets=False)
        d.update(path=self.path, nexus=self.tpg.nexus)
        return d

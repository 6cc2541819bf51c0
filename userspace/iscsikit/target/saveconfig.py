"""targetcli's saveconfig.json, read and written with the key names rtslib uses.

The layout is rtslib 2.2.4's dump() (lio-facts.md §2.4): chap_* and
discovery_* key names (saveconfig.json(5) still documents the old plain
userid/password ones; we read those too, and say so).  A file we write
restores under Debian's rtslib 2.1.75 as well: `exclusive` is written for a
block storage object only when it is false, because older rtslib passes it to
a constructor that does not know it and skips the object.

Saving is atomic (temp file in the same directory, fsync, rename, fsync of
the directory) and the file is 0600 from its first byte: it holds CHAP
secrets.
"""

from __future__ import annotations

import os

from . import fabrics, validate
from .errors import NotFoundError, ValidationError
from .model import (
    PLUGIN_ALIASES, Chap, Config, Discovery, LUN, MappedLUN, NodeACL, Portal, StorageObject, Target, TPG,
)

def _path(p):
    """pathlib, imported when a file is read or written: not every one-shot command does."""
    from pathlib import Path
    return Path(p)


DEFAULT_SAVE_FILE = "/etc/target/saveconfig.json"
# targetcli's default for its max_backup_files preference (targetcli/ui_node.py)
MAX_BACKUP_FILES = 10
BACKUP_GLOB = "saveconfig-*json*"

_SO_KEYS = {"name", "plugin", "dev", "size", "wwn", "write_back", "aio", "readonly", "exclusive",
            "nullio", "config", "hw_max_sectors", "control", "attributes", "alua_tpgs"}
# written by old rtslib versions and dropped by rtslib's own restore
_SO_IGNORED = {"exists", "buffered_mode"}
_CHAP_KEYS = {f"chap_{f}": f for f in ("userid", "password", "mutual_userid", "mutual_password")}
# saveconfig.json(5)'s names, which rtslib silently ignores (lio-facts.md §2.3)
_OLD_CHAP_KEYS = {"userid": "userid", "password": "password",
                  "mutual_userid": "mutual_userid", "mutual_password": "mutual_password"}


def _expect(obj, kind, where):
    if not isinstance(obj, kind):
        raise ValidationError(f"{where}: expected a JSON {'object' if kind is dict else 'list'}")
    return obj


def _text(d: dict, key: str, where: str) -> str:
    value = d[key]
    if not isinstance(value, str):
        raise ValidationError(f"{where}: '{key}' must be a JSON string")
    return value


def _chap(d: dict, where: str, warnings: list) -> Chap:
    chap = Chap()
    for key, fld in _CHAP_KEYS.items():
        if d.get(key):
            setattr(chap, fld, str(d[key]))
    for key, fld in _OLD_CHAP_KEYS.items():
        if d.get(key) and not getattr(chap, fld):
            setattr(chap, fld, str(d[key]))
            warnings.append(f"{where}: old key '{key}' read as 'chap_{fld}'")
    return chap


def _unknown(d: dict, known: set, where: str, warnings: list) -> None:
    for key in sorted(set(d) - known):
        warnings.append(f"{where}: unknown key '{key}' ignored")


def from_dict(data: dict, warnings: list | None = None) -> Config:
    """Parse and validate a saveconfig dict; problems that lose nothing go to `warnings`."""
    warnings = warnings if warnings is not None else []
    _expect(data, dict, "saveconfig")
    cfg = Config()
    for i, d in enumerate(_expect(data.get("storage_objects", []), list, "storage_objects")):
        where = f"storage_objects[{i}]"
        _expect(d, dict, where)
        if "name" not in d or "plugin" not in d:
            raise ValidationError(f"{where}: needs 'name' and 'plugin'")
        plugin, name = _text(d, "plugin", where), _text(d, "name", where)
        where = f"{where} ({plugin}/{name})"
        _unknown(d, _SO_KEYS | _SO_IGNORED, where, warnings)
        plugin = PLUGIN_ALIASES.get(plugin, plugin)
        so = StorageObject(
            plugin=plugin, name=name, dev=d.get("dev"), size=d.get("size"), wwn=d.get("wwn") or None,
            write_back=validate.boolean(d.get("write_back", False), f"{where} write_back"),
            aio=validate.boolean(d.get("aio", False), f"{where} aio"),
            readonly=validate.boolean(d.get("readonly", False), f"{where} readonly"),
            exclusive=validate.boolean(d.get("exclusive", True), f"{where} exclusive"),
            nullio=validate.boolean(d.get("nullio", False), f"{where} nullio"),
            config=d.get("config"), hw_max_sectors=d.get("hw_max_sectors"), control=d.get("control") or None,
            attributes=dict(_expect(d.get("attributes", {}), dict, f"{where} attributes")),
            alua_tpgs=list(_expect(d.get("alua_tpgs", []), list, f"{where} alua_tpgs")),
        )
        if plugin == "block":
            so.size = None          # rtslib ignores it too: the device decides
        if so.key in cfg.storage_objects:
            raise ValidationError(f"{where}: duplicate storage object")
        cfg.storage_objects[so.key] = so

    for i, fm in enumerate(_expect(data.get("fabric_modules", []), list, "fabric_modules")):
        where = f"fabric_modules[{i}]"
        _expect(fm, dict, where)
        if fm.get("name") != "iscsi":
            warnings.append(f"{where}: fabric {fm.get('name')!r} is not managed here; skipped")
            continue
        _unknown(fm, {"name", "discovery_enable_auth", "discovery_userid", "discovery_password",
                      "discovery_mutual_userid", "discovery_mutual_password"}, where, warnings)
        cfg.discovery = Discovery(
            enable=validate.boolean(fm.get("discovery_enable_auth", False), f"{where} discovery_enable_auth"),
            chap=Chap(*(str(fm.get(f"discovery_{f}") or "") for f in validate.CHAP_FIELDS)))

    for i, t in enumerate(_expect(data.get("targets", []), list, "targets")):
        where = f"targets[{i}]"
        _expect(t, dict, where)
        if "wwn" not in t:
            raise ValidationError(f"{where}: needs 'wwn'")
        fabric = t.get("fabric", "iscsi")
        if not isinstance(fabric, str):
            raise ValidationError(f"{where}: 'fabric' must be a JSON string")
        fab = fabrics.get(fabric)       # an unknown fabric is an error: a save would lose it
        if fabric == "iscsi":
            wwn = validate.wwn(t["wwn"], f"{where} wwn")
            where = f"target {wwn}"
        else:
            wwn = fabrics.check_wwn(fab, t["wwn"], f"{where} wwn")
            where = f"{fabric} target {wwn}"
        _unknown(t, {"wwn", "fabric", "tpgs", "attributes", "parameters"}, where, warnings)
        if (wwn in cfg.targets) if fabric == "iscsi" else ((fabric, wwn) in cfg.fabric_targets):
            raise ValidationError(f"{where}: duplicate target")
        target = Target(wwn=wwn, fabric=fabric,
                        attributes=dict(_expect(t.get("attributes", {}), dict, f"{where} attributes")),
                        parameters={k: str(v) for k, v in
                                    _expect(t.get("parameters", {}), dict, f"{where} parameters").items()})
        for j, tp in enumerate(_expect(t.get("tpgs", []), list, f"{where} tpgs")):
            _expect(tp, dict, f"{where} tpgs[{j}]")
            tpg = _tpg(tp, f"{where} tpgs[{j}]", warnings, fab)
            if tpg.tag in target.tpgs:
                raise ValidationError(f"{where}: duplicate tpg{tpg.tag}")
            target.tpgs[tpg.tag] = tpg
        if fabric != "iscsi":
            cfg.fabric_targets[(fabric, wwn)] = target
            continue
        cfg.targets[wwn] = target
    cfg.check()
    return cfg


def _tpg(tp: dict, where: str, warnings: list, fab: fabrics.Fabric = fabrics.FABRICS["iscsi"]) -> TPG:
    tag = validate.tpg_tag(tp.get("tag", 1))
    where = where.rsplit(" tpgs[", 1)[0] + f" tpg{tag}"
    _unknown(tp, {"tag", "enable", "attributes", "parameters", "luns", "portals", "node_acls"}
             | set(_CHAP_KEYS) | set(_OLD_CHAP_KEYS), where, warnings)
    tpg = TPG(tag=tag, enable=validate.boolean(tp.get("enable", True), f"{where} enable"),
              attributes=dict(_expect(tp.get("attributes", {}), dict, f"{where} attributes")),
              parameters=dict(_expect(tp.get("parameters", {}), dict, f"{where} parameters")),
              chap=_chap(tp, where, warnings))
    for d in _expect(tp.get("luns", []), list, f"{where} luns"):
        _expect(d, dict, f"{where} luns")
        if "index" not in d or "storage_object" not in d:
            raise ValidationError(f"{where}: a LUN needs 'index' and 'storage_object'")
        lun = LUN(index=validate.lun_index(d["index"], f"{where} LUN index"), storage_object=str(d["storage_object"]),
                  alias=d.get("alias") or None, alua_tg_pt_gp_name=d.get("alua_tg_pt_gp_name", "default_tg_pt_gp"))
        lun.so_key  # noqa: B018 - raises on a malformed path
        if lun.index in tpg.luns:
            raise ValidationError(f"{where}: duplicate lun{lun.index}")
        tpg.luns[lun.index] = lun
    for d in _expect(tp.get("portals", []), list, f"{where} portals"):
        _expect(d, dict, f"{where} portals")
        if "ip_address" not in d:
            raise ValidationError(f"{where}: a portal needs 'ip_address'")
        p = Portal(ip_address=validate.portal_ip(d["ip_address"]), port=validate.portal_port(d.get("port", 3260)),
                   iser=validate.boolean(d.get("iser", False), f"{where} portal iser"),
                   offload=validate.boolean(d.get("offload", False), f"{where} portal offload"))
        if p.key in tpg.portals:
            raise ValidationError(f"{where}: duplicate portal {p.dirname}")
        tpg.portals[p.key] = p
    for d in _expect(tp.get("node_acls", []), list, f"{where} node_acls"):
        _expect(d, dict, f"{where} node_acls")
        if "node_wwn" not in d:
            raise ValidationError(f"{where}: a node ACL needs 'node_wwn'")
        node = (validate.wwn(d["node_wwn"], f"{where} initiator name") if fab.name == "iscsi"
                else fabrics.check_wwn(fab, d["node_wwn"], f"{where} initiator name"))
        wa = f"{where} acl {node}"
        _unknown(d, {"node_wwn", "attributes", "mapped_luns", "tag", "tcq_depth"}
                 | set(_CHAP_KEYS) | set(_OLD_CHAP_KEYS), wa, warnings)
        acl = NodeACL(node_wwn=node, attributes=dict(_expect(d.get("attributes", {}), dict, f"{wa} attributes")),
                      tag=d.get("tag") or None,
                      chap=_chap(d, wa, warnings), tcq_depth=d.get("tcq_depth"))
        for m in _expect(d.get("mapped_luns", []), list, f"{wa} mapped_luns"):
            _expect(m, dict, f"{wa} mapped_luns")
            if "index" not in m or "tpg_lun" not in m:
                raise ValidationError(f"{wa}: a mapped LUN needs 'index' and 'tpg_lun'")
            ml = MappedLUN(index=validate.lun_index(m["index"], f"{wa} mapped LUN"),
                           tpg_lun=validate.lun_index(m["tpg_lun"], f"{wa} tpg_lun"),
                           write_protect=validate.boolean(m.get("write_protect", False), f"{wa} write_protect"),
                           alias=m.get("alias") or None)
            if ml.index in acl.mapped_luns:
                raise ValidationError(f"{wa}: duplicate mapped_lun{ml.index}")
            acl.mapped_luns[ml.index] = ml
        if node in tpg.node_acls:
            raise ValidationError(f"{where}: duplicate ACL {node}")
        tpg.node_acls[node] = acl
    return tpg


# ---- writing ---------------------------------------------------------------

def _chap_dict(chap: Chap, prefix: str) -> dict:
    return {f"{prefix}{f}": getattr(chap, f) for f in validate.CHAP_FIELDS if getattr(chap, f)}


def so_to_dict(so: StorageObject) -> dict:
    d = {"name": so.name, "plugin": so.plugin, "alua_tpgs": list(so.alua_tpgs)}
    if so.attributes:
        d["attributes"] = dict(so.attributes)
    if so.plugin == "fileio":
        d.update(dev=so.dev, size=so.size, wwn=so.wwn, write_back=so.write_back, aio=so.aio)
    elif so.plugin == "block":
        d.update(dev=so.dev, wwn=so.wwn, readonly=so.readonly, write_back=so.write_back)
        if not so.exclusive:
            d["exclusive"] = False
    elif so.plugin == "ramdisk":
        d.update(size=so.size, wwn=so.wwn)
        if so.nullio:
            d["nullio"] = True
    elif so.plugin == "user":
        d.update(size=so.size, wwn=so.wwn, config=so.config, hw_max_sectors=so.hw_max_sectors,
                 control=so.control or "")
    else:
        d["dev"] = so.dev
    return d


def tpg_to_dict(tpg: TPG, secrets: bool = True) -> dict:
    d = {"tag": tpg.tag, "enable": tpg.enable,
         "luns": [{"index": l.index, "storage_object": l.storage_object, "alias": l.alias,
                   "alua_tg_pt_gp_name": l.alua_tg_pt_gp_name}
                  for l in sorted(tpg.luns.values(), key=lambda l: l.index)],
         "portals": [{"ip_address": p.ip_address, "port": p.port, "iser": p.iser, "offload": p.offload}
                     for p in sorted(tpg.portals.values(), key=lambda p: p.dirname)],
         "node_acls": []}
    if tpg.attributes:
        d["attributes"] = dict(tpg.attributes)
    if tpg.parameters:
        d["parameters"] = dict(tpg.parameters)
    for acl in sorted(tpg.node_acls.values(), key=lambda a: a.node_wwn):
        a = {"node_wwn": acl.node_wwn,
             "mapped_luns": [{"index": m.index, "tpg_lun": m.tpg_lun, "write_protect": m.write_protect,
                              "alias": m.alias} for m in sorted(acl.mapped_luns.values(), key=lambda m: m.index)]}
        if acl.attributes:
            a["attributes"] = dict(acl.attributes)
        if acl.tag:
            a["tag"] = acl.tag
        a.update(_redact(_chap_dict(acl.chap, "chap_"), secrets))
        d["node_acls"].append(a)
    d.update(_redact(_chap_dict(tpg.chap, "chap_"), secrets))
    return d


def _redact(d: dict, secrets: bool) -> dict:
    if secrets:
        return d
    return {k: ("********" if "password" in k else v) for k, v in d.items()}


def target_to_dict(t: Target, secrets: bool = True) -> dict:
    d = {"wwn": t.wwn, "fabric": t.fabric,
         "tpgs": [tpg_to_dict(tp, secrets) for tp in sorted(t.tpgs.values(), key=lambda x: x.tag)]}
    if t.attributes:
        d["attributes"] = dict(t.attributes)
    if t.parameters:
        d["parameters"] = dict(t.parameters)
    return d


def to_dict(cfg: Config, secrets: bool = True) -> dict:
    fms = []
    if cfg.discovery.enable:
        fm = {"name": "iscsi", "discovery_enable_auth": True}
        fm.update(_redact(_chap_dict(cfg.discovery.chap, "discovery_"), secrets))
        fms.append(fm)
    return {
        "fabric_modules": fms,
        "storage_objects": [so_to_dict(so) for so in sorted(cfg.storage_objects.values(), key=lambda s: s.key)],
        "targets": [target_to_dict(t, secrets) for _, t in sorted(cfg.all_targets().items())],
    }


def dumps(cfg: Config) -> str:
    import json
    return json.dumps(to_dict(cfg), sort_keys=True, indent=2) + "\n"


def load(path: str | os.PathLike, warnings: list | None = None) -> Config:
    p = _path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise NotFoundError(f"{p}: no such file") from None
    except OSError as e:
        raise ValidationError(f"{p}: cannot read ({e.strerror})") from None
    try:
        import json
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValidationError(f"{p}: not JSON ({e.msg} at line {e.lineno})") from None
    return from_dict(data, warnings)


def write_atomic(path: str | os.PathLike, text: str | bytes, mode: int = 0o600, binary: bool = False) -> None:
    """Replace `path` with `text` so a reader sees the old file or the new one, never half."""
    import tempfile
    p = _path(path)
    p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        # mkstemp already creates 0600; fchmod makes the mode explicit whatever the umask.
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb" if binary else "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dfd = os.open(p.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def save(cfg: Config, path: str | os.PathLike = DEFAULT_SAVE_FILE) -> None:
    text = dumps(cfg)
    try:
        if _path(path).read_text() == text:
            return              # nothing changed: no write, no backup
    except (OSError, UnicodeDecodeError):
        pass
    write_atomic(path, text)


# ---- backups, as targetcli's UIRoot._save_backups (targetcli/ui_root.py) ----------------
#
# Before the save file is replaced, its previous content goes, gzipped, to
# <save dir>/backup/saveconfig-YYYYmmdd-HH:MM:SS-json.gz, unless the newest
# backup already holds it; then the oldest are removed so that at most
# max_backup_files remain.  targetcli reads max_backup_files from its shell
# preference and from `max_backup_files = N` in the universal preferences file
# (/etc/target/targetcli.conf, i.e. targetcli.conf beside the save file), the
# larger winning; so do we.  Unlike targetcli, a save whose content equals the
# file already there writes nothing and backs up nothing.

def backup_dir(path: str | os.PathLike) -> Path:
    return _path(path).parent / "backup"


def list_backups(path: str | os.PathLike) -> list[Path]:
    """Oldest first (the names sort by time)."""
    return sorted(backup_dir(path).glob(BACKUP_GLOB))


def max_backup_files(path: str | os.PathLike, preference: int = MAX_BACKUP_FILES) -> int:
    conf = _path(path).parent / "targetcli.conf"
    n = int(preference)
    try:
        for line in conf.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() == "max_backup_files":
                n = max(n, int(value.strip()))
    except (OSError, ValueError):
        pass
    return n


def _backup_text(p: Path) -> bytes | None:
    import gzip
    try:
        if p.suffix == ".gz":
            with gzip.open(p, "rb") as f:
                return f.read()
        return p.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile):
        return None


def backup(path: str | os.PathLike, new_text: str, max_files: int = MAX_BACKUP_FILES) -> Path | None:
    """Keep the file's current content before `new_text` replaces it; the new backup or None."""
    import gzip
    import time
    p = _path(path)
    try:
        old = p.read_bytes()
    except FileNotFoundError:
        return None
    if old == new_text.encode():
        return None
    d = backup_dir(p)
    d.mkdir(mode=0o700, exist_ok=True)
    existing = list_backups(p)
    made = None
    if not existing or _backup_text(existing[-1]) != old:
        while True:
            made = d / f"saveconfig-{time.strftime('%Y%m%d-%H:%M:%S')}-json.gz"
            if not made.exists():
                break
            time.sleep(0.1)      # one per second, as the names allow
        data = gzip.compress(old, mtime=0)
        write_atomic(made, data, binary=True)
        existing.append(made)
    for old_backup in existing[:max(0, len(existing) - max(1, int(max_files)))]:
        try:
            old_backup.unlink()
        except OSError:
            pass
    return made

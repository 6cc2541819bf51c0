"""Import tgt's targets.conf (tgt-admin) into the LIO model.

Syntax (lio-facts.md §7.8): `<target iqn>` … `</target>` blocks, optional
`<backing-store path>` / `<direct-store path>` containers holding LUN keys,
'#' comments anywhere on a line, `include <glob>`.

Mapping: each target gets TPG 1 on 0.0.0.0:3260; `initiator-name` lines
become ACLs that see every LUN, otherwise the TPG runs in demo mode (tgt's
"bind ALL").  LUN numbers are kept as tgt numbered them (LUN 0 was tgt's
controller, backing stores start at 1), so initiators see the same LUN ids.
A file becomes fileio (write-cache on -> write-back), a block device becomes
block (iblock).  `initiator-address` cannot be expressed (LIO has no
address filter, targetcli-fb #110): reported as an error, since the target
is then open to every address.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

from . import validate
from .errors import TargetError
from .importer import (
    ERROR, MARKER_KEYS, NOTE, SESSION_KEYS, WARNING, Builder, Imported, Probe, default_probe, session_key,
)
from .model import StorageObject, TPG

LUN_LEVEL = {"lun", "write-cache", "readonly", "scsi_id", "scsi_sn", "vendor_id", "product_id", "product_rev",
             "device-type", "bs-type", "block-size", "allow-in-use", "mode_page", "removable", "sense_format",
             "params", "lbppbe", "la_lba", "optimal_xfer_gran", "optimal_xfer_len", "online", "path",
             "bsopts", "bsoflags"}
UNSUPPORTED_LUN = {"scsi_id": "VPD 0x83 id", "vendor_id": "T10 vendor id", "product_id": "T10 product id",
                   "product_rev": "T10 revision", "mode_page": "mode pages", "removable": "removable flag",
                   "sense_format": "sense format", "params": "tgt backing-store params",
                   "lbppbe": "lbppbe", "la_lba": "la_lba", "optimal_xfer_gran": "optimal_xfer_gran",
                   "optimal_xfer_len": "optimal_xfer_len", "bsopts": "bsopts", "bsoflags": "bsoflags"}


def _lines(path: str, text: str, b: Builder, depth: int = 0):
    """(file, line number, text) with comments removed and includes expanded."""
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.split()[0].lower() == "include" and depth < 8:
            pattern = line.split(None, 1)[1] if len(line.split()) > 1 else ""
            files = sorted(glob.glob(pattern if os.path.isabs(pattern)
                                     else os.path.join(os.path.dirname(path), pattern)))
            if not files:
                b.find(n, NOTE, f"include {pattern}: no file matches", file=path)
            for inc in files:
                try:
                    yield from _lines(inc, Path(inc).read_text(), b, depth + 1)
                except OSError as e:
                    b.find(n, ERROR, f"include {inc}: {e.strerror}", file=path)
            continue
        yield path, n, line


class _Store:
    def __init__(self, kind: str, path: str, line: int):
        self.kind, self.path, self.line = kind, path, line
        self.keys: dict[str, tuple[str, int]] = {}


def parse(text: str, filename: str = "targets.conf", probe: Probe = default_probe) -> Imported:
    b = Builder(filename, probe)
    cfg = b.out.config
    disc_in, disc_out = [], None
    target = None            # (wwn, tpg, line)
    store = None
    stores: list[_Store] = []
    tkeys: dict[str, tuple[str, int]] = {}
    users, outgoing, names = [], None, []

    for file, n, line in _lines(filename, text, b):
        b.file = file            # what Builder reports, for this line and its target's LUNs
        low = line.lower()
        if low.startswith("<target"):
            if target is not None:
                b.find(n, ERROR, "<target> inside <target>; the outer one ends here")
            name = line[len("<target"):].rstrip(">").strip()
            wwn = b.target_name(name, n)
            target = (wwn, b.new_target(wwn, n) if wwn else None, n, file)
            stores, tkeys, users, outgoing, names = [], {}, [], None, []
            continue
        if low.startswith("</target"):
            if target is None:
                b.find(n, ERROR, "</target> without <target>")
                continue
            wwn, tpg, _, b.file = target      # its LUNs are reported against the file that opened it
            if tpg is not None:
                _finish(b, wwn, tpg, stores, tkeys, users, outgoing, names)
            target = None
            continue
        if low.startswith(("<backing-store", "<direct-store")):
            kind = "direct" if low.startswith("<direct") else "backing"
            store = _Store(kind, line.split(None, 1)[1].rstrip(">").strip() if " " in line else "", n)
            continue
        if low.startswith(("</backing-store", "</direct-store")):
            if store is not None:
                stores.append(store)
            store = None
            continue
        words = line.split()
        key, args = words[0].lower(), words[1:]
        value = " ".join(args)
        if target is None:
            if key in ("incomingdiscoveryuser", "outgoingdiscoveryuser"):
                if len(args) != 2:
                    b.find(n, ERROR, f"{words[0]} needs a user and a password; skipped")
                elif key.startswith("incoming"):
                    disc_in.append((args[0], args[1], n, file))
                else:
                    disc_out = (args[0], args[1], n, file)
            elif key == "default-driver":
                if value != "iscsi":
                    b.find(n, ERROR, f"default-driver {value}: only iscsi is imported")
            elif key in ("isns", "isnsserverip", "isnsserverport", "isnsaccesscontrol"):
                b.find(n, ERROR, f"{words[0]}: LIO has no iSNS client; not imported")
            elif key in ("control-port", "ignore-errors"):
                b.find(n, NOTE, f"{words[0]}: a tgt-admin setting with no LIO meaning; ignored")
            else:
                b.find(n, ERROR, f"{words[0]}: unknown global key; not imported")
            continue
        if target[1] is None:
            b.find(n, ERROR, f"{words[0]}: belongs to a target that was skipped")
            continue
        if store is not None:
            if key not in LUN_LEVEL:
                b.find(n, ERROR, f"{words[0]}: not a LUN key; ignored")
            else:
                store.keys[key] = (value, n)
            continue
        if key in ("backing-store", "direct-store"):
            s = _Store("direct" if key == "direct-store" else "backing", value, n)
            stores.append(s)
        elif key == "incominguser":
            if (user := b.chap_user(args, n, key)) is not None:
                users.append(user)
        elif key == "outgoinguser":
            if (user := b.chap_user(args, n, key)) is not None:
                if outgoing is not None:
                    b.find(n, ERROR, "a second outgoinguser; skipped")
                else:
                    outgoing = user
        elif key == "initiator-name":
            try:
                names.append((validate.wwn(value, "initiator name"), n))
            except TargetError as e:
                b.find(n, ERROR, f"{e}; skipped")
        elif key == "initiator-address":
            b.find(n, ERROR, f"initiator-address {value}: LIO cannot filter initiators by address; "
                                    f"the target accepts every address (use a firewall)")
        elif key == "driver":
            if value != "iscsi":
                b.find(n, ERROR, f"driver {value}: only iscsi targets are imported")
        elif key in ("controller_tid",):
            b.find(n, NOTE, f"{words[0]}: tgt's internal id; ignored")
        elif key in SESSION_KEYS:
            session_key(b, target[1], key, value, n)
        elif key in MARKER_KEYS:
            b.find(n, ERROR, f"{words[0]}: markers are not supported by LIO; not imported")
        elif key == "maxconnections":
            session_key(b, target[1], key, value, n)
        elif key in LUN_LEVEL:
            tkeys[key] = (value, n)          # target-wide default for its LUNs
        else:
            b.find(n, ERROR, f"{words[0]}: unknown target key; not imported")
    if target is not None:
        b.file = target[3]
        b.find(target[2], ERROR, "<target> is not closed; imported up to the end of the file")
        if target[1] is not None:
            _finish(b, target[0], target[1], stores, tkeys, users, outgoing, names)
    if disc_in:
        cfg.discovery.enable = True
        cfg.discovery.chap.userid, cfg.discovery.chap.password = disc_in[0][:2]
        for u, _p, ln, file in disc_in[1:]:
            b.find(ln, ERROR, f"incomingdiscoveryuser {u}: LIO keeps one; only {disc_in[0][0]} kept", file=file)
        if disc_out:
            cfg.discovery.chap.mutual_userid, cfg.discovery.chap.mutual_password = disc_out[:2]
    elif disc_out:
        b.find(disc_out[2], ERROR, "outgoingdiscoveryuser without incomingdiscoveryuser; skipped", file=disc_out[3])
    return b.check()


def _finish(b, wwn, tpg: TPG, stores, tkeys, users, outgoing, names):
    # tgt numbers backing stores first, then direct stores, from LUN 1 (LUN 0 is its controller).
    ordered = [s for s in stores if s.kind == "backing"] + [s for s in stores if s.kind == "direct"]
    used = {int(s.keys["lun"][0]) for s in ordered if "lun" in s.keys and s.keys["lun"][0].isdigit()}
    nxt = 1
    if ordered:
        b.find(ordered[0].line, NOTE, "tgt's LUN 0 was its controller; LUN numbers are kept, LIO answers LUN 0")
    for s in ordered:
        keys = dict(tkeys)
        keys.update(s.keys)
        if "lun" in s.keys:
            try:
                index = validate.lun_index(s.keys["lun"][0])
            except TargetError as e:
                b.find(s.keys["lun"][1], ERROR, f"{e}; LUN skipped")
                continue
        else:
            while nxt in used:
                nxt += 1
            index = nxt
            used.add(index)
        _store(b, tpg, wwn, s, index, keys)
    b.chap(tpg, users, outgoing)
    b.finish_acls(tpg, names)


def _store(b: Builder, tpg: TPG, wwn: str, s: _Store, index: int, keys: dict):
    found = b.file_or_block(s.path, s.line, f"LUN {index} ({s.path})")
    if found is None:
        return
    is_block, size = found[0] == "block", found[1]
    name = b.so_name(wwn, index)
    wc = keys.get("write-cache", ("on", 0))
    write_back = wc[0].lower() != "off"
    ro = "readonly" in keys and keys["readonly"][0].lower() not in ("0", "off", "no")
    if s.kind == "direct":
        b.find(s.line, WARNING, f"direct-store {s.path}: becomes a pscsi passthrough object")
        so = StorageObject("pscsi", name, dev=s.path)
    elif is_block:
        so = StorageObject("block", name, dev=s.path, readonly=ro)
        if "allow-in-use" in keys and keys["allow-in-use"][0].lower() == "yes":
            so.exclusive = False
            b.find(keys["allow-in-use"][1], NOTE, "allow-in-use yes: block object is not claimed exclusively "
                                                  "(needs a kernel with iblock exclusive=, 6.17+)")
        if "write-cache" in keys:
            # iblock reports the device's own volatile cache; the kernel refuses
            # emulate_write_cache=1 on a device that has none.
            b.find(keys["write-cache"][1], NOTE, f"LUN {index}: write-cache on a block device follows "
                                                 f"the device's own cache in LIO")
    else:
        if ro:
            b.find(keys["readonly"][1], ERROR, f"LUN {index}: readonly on a file cannot be expressed "
                                               f"(LIO fileio has no read-only flag); LUN skipped")
            return
        so = StorageObject("fileio", name, dev=s.path, size=size - size % 512 if size else size,
                           write_back=write_back)
    bs = keys.get("bs-type")
    if bs:
        kind = bs[0].lower()
        if kind == "aio" and so.plugin == "fileio":
            so.aio = True
        elif kind not in ("rdwr", "aio"):
            b.find(bs[1], ERROR, f"bs-type {bs[0]}: no LIO backstore; LUN skipped")
            return
    if "scsi_sn" in keys:
        try:
            so.wwn = validate.unit_serial(keys["scsi_sn"][0])
            b.find(keys["scsi_sn"][1], NOTE, f"LUN {index}: scsi_sn becomes the unit serial; LIO derives "
                                             f"the VPD 0x83 id from it, so initiators see a new WWID")
        except TargetError as e:
            b.find(keys["scsi_sn"][1], ERROR, f"LUN {index}: scsi_sn: {e}; a serial is generated")
    if "block-size" in keys:
        try:
            so.attributes["block_size"] = validate.block_size(keys["block-size"][0])
        except TargetError as e:
            b.find(keys["block-size"][1], ERROR, f"LUN {index}: {e}; default 512 used")
    if "device-type" in keys and keys["device-type"][0].lower() not in ("disk",):
        b.find(keys["device-type"][1], ERROR, f"device-type {keys['device-type'][0]}: LIO emulates disks only; "
                                              f"LUN skipped")
        return
    if "online" in keys and keys["online"][0].lower() in ("0", "no", "off"):
        b.find(keys["online"][1], WARNING, f"LUN {index}: online no: LIO has no offline LUN; exported online")
    for k, what in UNSUPPORTED_LUN.items():
        if k in keys:
            b.find(keys[k][1], ERROR, f"{k}: LIO cannot set the {what} from saveconfig; not imported")
    b.add_lun(tpg, wwn, index, so, s.line)


def load(path: str, probe: Probe = default_probe) -> Imported:
    return parse(Path(path).read_text(), str(path), probe)

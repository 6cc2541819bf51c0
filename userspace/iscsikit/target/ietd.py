"""Import IET's ietd.conf (iSCSI Enterprise Target 1.4.x) into the LIO model.

Syntax (lio-facts.md §7.2-7.4): line based; '#' starts a comment only at the
start of a line; a trailing '\\' continues the line; keywords are matched
case-insensitively.  Keys before the first `Target` are global.

Mapping: each Target gets TPG 1 on 0.0.0.0:3260 in demo mode (IET lets every
initiator in unless initiators.allow says otherwise; that file is not read
here).  Lun Type=fileio -> fileio (IOMode=wb -> write-back, wt -> write-
through), blockio -> block (IOMode=ro -> readonly), nullio -> ramdisk
nullio; ScsiSN -> unit serial; BlockSize -> block_size; session keys -> TPG
parameters.  Everything else is a Finding.
"""

from __future__ import annotations

from pathlib import Path

from . import validate
from .errors import TargetError
from .importer import (
    ERROR, MARKER_KEYS, NOTE, SESSION_KEYS, WARNING, Builder, Imported, Probe, default_probe, session_key,
)
from .model import StorageObject, TPG

IET_DEFAULT_NULLIO_BLOCKS = (64 << 30) // 512
LUN_KEYS = {"type", "path", "iomode", "scsiid", "scsisn", "blocksize", "blocks", "sectors"}


def logical_lines(text: str):
    """(line number of the first physical line, text) after comments and continuations."""
    buf, start = "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if not buf and line.lstrip().startswith("#"):
            continue
        if not buf:
            start = n
        else:
            line = line.lstrip()
        if line.endswith("\\"):
            buf += line[:-1]
            continue
        buf += line
        if buf.strip():
            yield start, buf.strip()
        buf = ""
    if buf.strip():
        yield start, buf.strip()


def parse(text: str, filename: str = "ietd.conf", probe: Probe = default_probe) -> Imported:
    b = Builder(filename, probe)
    cfg = b.out.config
    disc_users: list = []
    disc_out = None
    wwn: str | None = None
    tpg: TPG | None = None
    users: list = []
    outgoing = None
    readonly_fileio: list = []
    skipping = False

    def close_target():
        nonlocal users, outgoing
        if tpg is not None:
            b.chap(tpg, users, outgoing)
            _readonly(b, tpg, readonly_fileio)
        users, outgoing = [], None
        readonly_fileio.clear()

    for n, line in logical_lines(text):
        if " #" in line or "\t#" in line:
            b.find(n, WARNING, "'#' in the middle of a line is not a comment in IET; the rest of the line ignored")
            line = line.split("#", 1)[0].strip()
        words = line.split()
        key, args = words[0].lower(), words[1:]
        if key == "target":
            close_target()
            if len(args) != 1:
                b.find(n, ERROR, "Target needs exactly one name; skipped")
                wwn, tpg, skipping = None, None, True
                continue
            wwn = b.target_name(args[0], n)
            tpg = b.new_target(wwn, n) if wwn else None
            skipping = tpg is None
            continue
        if skipping:
            b.find(n, ERROR, f"{words[0]}: belongs to a target that was skipped")
            continue
        if key in ("incominguser", "outgoinguser"):
            user = b.chap_user(args, n, words[0])
            if user is None:
                continue
            if tpg is None:
                if key == "incominguser":
                    disc_users.append(user)
                elif disc_out is None:
                    disc_out = user
                else:
                    b.find(n, ERROR, "a second OutgoingUser: IET allows one; skipped")
            elif key == "incominguser":
                users.append(user)
            elif outgoing is None:
                outgoing = user
            else:
                b.find(n, ERROR, "a second OutgoingUser: IET allows one; skipped")
            continue
        if tpg is None:
            if key in ("isnsserver", "isnsaccesscontrol"):
                b.find(n, ERROR, f"{words[0]}: LIO has no iSNS client; not imported")
            else:
                b.find(n, ERROR, f"{words[0]}: not a global ietd.conf key; ignored")
            continue
        if key == "lun":
            _lun(b, tpg, wwn, args, n, readonly_fileio)
        elif key == "alias":
            if args:
                tpg.parameters["TargetAlias"] = " ".join(args)
                b.find(n, NOTE, "Alias (ignored by IET) becomes LIO's TargetAlias")
        elif key in SESSION_KEYS:
            if len(args) != 1:
                b.find(n, ERROR, f"{words[0]} needs one value; skipped")
            else:
                session_key(b, tpg, key, args[0], n)
        elif key in MARKER_KEYS:
            if key in ("ifmarker", "ofmarker") and args and args[0] == "No":
                continue
            b.find(n, ERROR, f"{words[0]}: markers are not supported by LIO; not imported")
        elif key == "queuedcommands":
            try:
                depth = validate.integer(args[0] if args else "", 1, 512, "QueuedCommands")
            except TargetError as e:
                b.find(n, ERROR, f"{e}; not imported")
                continue
            tpg.attributes["default_cmdsn_depth"] = depth
            b.find(n, NOTE, f"QueuedCommands {depth} becomes the TPG's default_cmdsn_depth")
        elif key in ("maxsessions", "wthreads", "type", "nopinterval", "noptimeout"):
            b.find(n, ERROR, f"{words[0]}: no LIO equivalent for a demo-mode target; not imported")
        else:
            b.find(n, ERROR, f"{words[0]}: unknown ietd.conf key; not imported")
    close_target()
    if disc_users:
        u, p, _ = disc_users[0]
        cfg.discovery.enable = True
        cfg.discovery.chap.userid, cfg.discovery.chap.password = u, p
        for u2, _p, ln in disc_users[1:]:
            b.find(ln, ERROR, f"discovery IncomingUser {u2}: LIO keeps one discovery user; only {u} kept")
        if disc_out:
            cfg.discovery.chap.mutual_userid, cfg.discovery.chap.mutual_password = disc_out[:2]
    elif disc_out:
        b.find(disc_out[2], ERROR, "global OutgoingUser without IncomingUser: LIO needs both; skipped")
    return b.check()


def _lun(b: Builder, tpg: TPG, wwn: str, args: list, n: int, readonly_fileio: list) -> None:
    if len(args) != 2:
        b.find(n, ERROR, "Lun needs '<n> key=value[,key=value...]' (no spaces in the list); skipped")
        return
    try:
        index = validate.integer(args[0], 0, 16383, "IET LUN number")
    except TargetError as e:
        b.find(n, ERROR, f"{e}; skipped")
        return
    params = {}
    for item in args[1].split(","):
        k, sep, v = item.partition("=")
        if not sep:
            b.find(n, ERROR, f"Lun {index}: {item!r} is not key=value; ignored")
            continue
        if k.lower() not in LUN_KEYS:
            b.find(n, ERROR, f"Lun {index}: unknown key {k}; ignored")
            continue
        params[k.lower()] = v
    kind = params.get("type", "fileio").lower()
    iomode = params.get("iomode", "wt").lower()
    if iomode not in ("wt", "wb", "ro"):
        b.find(n, ERROR, f"Lun {index}: IOMode={iomode} is not wt, wb or ro; LUN skipped")
        return
    name = b.so_name(wwn, index)
    if kind in ("fileio", "blockio"):
        path = params.get("path")
        if not path:
            b.find(n, ERROR, f"Lun {index}: Type={kind} needs Path; LUN skipped")
            return
        found = b.file_or_block(path, n, f"Lun {index}")
        if found is None:
            return
        is_block, size = found[0] == "block", found[1]
        if kind == "blockio":
            if not is_block:
                b.find(n, ERROR, f"Lun {index}: Type=blockio but {path} is not a block device; LUN skipped")
                return
            if iomode == "wb":
                b.find(n, NOTE, f"Lun {index}: IOMode=wb has no effect on blockio (in IET either)")
            so = StorageObject("block", name, dev=path, readonly=iomode == "ro")
        elif iomode == "ro" and is_block:
            # LIO's fileio has no read-only flag; a block device can go through iblock read-only.
            b.find(n, WARNING, f"Lun {index}: read-only fileio on a block device becomes a read-only block object")
            so = StorageObject("block", name, dev=path, readonly=True)
        else:
            if size is not None and size % 512:
                b.find(n, WARNING, f"Lun {index}: {path} is {size} bytes; LIO exports the whole 512-byte blocks")
                size -= size % 512
            so = StorageObject("fileio", name, dev=path, size=None if is_block else size,
                               write_back=iomode == "wb")
            so.is_block_dev = is_block
            if iomode == "ro":
                readonly_fileio.append((index, n))
    elif kind == "nullio":
        bs = int(params.get("blocksize", "512")) if params.get("blocksize", "512").isdigit() else 512
        blocks = params.get("blocks") or params.get("sectors")
        try:
            count = validate.integer(blocks, 1, 1 << 48, "Blocks") if blocks else IET_DEFAULT_NULLIO_BLOCKS
        except TargetError as e:
            b.find(n, ERROR, f"Lun {index}: {e}; LUN skipped")
            return
        so = StorageObject("ramdisk", name, size=count * bs, nullio=True)
        if iomode == "ro":
            b.find(n, ERROR, f"Lun {index}: a nullio LUN cannot be read-only in LIO; exported writable (discards)")
    else:
        b.find(n, ERROR, f"Lun {index}: Type={kind} is not fileio, blockio or nullio; LUN skipped")
        return
    if "scsisn" in params:
        try:
            so.wwn = validate.unit_serial(params["scsisn"])
            b.find(n, NOTE, f"Lun {index}: ScsiSN becomes the unit serial; LIO derives the VPD 0x83 id "
                            f"from it, so initiators see a new WWID")
        except TargetError as e:
            b.find(n, ERROR, f"Lun {index}: ScsiSN: {e}; a serial is generated")
    if "scsiid" in params:
        b.find(n, ERROR, f"Lun {index}: ScsiId (VPD 0x83) has no LIO setting; not imported")
    if "blocksize" in params:
        try:
            so.attributes["block_size"] = validate.block_size(params["blocksize"])
        except TargetError as e:
            b.find(n, ERROR, f"Lun {index}: {e}; default 512 used")
    b.add_lun(tpg, wwn, index, so, n)


def _readonly(b: Builder, tpg: TPG, readonly_fileio: list) -> None:
    """LIO's fileio has no read-only flag; in demo mode only the whole TPG can be write-protected."""
    if not readonly_fileio:
        return
    if len(readonly_fileio) == len(tpg.luns):
        tpg.attributes["demo_mode_write_protect"] = 1
        b.find(readonly_fileio[0][1], WARNING, "every LUN is IOMode=ro: the TPG is write-protected instead")
        return
    for index, n in readonly_fileio:
        so_path = tpg.luns[index].storage_object
        del tpg.luns[index]
        key = tuple(so_path.split("/")[2:])
        b.out.config.storage_objects.pop(key, None)
        b.find(n, ERROR, f"Lun {index}: IOMode=ro on a file cannot be expressed next to writable LUNs "
                         f"(LIO fileio has no read-only flag); LUN skipped rather than exported writable")


def load(path: str, probe: Probe = default_probe) -> Imported:
    return parse(Path(path).read_text(), str(path), probe)

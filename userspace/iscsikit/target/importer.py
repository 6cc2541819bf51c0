"""What the IET and tgt importers share: findings, and building LIO objects.

An importer never drops a line silently: every key LIO cannot express, or
expresses differently, becomes a Finding with its file and line number.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from typing import Callable

from . import validate
from .errors import TargetError
from .model import Config, LUN, MappedLUN, NodeACL, Portal, StorageObject, Target, TPG

ERROR, WARNING, NOTE = "error", "warning", "note"


@dataclass
class Finding:
    file: str
    line: int
    severity: str       # error: that part was not imported; warning: imported differently; note: FYI
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.severity}: {self.message}"


@dataclass
class Imported:
    config: Config = field(default_factory=Config)
    findings: list = field(default_factory=list)

    def errors(self) -> list:
        return [f for f in self.findings if f.severity == ERROR]


def default_probe(path: str) -> tuple[str, int | None]:
    """('block'|'file'|'missing', size of a file); tests pass their own."""
    try:
        st = os.stat(path)
    except OSError:
        return "missing", None
    if stat.S_ISBLK(st.st_mode):
        return "block", None
    return "file", st.st_size


Probe = Callable[[str], tuple]


class Builder:
    """Collects targets and storage objects as an importer reads them."""

    def __init__(self, filename: str, probe: Probe = default_probe):
        self.file = filename     # the file being read: a parser that follows includes moves it
        self.probe = probe
        self.out = Imported()

    def find(self, line: int, severity: str, message: str, file: str | None = None) -> None:
        self.out.findings.append(Finding(file or self.file, line, severity, message))

    def target_name(self, raw: str, line: int) -> str | None:
        name = raw.strip()
        if "_" in name:
            fixed = name.replace("_", "-")
            self.find(line, WARNING, f"target {name}: LIO tools refuse '_' in IQNs; renamed to {fixed.lower()}")
            name = fixed
        if name != name.lower():
            self.find(line, NOTE, f"target {name}: iSCSI names are case-insensitive; stored as {name.lower()}")
        try:
            return validate.wwn(name, "target name")
        except TargetError as e:
            self.find(line, ERROR, f"{e}; target skipped")
            return None

    def new_target(self, wwn: str, line: int) -> TPG:
        if wwn in self.out.config.targets:
            self.find(line, ERROR, f"target {wwn} defined twice; the second definition is merged into the first")
            return self.out.config.targets[wwn].tpgs[1]
        # IET and tgt listen on every address and let every initiator in unless
        # told otherwise: LIO's demo mode (generated ACLs, writable).
        tpg = TPG(tag=1, enable=True, attributes={
            "authentication": 0, "generate_node_acls": 1, "demo_mode_write_protect": 0, "cache_dynamic_acls": 1})
        p = Portal("0.0.0.0", 3260)
        tpg.portals[p.key] = p
        self.out.config.targets[wwn] = Target(wwn, tpgs={1: tpg})
        return tpg

    def so_name(self, wwn: str, lun: int) -> str:
        base = re.sub(r"[^A-Za-z0-9_.-]", "-", wwn.split(":", 1)[-1] if ":" in wwn else wwn.split(".")[-1])
        name = f"{base[:100]}-lun{lun}"
        n, i = name, 1
        while any(k[1] == n for k in self.out.config.storage_objects):
            i += 1
            n = f"{name}.{i}"
        return n

    def add_lun(self, tpg: TPG, wwn: str, index: int, so: StorageObject, line: int) -> bool:
        try:
            validate.lun_index(index)
            so.check()
        except TargetError as e:
            self.find(line, ERROR, f"LUN {index}: {e}; LUN skipped")
            return False
        if index in tpg.luns:
            self.find(line, ERROR, f"LUN {index} defined twice; the second one skipped")
            return False
        self.out.config.storage_objects[so.key] = so
        tpg.luns[index] = LUN(index, so.path)
        return True

    def file_or_block(self, path: str, line: int, what: str) -> tuple[str, int | None] | None:
        kind, size = self.probe(path)
        if kind == "missing":
            self.find(line, ERROR, f"{what}: {path} does not exist here, its size is unknown; LUN skipped")
            return None
        return kind, size

    def chap_user(self, args: list[str], line: int, what: str) -> tuple[str, str, int] | None:
        """`what USER PASSWORD` of either format, checked as LIO will take it; None (and a
        finding) for anything else."""
        if len(args) != 2:
            self.find(line, ERROR, f"{what} needs a user and a password; skipped")
            return None
        try:
            return (validate.chap_value(args[0], "CHAP user"), validate.chap_value(args[1], "CHAP password"), line)
        except TargetError as e:
            self.find(line, ERROR, f"{e}; skipped")
            return None

    def chap(self, tpg: TPG, users: list, outgoing: tuple | None) -> None:
        """IET/tgt allow several incoming users; LIO keeps one per TPG (or ACL)."""
        if users:
            (u, p, ln) = users[0]
            tpg.chap.userid, tpg.chap.password = u, p
            tpg.attributes["authentication"] = 1
            for (u2, _p2, ln2) in users[1:]:
                self.find(ln2, ERROR, f"incoming user {u2}: LIO keeps one CHAP user per target; only {u} kept")
        if outgoing:
            u, p, ln = outgoing
            if not users:
                self.find(ln, ERROR, "outgoing (mutual) user without an incoming user: LIO needs both; skipped")
            else:
                tpg.chap.mutual_userid, tpg.chap.mutual_password = u, p

    def finish_acls(self, tpg: TPG, names: list) -> None:
        """Explicit initiator names: ACLs that see every LUN, and no demo mode."""
        if not names:
            return
        tpg.attributes["generate_node_acls"] = 0
        tpg.attributes.pop("cache_dynamic_acls", None)
        tpg.attributes.pop("demo_mode_write_protect", None)
        for node, _ln in names:
            acl = NodeACL(node)
            for i in tpg.luns:
                acl.mapped_luns[i] = MappedLUN(i, i)
            if tpg.chap.userid:
                acl.chap = tpg.chap.__class__(**tpg.chap.__dict__)
            tpg.node_acls[node] = acl
        if tpg.chap.userid:
            tpg.chap = tpg.chap.__class__()

    def check(self) -> Imported:
        try:
            self.out.config.check()
        except TargetError as e:
            self.find(0, ERROR, f"the imported configuration is not valid for LIO: {e}")
        return self.out


# RFC 3720 session keys both formats share, with the LIO TPG parameter they become.
SESSION_KEYS = {k.lower(): k for k in (
    "InitialR2T", "ImmediateData", "MaxConnections", "MaxRecvDataSegmentLength", "MaxXmitDataSegmentLength",
    "MaxBurstLength", "FirstBurstLength", "DefaultTime2Wait", "DefaultTime2Retain", "MaxOutstandingR2T",
    "DataPDUInOrder", "DataSequenceInOrder", "ErrorRecoveryLevel", "HeaderDigest", "DataDigest")}
MARKER_KEYS = {"ifmarker", "ofmarker", "ifmarkint", "ofmarkint"}


def session_key(b: Builder, tpg: TPG, key: str, value: str, line: int) -> None:
    name = SESSION_KEYS[key.lower()]
    if name in ("HeaderDigest", "DataDigest"):
        # IET writes "None,CRC32C"; LIO lists its preference first as well.
        value = ",".join(v.strip() for v in value.split(","))
        value = ",".join({"none": "None", "crc32c": "CRC32C"}.get(v.lower(), v) for v in value.split(","))
    try:
        tpg.parameters[name] = validate.tpg_parameter(name, value)
    except TargetError as e:
        b.find(line, ERROR, f"{e}; not imported")

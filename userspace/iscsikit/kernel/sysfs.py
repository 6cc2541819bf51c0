"""The kernel's iSCSI objects as sysfs shows them: transports, sessions, connections, hosts, LUNs.

Paths per Linux 6.1 (scsi_transport_iscsi): a session's device lives under
its Scsi_Host, /sys/devices/platform/hostH/sessionS, with its connection and
the SCSI target H:0:0 beside it; block devices hang under each H:0:0:L.
The root is a parameter so unit tests can read a fake tree.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

SYSFS = Path("/sys")


def _read(path: Path, default: str | None = None) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return default


@dataclass(frozen=True)
class Transport:
    name: str
    handle: int
    caps: int


@dataclass
class Lun:
    lun: int
    hctl: str
    state: str | None
    block: str | None      # "sdb", or None before the disk driver attached


@dataclass
class Session:
    sid: int
    host_no: int | None
    target: str | None
    tpgt: int | None
    state: str | None
    creator: int | None
    address: str | None
    port: int | None
    conn_state: str | None
    initiator_name: str | None
    iface_name: str | None
    luns: list[Lun] = field(default_factory=list)


class Sysfs:
    def __init__(self, root: Path | str = SYSFS):
        self.root = Path(root)

    # ---- transports ------------------------------------------------------
    def transports(self) -> list[Transport]:
        base = self.root / "class" / "iscsi_transport"
        out = []
        for d in sorted(base.iterdir()) if base.is_dir() else []:
            handle, caps = _read(d / "handle"), _read(d / "caps")
            if handle is None or caps is None:
                continue
            out.append(Transport(d.name, int(handle), int(caps, 16)))
        return out

    def transport(self, name: str) -> Transport | None:
        return next((t for t in self.transports() if t.name == name), None)

    # ---- sessions --------------------------------------------------------
    def session_ids(self) -> list[int]:
        base = self.root / "class" / "iscsi_session"
        if not base.is_dir():
            return []
        return sorted(int(m.group(1)) for d in base.iterdir() if (m := re.fullmatch(r"session(\d+)", d.name)))

    def host_of(self, sid: int) -> int | None:
        dev = self.root / "class" / "iscsi_session" / f"session{sid}" / "device"
        try:
            parent = Path(os.path.realpath(dev)).parent.name
        except OSError:
            return None
        m = re.fullmatch(r"host(\d+)", parent)
        return int(m.group(1)) if m else None

    def luns(self, sid: int) -> list[Lun]:
        dev = Path(os.path.realpath(self.root / "class" / "iscsi_session" / f"session{sid}" / "device"))
        out = []
        for target in sorted(dev.glob("target*")):
            for unit in sorted(target.iterdir()):
                m = re.fullmatch(r"(\d+):(\d+):(\d+):(\d+)", unit.name)
                if not m:
                    continue
                blocks = sorted(p.name for p in (unit / "block").iterdir()) if (unit / "block").is_dir() else []
                out.append(Lun(int(m.group(4)), unit.name, _read(unit / "state"), blocks[0] if blocks else None))
        return sorted(out, key=lambda l: l.lun)

    def session(self, sid: int) -> Session | None:
        sdir = self.root / "class" / "iscsi_session" / f"session{sid}"
        if not sdir.is_dir():
            return None
        cdir = self.root / "class" / "iscsi_connection" / f"connection{sid}:0"
        host_no = self.host_of(sid)
        hdir = self.root / "class" / "iscsi_host" / f"host{host_no}"
        tpgt, creator, port = _read(sdir / "tpgt"), _read(sdir / "creator"), _read(cdir / "persistent_port")
        return Session(
            sid=sid, host_no=host_no, target=_read(sdir / "targetname"),
            tpgt=int(tpgt) if tpgt and tpgt.lstrip("-").isdigit() else None,
            state=_read(sdir / "state"), creator=int(creator) if creator and creator.lstrip("-").isdigit() else None,
            address=_read(cdir / "persistent_address"), port=int(port) if port and port.isdigit() else None,
            conn_state=_read(cdir / "state"),
            initiator_name=_read(sdir / "initiatorname") or _read(hdir / "initiatorname"),
            iface_name=_read(sdir / "ifacename"),
            luns=self.luns(sid),
        )

    def sessions(self) -> list[Session]:
        return [s for sid in self.session_ids() if (s := self.session(sid)) is not None]

    # ---- actions ---------------------------------------------------------
    def scan_host(self, host_no: int, channel: str = "-", target: str = "-", lun: str = "-") -> None:
        """Ask the SCSI midlayer to scan a session's host (what `node.session.scan = auto` does)."""
        (self.root / "class" / "scsi_host" / f"host{host_no}" / "scan").write_text(f"{channel} {target} {lun}")

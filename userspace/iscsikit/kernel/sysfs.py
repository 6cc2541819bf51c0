"""The kernel's iSCSI objects as sysfs shows them: transports, sessions, connections, hosts, LUNs.

Paths per Linux 6.1 (scsi_transport_iscsi): a session's device lives under
its Scsi_Host, /sys/devices/platform/hostH/sessionS, with its connection and
the SCSI target H:0:0 beside it; block devices hang under each H:0:0:L.
The root is a parameter so unit tests can read a fake tree.

`iscsikit-adm -m session` imports this to list sessions, so it keeps to what
Python has loaded at start-up anyway (os, re, collections): no pathlib, no
typing, no dataclasses.
"""

from __future__ import annotations

import os
import re
from collections import namedtuple

SYSFS = "/sys"

Transport = namedtuple("Transport", "name handle caps")
# block: "sdb", or None before the disk driver attached
Lun = namedtuple("Lun", "lun hctl state block")
# transport: the iSCSI transport's name, as iscsiadm derives it from the host's proc_name
Session = namedtuple("Session", "sid host_no target tpgt state creator address port conn_state "
                                "initiator_name iface_name luns transport", defaults=("tcp",))
# What a node record is matched to a session by (target, portal, iface: iscsiadm's
# __iscsi_match_session) and what a logout names it by: four reads per session, where
# session() makes ten and resolves the host. `-U all` over 32 sessions spent most of its
# own time (before the first logout left) in session().
SessionRef = namedtuple("SessionRef", "sid target address port iface_name")


def _read(path: str, default: str | None = None) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default


def _int(text: str | None) -> int | None:
    return int(text) if text and text.lstrip("-").isdigit() else None


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


class Sysfs:
    def __init__(self, root: str | os.PathLike = SYSFS):
        self.root = os.fspath(root)

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def attr(self, kind: str, name: str, attr: str) -> str | None:
        """/sys/class/KIND/NAME/ATTR, or None when it is missing, empty or "(null)"."""
        v = _read(self.path("class", kind, name, attr))
        return None if v in ("", "(null)") else v

    # ---- transports ------------------------------------------------------
    def transports(self) -> list[Transport]:
        out = []
        for name in _listdir(self.path("class", "iscsi_transport")):
            handle = _read(self.path("class", "iscsi_transport", name, "handle"))
            caps = _read(self.path("class", "iscsi_transport", name, "caps"))
            if handle is not None and caps is not None:
                out.append(Transport(name, int(handle), int(caps, 16)))
        return out

    def transport(self, name: str) -> Transport | None:
        tdir = self.path("class", "iscsi_transport", name)
        handle, caps = _read(os.path.join(tdir, "handle")), _read(os.path.join(tdir, "caps"))
        return Transport(name, int(handle), int(caps, 16)) if handle is not None and caps is not None else None

    # ---- sessions --------------------------------------------------------
    def session_ids(self) -> list[int]:
        return sorted(int(m.group(1)) for d in _listdir(self.path("class", "iscsi_session"))
                      if (m := re.fullmatch(r"session(\d+)", d)))

    def endpoint(self, handle: int) -> bool:
        """Whether the kernel endpoint `handle` is there: /sys/class/iscsi_endpoint/ep-N, whose
        `handle` reads N (scsi_transport_iscsi.c iscsi_create_endpoint). An endpoint leaves
        sysfs when its transport disconnects it; its handle is not given to another endpoint
        until then (an idr id, freed with the device)."""
        return _read(self.path("class", "iscsi_endpoint", f"ep-{handle}", "handle")) == str(handle)

    def _device(self, sid: int) -> str:
        return os.path.realpath(self.path("class", "iscsi_session", f"session{sid}", "device"))

    def host_of(self, sid: int) -> int | None:
        m = re.fullmatch(r"host(\d+)", os.path.basename(os.path.dirname(self._device(sid))))
        return int(m.group(1)) if m else None

    def luns(self, sid: int) -> list[Lun]:
        dev = self._device(sid)
        out = []
        for target in (t for t in _listdir(dev) if t.startswith("target")):
            for unit in _listdir(os.path.join(dev, target)):
                m = re.fullmatch(r"(\d+):(\d+):(\d+):(\d+)", unit)
                if not m:
                    continue
                udir = os.path.join(dev, target, unit)
                blocks = _listdir(os.path.join(udir, "block"))
                out.append(Lun(int(m.group(4)), unit, _read(os.path.join(udir, "state")),
                               blocks[0] if blocks else None))
        return sorted(out, key=lambda l: l.lun)

    def session_in_use(self, sid: int, proc: str = "/proc") -> bool:
        """A disk of session `sid` is mounted or swapped on, directly, through a partition or
        through a holder (dm, md) that is: what open-iscsi's usr/mntcheck.c session_in_use
        counts for iscsid.safe_logout. Devices are matched by major:minor, not by name."""
        used = set()
        try:
            with open(os.path.join(proc, "self", "mountinfo")) as f:
                used.update(line.split()[2] for line in f if len(line.split()) > 2)
        except OSError:
            pass
        try:
            with open(os.path.join(proc, "swaps")) as f:
                for line in list(f)[1:]:
                    try:
                        rdev = os.stat(line.split()[0]).st_rdev
                    except (OSError, IndexError):
                        continue
                    used.add(f"{os.major(rdev)}:{os.minor(rdev)}")
        except OSError:
            pass

        def users(syspath: str, depth: int = 0) -> int:
            if depth > 8:      # holders form a DAG; a loop in a fake tree must not hang us
                return 0
            count = 1 if _read(os.path.join(syspath, "dev")) in used else 0
            for part in _listdir(syspath):
                pdir = os.path.join(syspath, part)
                if "DEVTYPE=partition" in (_read(os.path.join(pdir, "uevent")) or "").split():
                    count += users(pdir, depth + 1)
            for holder in _listdir(os.path.join(syspath, "holders")):
                count += users(os.path.realpath(os.path.join(syspath, "holders", holder)), depth + 1)
            return count
        return any(users(self.path("class", "block", lun.block)) for lun in self.luns(sid) if lun.block)

    def unbound(self, sid: int) -> bool:
        """The session's SCSI target is removed (target_state UNBOUND, Linux >= 5.18's
        scsi_transport_iscsi.c): an unbind already ran for it."""
        return self.attr("iscsi_session", f"session{sid}", "target_state") == "UNBOUND"

    def session(self, sid: int, luns: bool = True) -> Session | None:
        """The session's attributes; `luns=False` skips walking its SCSI devices (luns is ())."""
        sdir = self.path("class", "iscsi_session", f"session{sid}")
        if not os.path.isdir(sdir):
            return None
        cdir = self.path("class", "iscsi_connection", f"connection{sid}:0")
        host_no = self.host_of(sid)
        return Session(
            sid=sid, host_no=host_no, target=_read(os.path.join(sdir, "targetname")),
            tpgt=_int(_read(os.path.join(sdir, "tpgt"))), state=_read(os.path.join(sdir, "state")),
            creator=_int(_read(os.path.join(sdir, "creator"))),
            address=_read(os.path.join(cdir, "persistent_address")),
            port=_int(_read(os.path.join(cdir, "persistent_port"))),
            conn_state=_read(os.path.join(cdir, "state")),
            initiator_name=(_read(os.path.join(sdir, "initiatorname"))
                            or _read(self.path("class", "iscsi_host", f"host{host_no}", "initiatorname"))),
            iface_name=_read(os.path.join(sdir, "ifacename")),
            luns=tuple(self.luns(sid)) if luns else (),
            transport=self.host_transport(host_no),
        )

    def host_transport(self, host_no: int | None) -> str:
        """The transport of Scsi_Host `host_no`: its proc_name (iscsi_tcp, iscsi_iser, bnx2i)
        without the "iscsi_" prefix, as open-iscsi's iscsi_sysfs_get_transport_by_host reads it."""
        name = _read(self.path("class", "scsi_host", f"host{host_no}", "proc_name")) or "iscsi_tcp"
        return name[len("iscsi_"):] if name.startswith("iscsi_") else name

    def sessions(self, luns: bool = True) -> list[Session]:
        return [s for sid in self.session_ids() if (s := self.session(sid, luns)) is not None]

    def session_refs(self) -> list[SessionRef]:
        """Every session as a SessionRef (a session gone while it is read is left out)."""
        out = []
        for sid in self.session_ids():
            target = _read(self.path("class", "iscsi_session", f"session{sid}", "targetname"))
            if target is None:
                continue
            cdir = self.path("class", "iscsi_connection", f"connection{sid}:0")
            out.append(SessionRef(sid, target, _read(os.path.join(cdir, "persistent_address")),
                                  _int(_read(os.path.join(cdir, "persistent_port"))),
                                  _read(self.path("class", "iscsi_session", f"session{sid}", "ifacename"))))
        return out

    # ---- actions ---------------------------------------------------------
    def scan_host(self, host_no: int, channel: str = "-", target: str = "-", lun: str = "-") -> None:
        """Ask the SCSI midlayer to scan a session's host (what `node.session.scan = auto` does)."""
        with open(self.path("class", "scsi_host", f"host{host_no}", "scan"), "w") as f:
            f.write(f"{channel} {target} {lun}")

"""LIO iSCSI target events: logins, logouts, drops and failed logins as they happen.

The kernel side is kmod/iscsikit_lio.c, which multicasts one generic netlink
message per event. Its numbers are declared in kmod/iscsikit_lio.h; the
tables below repeat them (the package does not ship kmod/), and
tests/unit/test_target_events.py parses the header and fails on any
difference. Each event carries a sequence number with no gaps, so a reader
that was too slow for its socket buffer reports exactly how many it lost
(`Dropped`), never silently.

Without the module, `poll()` diffs configfs (sessions.list_sessions) on a
timer, as targetcli does: it sees sessions appear and go, never why, nor a
failed login.
"""

from __future__ import annotations

import errno
import struct
import time
from dataclasses import dataclass
from typing import Iterator

from ..kernel import genl
from . import configfs, sessions

FAMILY = "iscsikit_lio"
VERSION = 1
GROUP = "events"
MODULE = "iscsikit_lio"

# enum iscsikit_lio_cmd
CMD_EVENT, CMD_GET_STATUS = 1, 2

# enum iscsikit_lio_attr: number -> (name, payload type); the C name is ISCSIKIT_LIO_A_<NAME>.
# Types: u8/u16/u32/u64, str (NUL-terminated), isid (6 bytes), pad.
ATTRS: dict[int, tuple[str, str]] = {
    1: ("seq", "u64"),
    2: ("event", "u8"),
    3: ("time_ns", "u64"),
    4: ("target", "str"),
    5: ("tpgt", "u16"),
    6: ("initiator", "str"),
    7: ("isid", "isid"),
    8: ("tsih", "u16"),
    9: ("sid", "u32"),
    10: ("cid", "u16"),
    11: ("initiator_addr", "str"),
    12: ("initiator_port", "u16"),
    13: ("portal_addr", "str"),
    14: ("portal_port", "u16"),
    15: ("auth", "str"),
    16: ("header_digest", "u8"),
    17: ("data_digest", "u8"),
    18: ("session_type", "u8"),
    19: ("reason", "u8"),
    20: ("status_class", "u8"),
    21: ("status_detail", "u8"),
    22: ("transport", "str"),
    23: ("nconn", "u32"),
    24: ("version", "u32"),
    25: ("armed", "u8"),
    26: ("lost", "u64"),
    27: ("missing", "str"),
    28: ("pad", "pad"),
}
# enum iscsikit_lio_event
EVENTS = {1: "login", 2: "conn_add", 3: "conn_close", 4: "session_close", 5: "login_failed"}
# enum iscsikit_lio_conn_reason / iscsikit_lio_sess_reason
CONN_REASONS = {1: "logout", 2: "dropped", 3: "reinstated"}
SESSION_REASONS = {1: "logout", 2: "conn_lost", 3: "time2retain", 4: "reinstated"}
DIGESTS = {0: "None", 1: "CRC32C"}
SESSION_TYPES = {0: "Normal", 1: "Discovery"}

_INT = {"u8": "=B", "u16": "=H", "u32": "=I", "u64": "=Q"}


def decode_attrs(attrs: dict[int, bytes]) -> dict:
    out: dict = {}
    for kind, raw in attrs.items():
        name, typ = ATTRS.get(kind, (None, None))
        if name is None or typ == "pad":
            continue
        if typ in _INT:
            if len(raw) < struct.calcsize(_INT[typ]):
                continue
            out[name] = struct.unpack_from(_INT[typ], raw)[0]
        elif typ == "str":
            out[name] = genl.cstring(raw)
        elif typ == "isid":
            out[name] = raw[:6].hex()
    return out


@dataclass
class Event:
    """One target event; fields the kernel did not send for this kind stay None/""."""
    kind: str
    seq: int | None = None
    time_ns: int | None = None          # CLOCK_MONOTONIC (time.monotonic_ns()) when the kernel hook ran
    target: str = ""
    tpgt: int | None = None
    initiator: str = ""
    isid: str = ""
    tsih: int | None = None
    sid: int | None = None
    cid: int | None = None
    initiator_addr: str = ""
    initiator_port: int | None = None
    portal_addr: str = ""
    portal_port: int | None = None
    auth: str = ""
    header_digest: str = ""
    data_digest: str = ""
    session_type: str = ""
    reason: str = ""
    status_class: int | None = None
    status_detail: int | None = None
    transport: str = ""
    nconn: int | None = None
    source: str = "kmod"                # kmod, or configfs for the poller

    def to_dict(self) -> dict:
        d = {"event": self.kind}
        for k, v in self.__dict__.items():
            if k != "kind" and v not in (None, ""):
                d[k] = v
        if self.status_class is not None:
            from ..proto.status import STATUS_TEXT
            d["status"] = STATUS_TEXT.get((self.status_class, self.status_detail or 0),
                                          f"status {self.status_class:#04x}{self.status_detail or 0:02x}")
        return d

    def line(self) -> str:
        """One human line: what happened, to whom, from where, why."""
        who = f"{self.initiator or '?'} -> {self.target or '(discovery)'}"
        if self.tpgt is not None:
            who += f" tpg{self.tpgt}"
        where = ""
        if self.initiator_addr:
            host = f"[{self.initiator_addr}]" if ":" in self.initiator_addr else self.initiator_addr
            where = f" from {host}:{self.initiator_port}"
        ids = ""
        if self.isid:
            ids += f" isid {self.isid}"
        if self.tsih is not None:
            ids += f" tsih {self.tsih}"
        if self.sid is not None and self.kind != "login_failed":
            ids += f" sid {self.sid}"
        if self.kind in ("conn_add", "conn_close") and self.cid is not None:
            ids += f" cid {self.cid}"
        tail = ""
        if self.kind in ("login", "conn_add"):
            tail = f" auth {self.auth or '?'} digests {self.header_digest or '?'}/{self.data_digest or '?'}"
            if self.session_type == "Discovery":
                tail += " discovery"
        if self.reason:
            tail += f" reason {self.reason}"
        if self.status_class is not None:
            tail += f" status {self.status_class}/{self.status_detail}: {self.to_dict()['status']}"
        return f"{self.kind} {who}{where}{ids}{tail}"


@dataclass
class Dropped:
    """`count` events the kernel numbered that this reader never got (its socket buffer was full)."""
    count: int

    def to_dict(self) -> dict:
        return {"event": "dropped", "count": self.count}

    def line(self) -> str:
        return f"dropped {self.count} event{'s' if self.count != 1 else ''} (the reader was too slow)"


def event_from(attrs: dict[int, bytes]) -> Event:
    v = decode_attrs(attrs)
    kind = EVENTS.get(v.pop("event", 0), "unknown")
    reason = v.pop("reason", None)
    if reason is not None:
        table = CONN_REASONS if kind in ("conn_close",) else SESSION_REASONS
        v["reason"] = table.get(reason, str(reason))
    for key in ("header_digest", "data_digest"):
        if key in v:
            v[key] = DIGESTS.get(v[key], str(v[key]))
    if "session_type" in v:
        v["session_type"] = SESSION_TYPES.get(v["session_type"], str(v["session_type"]))
    known = Event.__dataclass_fields__
    return Event(kind=kind, **{k: x for k, x in v.items() if k in known})


@dataclass
class Status:
    version: int
    armed: bool
    seq: int
    lost: int
    missing: str = ""


class NotLoaded(Exception):
    """The kernel has no iscsikit_lio family: the module is not loaded."""


class Reader:
    """Joins the module's multicast group; `events()` yields Event and Dropped in order."""

    def __init__(self, rcvbuf: int | None = None) -> None:
        self.sock = genl.GenlSocket(rcvbuf)
        try:
            fam = self.sock.family(FAMILY)
            if fam is None:
                raise NotLoaded(f"kernel module {MODULE} is not loaded")
            if fam.version != VERSION:
                raise NotLoaded(f"kernel module {MODULE} speaks version {fam.version}, this reader {VERSION}")
            self.family = fam
            # join before reading the baseline: an event numbered after it reaches us
            self.sock.join(fam.groups[GROUP])
            self.status = self.get_status()
        except BaseException:
            self.sock.close()
            raise
        self.last = self.status.seq
        self.dropped = 0
        self._overrun = False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Reader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def get_status(self) -> Status:
        replies = [m for m in self.sock.request(self.family.id, CMD_GET_STATUS, VERSION) if m.cmd == CMD_GET_STATUS]
        v = decode_attrs(replies[0].attrs)
        return Status(v.get("version", 0), bool(v.get("armed")), v.get("seq", 0), v.get("lost", 0),
                      v.get("missing", ""))

    def _account(self, seq: int) -> Dropped | None:
        gap = seq - self.last - 1
        self.last = max(self.last, seq)
        if gap > 0:
            self.dropped += gap
            return Dropped(gap)
        return None

    def _decode(self, msgs: list) -> Iterator[Event | Dropped]:
        for m in msgs:
            if m.family != self.family.id or m.cmd != CMD_EVENT:
                continue
            ev = event_from(m.attrs)
            if ev.seq is not None and (gap := self._account(ev.seq)):
                yield gap
            yield ev

    def events(self, timeout: float | None = None) -> Iterator[Event | Dropped]:
        """Events as they come; stops after `timeout` seconds without one (None: never)."""
        while True:
            try:
                msgs = self.sock.recv(0.2 if self._overrun else timeout)
            except OSError as e:
                if e.errno != errno.ENOBUFS:
                    raise
                # netlink dropped messages for us; the next one's number says how many
                self._overrun = True
                continue
            if not msgs and self._overrun:
                # none came: the module's count settles it. Every event it numbered up to
                # status.seq is in our queue already (numbered and queued under one lock),
                # read ahead of the reply into sock.pending.
                self._overrun = False
                status = self.get_status()
                pending, self.sock.pending = self.sock.pending, []
                yield from self._decode(pending)
                if (gap := status.seq - self.last) > 0:
                    self.last = status.seq
                    self.dropped += gap
                    yield Dropped(gap)
                continue
            if not msgs:
                return
            yield from self._decode(msgs)


def module_status() -> Status | None:
    """The module's status, or None when it is not loaded."""
    try:
        with Reader() as r:
            return r.status
    except NotLoaded:
        return None


def _key(s: sessions.Session) -> tuple:
    return (s.target, s.tpg, s.initiator, s.isid, s.sid)


def poll(root: str = configfs.ROOT, interval: float = 1.0, stop=None) -> Iterator[Event]:
    """The fallback: configfs re-read every `interval` s; sessions that appeared (login) and went
    (session_close, reason unknown). Sessions already there at start are not reported."""
    known = {_key(s): s for s in sessions.list_sessions(root)}
    while stop is None or not stop():
        time.sleep(interval)
        now = {_key(s): s for s in sessions.list_sessions(root)}
        t = time.monotonic_ns()
        for k in now.keys() - known.keys():
            s = now[k]
            yield _from_session("login", s, t)
        for k in known.keys() - now.keys():
            yield _from_session("session_close", known[k], t)
        known = now


def _from_session(kind: str, s: sessions.Session, t: int) -> Event:
    c = s.connections[0] if s.connections else None
    return Event(kind=kind, time_ns=t, target=s.target, tpgt=s.tpg, initiator=s.initiator, isid=s.isid,
                 sid=s.sid, initiator_addr=c.address if c else "", session_type=s.type,
                 source="configfs")

"""Guest-side: a timeline of one path's failover and failback, the same for any initiator stack.

What it watches, each from its own thread, stamped with time.monotonic():
 - the wire: every TCP segment to or from port 3260 on the path's netdev (AF_PACKET), so a
   SYN is a reconnect attempt and a Login Response's status (RFC 7143 §11.13: opcode 0x23,
   Status-Class at byte 36, Status-Detail at 37) says how it ended;
 - sysfs, every 20 ms: the iSCSI session's state (the kernel sets LOGGED_IN when START_CONN
   unblocks it, scsi_transport_iscsi.c __iscsi_unblock_session), the SCSI device's state
   (transport-offline when recovery_tmo fires) and its write counter;
 - device-mapper: `dmsetup wait` on the map, then the path's A/F in `dmsetup status` (the
   kernel fails the path on the first I/O error; multipathd reinstates it).
Nothing here reads the initiator's own logs, so iscsid and iscsikitd are timed alike.
"""

import contextlib
import socket
import struct
import subprocess
import threading
import time

ETH_P_ALL = 0x0003
PORT = 3260


class Timeline:
    def __init__(self, netdev: str, sid: int, disk: str, mapname: str):
        self.netdev, self.sid, self.disk, self.mapname = netdev, sid, disk, mapname
        self.events: list[tuple[float, str]] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        with open(f"/sys/block/{disk}/dev") as f:
            self.devno = f.read().strip()
        self.threads = [threading.Thread(target=fn, daemon=True) for fn in (self._wire, self._sysfs, self._dm)]

    def add(self, what: str, t: float | None = None) -> None:
        with self.lock:
            self.events.append((time.monotonic() if t is None else t, what))

    def start(self) -> "Timeline":
        for t in self.threads:
            t.start()
        return self

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(5)

    def window(self, start: float, end: float) -> list[tuple[float, str]]:
        """The events from `start` to `end`, times relative to `start`."""
        with self.lock:
            return [(round(t - start, 3), w) for t, w in sorted(self.events) if start <= t <= end]

    # ---- the wire -------------------------------------------------------------
    def _wire(self) -> None:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.bind((self.netdev, 0))
        s.settimeout(0.2)
        logging_in: set[int] = set()      # initiator ports of connections still in their login phase
        while not self.stop.is_set():
            try:
                frame = s.recv(256)
            except socket.timeout:
                continue
            t = time.monotonic()
            what = _segment(frame, logging_in)
            if what:
                self.add(what, t)

    # ---- sysfs ----------------------------------------------------------------
    def _sysfs(self) -> None:
        paths = {"session": f"/sys/class/iscsi_session/session{self.sid}/state",
                 "device": f"/sys/block/{self.disk}/device/state"}
        last: dict[str, str] = {}
        last_writes, moved_at = None, time.monotonic()
        while not self.stop.is_set():
            for key, path in paths.items():
                try:
                    with open(path) as f:
                        v = f.read().strip()
                except OSError:
                    v = "gone"
                if last.get(key) != v:
                    last[key] = v
                    self.add(f"{key} {v}")
            try:
                with open(f"/sys/block/{self.disk}/stat") as f:
                    w = int(f.read().split()[6])
            except OSError:
                w = None
            now = time.monotonic()
            if last_writes is not None and w is not None and w > last_writes:
                if now - moved_at > 0.5:      # only after a stall: the writes start again
                    self.add("writes move", now)
                moved_at = now
            last_writes = w if w is not None else last_writes
            time.sleep(0.02)

    # ---- device-mapper ----------------------------------------------------------
    def _dm(self) -> None:
        last = None
        while not self.stop.is_set():
            r = subprocess.run(["dmsetup", "info", "-c", "--noheadings", "-o", "events", self.mapname],
                               capture_output=True, text=True)
            event = r.stdout.strip()
            r = subprocess.run(["dmsetup", "status", self.mapname], capture_output=True, text=True)
            f = r.stdout.split()
            state = f[f.index(self.devno) + 1] if self.devno in f else "?"
            if state != last:
                last = state
                self.add(f"dm path {'active' if state == 'A' else 'failed' if state == 'F' else state}")
            if not event.isdigit():
                time.sleep(0.2)
                continue
            # returns once the map's event counter passes `event` (a path failed or reinstated)
            with contextlib.suppress(subprocess.TimeoutExpired):
                subprocess.run(["dmsetup", "wait", self.mapname, event], capture_output=True, timeout=30)


def _segment(frame: bytes, logging_in: set[int]) -> str | None:
    """One Ethernet frame, as a line when it is TCP to or from PORT with SYN/FIN/RST or a login
    PDU. A login PDU is looked for only on a connection from its SYN to its final Login
    Response (`logging_in`: their initiator ports), not in full-feature data."""
    if len(frame) < 14 + 20 or frame[12:14] != b"\x08\x00":
        return None
    ip = frame[14:]
    ihl = (ip[0] & 0x0F) * 4
    if ip[9] != 6 or len(ip) < ihl + 20:
        return None
    tcp = ip[ihl:]
    sport, dport = struct.unpack("!HH", tcp[:4])
    if PORT not in (sport, dport):
        return None
    flags = tcp[13]
    side = "target" if sport == PORT else "initiator"
    port = dport if sport == PORT else sport
    if side == "initiator" and flags & 0x02:
        logging_in.add(port)
    names = [n for bit, n in ((0x02, "SYN"), (0x01, "FIN"), (0x04, "RST")) if flags & bit]
    payload = tcp[(tcp[12] >> 4) * 4:]
    total = struct.unpack("!H", ip[2:4])[0]
    if total - ihl - (tcp[12] >> 4) * 4 <= 0:
        payload = b""
    if port in logging_in and len(payload) >= 38 and payload[0] & 0x3F == 0x23:
        final = payload[1] & 0x80 and payload[1] & 0x03 == 3 or payload[36] != 0   # T bit, NSG full feature
        names.append(f"login-rsp {payload[36]:02x}/{payload[37]:02x}" + (" final" if final else ""))
        if final:
            logging_in.discard(port)
    elif port in logging_in and len(payload) >= 1 and payload[0] & 0x3F == 0x03:
        names.append("login-req")
    if flags & 0x05:
        logging_in.discard(port)
    if not names:
        return None
    return f"{side} {' '.join(names)}"


def summary(events: list[tuple[float, str]]) -> dict:
    """First time of each kind of step in a window (relative seconds), for the tables."""
    first: dict[str, float] = {}
    for t, what in events:
        first.setdefault(what, t)
    return first

"""The one door to iscsikitd: every Python caller (the CLI, autologin, D-Bus, tests) uses `Client`.

    c = Client()                      # $ISCSIKIT_SOCKET or /run/iscsikit/iscsikitd.sock
    c.login(records.login_request(...)) -> {"sid", "host_no", "scan"}   # scan: done | running | failed: …
    c.logout(sid); c.sessions(); c.stats(sid); c.rescan(sid); c.version(); c.stop()
    for ev in c.watch(): ...          # session_added, state_changed, ... (protocol.EVENTS)
    c.run_cli(argv, env, tty, out, err) -> exit code    # a CLI run in the warm daemon

Errors are MgmtError (exit code + message). Requests are checked against
protocol.py before they leave, so a caller's mistake is named here, not
after a round trip; the daemon checks them again (other clients exist).
Imports stay light: the CLI imports this on every run.
"""

from __future__ import annotations

import json

from .exitcodes import ExitCode
from . import mgmt, protocol
from .mgmt import MgmtError


class Client:
    def __init__(self, path: str | None = None, timeout: float = 300.0):
        self.path = path or mgmt.socket_path()
        self.timeout = timeout

    # ---- one request, one reply ------------------------------------------------
    def call(self, op: str, args: dict | None = None, *, timeout: float | None = None):
        args = args or {}
        try:
            protocol.check_request(op, args)
        except protocol.RequestError as e:
            raise MgmtError(ExitCode.INVALID_MGMT_REQ, str(e)) from None
        return mgmt.call(op, args, path=self.path, timeout=self.timeout if timeout is None else timeout)

    def call_many(self, requests, on_done=None) -> list:
        """Each (op, args) sent as the iterable yields it; results (or MgmtError) in order."""
        def checked():
            for op, args in requests:
                protocol.check_request(op, args)
                yield op, args
        return mgmt.call_many(checked(), path=self.path, timeout=self.timeout, on_done=on_done)

    def reachable(self, timeout: float = 2) -> bool:
        """The daemon accepts a connection (nothing is sent)."""
        try:
            mgmt._connect(self.path, timeout).close()
            return True
        except MgmtError:
            return False

    def version(self) -> dict:
        return self.call("version", timeout=10)

    def login(self, request: dict) -> dict:
        return self.call("login", request)

    def logout(self, sid: int) -> dict:
        return self.call("logout", {"sid": int(sid)})

    def sessions(self, timeout: float = 10, devices: bool = True) -> list[dict]:
        """Every kernel session with the daemon's view of it; devices=False leaves out
        "disks" (no walk of the SCSI devices: what a listing of states needs)."""
        return self.call("sessions", {} if devices else {"devices": False}, timeout=timeout)

    def stats(self, sid: int) -> dict:
        return self.call("stats", {"sid": int(sid)}, timeout=30)

    def rescan(self, sid: int) -> dict:
        return self.call("rescan", {"sid": int(sid)}, timeout=60)

    def stop(self) -> None:
        self.call("stop", timeout=10)

    # ---- the event stream --------------------------------------------------------
    def watch(self, timeout: float | None = None) -> "Watch":
        """Subscribe: `.sessions` is the daemon's list at the moment of subscribing, then
        iterating yields every event after it (nothing is missed in between)."""
        return Watch(self.path, timeout)

    # ---- a CLI run in the daemon ---------------------------------------------------
    def run_cli(self, argv: list[str], env: dict, tty: list[bool], out, err) -> int:
        """Run an iscsiadm command line in the daemon; its stdout and stderr bytes go to
        `out(bytes)` and `err(bytes)` as they come. Returns its exit code."""
        args = {"argv": list(argv), "env": {k: env[k] for k in protocol.CLI_ENV if k in env},
                "tty": list(tty)}
        protocol.check_request("cli", args)
        s = mgmt._connect(self.path, self.timeout)
        try:
            mgmt._send(s, "cli", args)
            buf = mgmt._read_line(s, "cli", self.timeout)
            line, rest = buf.split(b"\n", 1)
            mgmt._result(line)
            sinks = {protocol.FRAME_OUT: out, protocol.FRAME_ERR: err}
            while True:
                while len(rest) < protocol.FRAME_HEADER:
                    rest += mgmt._recv(s, "cli", self.timeout)
                kind, size = rest[0], int.from_bytes(rest[1:5], "big")
                if size > protocol.MAX_FRAME or (kind not in sinks and kind != protocol.FRAME_EXIT):
                    raise MgmtError(ExitCode.INTERNAL, "iSCSI daemon sent a malformed frame")
                while len(rest) < protocol.FRAME_HEADER + size:
                    rest += mgmt._recv(s, "cli", self.timeout)
                data = rest[protocol.FRAME_HEADER:protocol.FRAME_HEADER + size]
                rest = rest[protocol.FRAME_HEADER + size:]
                if kind == protocol.FRAME_EXIT:
                    return int.from_bytes(data, "big", signed=True)
                sinks[kind](data)
        finally:
            s.close()


class Watch:
    """An open subscription to the daemon's events; iterate it, close it (or use `with`)."""

    def __init__(self, path: str, timeout: float | None):
        self._s = mgmt._connect(path, 10)
        try:
            mgmt._send(self._s, "watch", {})
            buf = mgmt._read_line(self._s, "watch", 10)
            line, self._buf = buf.split(b"\n", 1)
            self.sessions: list[dict] = mgmt._result(line)["sessions"]
        except BaseException:
            self._s.close()
            raise
        self._s.settimeout(timeout)

    def fileno(self) -> int:
        return self._s.fileno()

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        """The next event; StopIteration when the daemon goes away; TimeoutError when
        the watch was opened with a timeout and nothing came within it."""
        while b"\n" not in self._buf:
            try:
                chunk = self._s.recv(65536)
            except (ConnectionResetError, BrokenPipeError, OSError) as e:
                if isinstance(e, TimeoutError):
                    raise
                chunk = b""
            if not chunk:
                raise StopIteration
            self._buf += chunk
            if len(self._buf) > mgmt.MAX_LINE:
                raise MgmtError(ExitCode.INTERNAL, "iSCSI daemon event too large")
        line, self._buf = self._buf.split(b"\n", 1)
        ev = json.loads(line)
        if ev.get("v") != protocol.VERSION:
            raise MgmtError(ExitCode.INTERNAL, f"iSCSI daemon speaks protocol {ev.get('v')}")
        return ev

    def close(self) -> None:
        self._s.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

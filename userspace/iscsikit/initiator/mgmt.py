"""The management socket's framing: versioned JSON lines over AF_UNIX (the requests
and their arguments are declared in protocol.py; callers use client.py).

One request per line, answered in order. Only uid 0 is served (SO_PEERCRED);
the socket file is 0600 as well. Requests and replies are bounded in size.
"""

from __future__ import annotations

# _socket, not socket: the client only connects, sends and reads, and socket.py pulls in
# selectors and array, ~0.1 s of every iscsikit-adm run in the emulated lab guest
import _socket
import json
import os
import struct
from collections.abc import Callable, Iterable

from .errors import IscsiError
from .exitcodes import ExitCode
from .protocol import VERSION
DEFAULT_SOCKET = "/run/iscsikit/iscsikitd.sock"
MAX_LINE = 1 << 20


def socket_path() -> str:
    return os.environ.get("ISCSIKIT_SOCKET", DEFAULT_SOCKET)


class MgmtError(IscsiError):
    """A request the daemon refused, or that could not reach it."""

    def __init__(self, exit_code: int, message: str):
        super().__init__(exit_code, message)


def peer_uid(sock) -> int:
    creds = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


def encode(obj: dict) -> bytes:
    return (json.dumps(obj, separators=(",", ":")) + "\n").encode()


def ok(result=None) -> dict:
    return {"v": VERSION, "ok": True, "result": result}


def fail(exit_code: int, error: str) -> dict:
    return {"v": VERSION, "ok": False, "exit_code": int(exit_code), "error": error}


def parse_request(line: bytes, serves: frozenset | None = None, not_served: str = ""):
    """One request line checked as every server of this socket checks it: a JSON object,
    this protocol's version, a request `serves` holds (all of protocol.py's when None;
    another gets OP_NOT_SUPP and `not_served`), its arguments as protocol.py declares them.
    (op, args, None), or (None, None, the failure reply to send)."""
    from . import protocol
    try:
        req = json.loads(line)
        if not isinstance(req, dict):
            raise ValueError("not an object")
    except ValueError as e:
        return None, None, fail(ExitCode.INVALID_MGMT_REQ, f"bad request: {e}")
    if req.get("v") != VERSION:
        return None, None, fail(ExitCode.INVALID_MGMT_REQ,
                                f"protocol version {req.get('v')} not served (this is {VERSION})")
    op = req.get("op")
    if serves is not None and op not in serves:
        return None, None, fail(ExitCode.OP_NOT_SUPP, not_served)
    try:
        return op, protocol.check_request(op, req.get("args", {})), None
    except protocol.RequestError as e:
        return None, None, fail(ExitCode.INVALID_MGMT_REQ, str(e))


def _connect(path: str, timeout: float) -> _socket.socket:
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    s.settimeout(timeout)
    try:
        s.connect(path)
    except OSError as e:
        s.close()
        raise MgmtError(ExitCode.ISCSID_NOTCONN, f"can not connect to iSCSI daemon at {path} ({e.strerror})") from None
    return s


def _send(s: _socket.socket, op: str, args: dict | None) -> None:
    try:
        s.sendall(encode({"v": VERSION, "op": op, "args": args or {}}))
    except (BrokenPipeError, ConnectionResetError):
        pass   # the daemon may have answered (a refusal) and closed already: read what it said


def _result(line: bytes):
    reply = json.loads(line)
    if reply.get("v") != VERSION:
        raise MgmtError(ExitCode.INTERNAL, f"iSCSI daemon speaks protocol {reply.get('v')}, this client {VERSION}")
    if not reply.get("ok"):
        raise MgmtError(reply.get("exit_code", ExitCode.INTERNAL), reply.get("error", "unknown error"))
    return reply.get("result")


def call(op: str, args: dict | None = None, *, path: str | None = None, timeout: float = 300.0):
    """Send one request and return its result; MgmtError carries the daemon's exit code."""
    path = path or socket_path()
    s = _connect(path, timeout)
    try:
        _send(s, op, args)
        buf = _read_line(s, op, timeout)
    finally:
        s.close()
    return _result(buf.split(b"\n", 1)[0])


def _recv(s: _socket.socket, op: str, timeout: float) -> bytes:
    """The next bytes of a reply (`s` has `timeout` set); MgmtError when none come."""
    try:
        chunk = s.recv(65536)
    except (BrokenPipeError, ConnectionResetError):
        chunk = b""
    except TimeoutError:
        raise MgmtError(ExitCode.ISCSID_COMM_ERR, f"iSCSI daemon did not answer {op} within {timeout:.0f} s") from None
    if not chunk:
        raise MgmtError(ExitCode.ISCSID_COMM_ERR, f"iSCSI daemon closed the connection during {op}")
    return chunk


def _read_line(s: _socket.socket, op: str, timeout: float) -> bytes:
    """Bytes up to and including the first newline (and whatever came after it), bounded."""
    buf = b""
    while b"\n" not in buf:
        buf += _recv(s, op, timeout)
        if len(buf) > MAX_LINE:
            raise MgmtError(ExitCode.INTERNAL, "iSCSI daemon reply too large")
    return buf


def call_many(requests: Iterable[tuple[str, dict]], *, path: str | None = None, timeout: float = 300.0,
              on_done: Callable[[int], None] | None = None) -> list:
    """Send every request, one connection each, each as soon as the iterable yields it,
    and wait for all the replies.

    The daemon serves connections concurrently, so N logins take about the time of
    the slowest, and a lazy `requests` lets the first ones run while the caller still
    builds the next. One thread multiplexes the replies (starting N client threads
    costs more than the requests under emulation). Returns, in request order, each
    result or the MgmtError it failed with; `on_done(i)` is called as reply i arrives.
    """
    import select
    import time
    path = path or socket_path()
    ops: list[str] = []
    out: list = []
    pending: dict[int, tuple[_socket.socket, int, bytearray]] = {}
    poller = select.poll()

    def done(i: int, result) -> None:
        out[i] = result
        if on_done:
            on_done(i)

    def take(fd: int) -> None:
        s, i, buf = pending[fd]
        try:
            chunk = s.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except (BrokenPipeError, ConnectionResetError):
            chunk = b""
        buf += chunk
        if b"\n" in buf:
            try:
                result = _result(bytes(buf.split(b"\n", 1)[0]))
            except MgmtError as e:
                result = e
        elif not chunk:
            result = MgmtError(ExitCode.ISCSID_COMM_ERR, f"iSCSI daemon closed the connection during {ops[i]}")
        elif len(buf) > MAX_LINE:
            result = MgmtError(ExitCode.INTERNAL, "iSCSI daemon reply too large")
        else:
            return
        poller.unregister(fd)
        s.close()
        del pending[fd]
        done(i, result)

    try:
        for i, (op, args) in enumerate(requests):
            ops.append(op)
            out.append(None)
            try:
                s = _connect(path, timeout)
            except MgmtError as e:
                done(i, e)
                continue
            _send(s, op, args)
            s.setblocking(False)
            pending[s.fileno()] = (s, i, bytearray())
            poller.register(s, select.POLLIN)
        deadline = time.monotonic() + timeout
        while pending:
            ready = poller.poll(max(0.0, deadline - time.monotonic()) * 1000)
            if not ready:
                for _s, i, _buf in pending.values():
                    out[i] = MgmtError(ExitCode.ISCSID_COMM_ERR,
                                       f"iSCSI daemon did not answer {ops[i]} within {timeout:.0f} s")
                break
            for fd, _event in ready:
                take(fd)
    finally:
        for s, _i, _buf in pending.values():
            s.close()
    return out

"""`iscsikit-targetd`: iscsikit-target's one-shot commands in a warm process.

OpenStack Cinder's LIO driver runs one process per step of every volume
export; under emulation the Python interpreter's start-up alone is most of
such a step (bench/results/target_cinder.md). The forwarding `iscsikit-target`
(the C program in userspace/iscsiadm-forward/, built with -DFORWARD_TARGET)
sends each command line here, as the forwarding `iscsiadm` does to iscsikitd,
over the same protocol (initiator/protocol.py's "cli" request and its frames);
cli/target_served.py runs it with cli/target.py's own code. When this server
is not running, or refuses a command, the forwarder runs it in its own process.

Root only: the socket file is 0600 and every peer's SO_PEERCRED uid must be 0
(a non-root caller's command runs in its own process, as its own user). A
request line is bounded (mgmt.MAX_LINE) and must arrive within
REQUEST_TIMEOUT; a client that stops reading loses its output, never stops
the command midway.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time


log = logging.getLogger("iscsikit.targetd")
SERVES = frozenset({"cli"})
REQUEST_TIMEOUT = 5.0     # seconds for the request line
SEND_TIMEOUT = 30.0       # seconds a frame may wait for a client that does not read


class _Stop(Exception):
    pass


_RUNNING: set[threading.Thread] = set()


def _read_line(conn: socket.socket, limit: int) -> bytes:
    buf = b""
    while b"\n" not in buf:
        if len(buf) > limit:
            raise ValueError("request too large")
        chunk = conn.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf.split(b"\n", 1)[0]


def _request(line: bytes):
    """(args, None) for a cli request this server runs, or (None, refusal reply)."""
    from ..initiator import mgmt
    from ..initiator.exitcodes import ExitCode
    from . import target_served
    _op, args, refused = mgmt.parse_request(line, SERVES, "iscsikit-targetd serves iscsikit-target commands only")
    if refused is not None:
        return None, refused
    if not all(isinstance(a, str) for a in args["argv"]) or not target_served.servable(args["argv"], args["env"], args["tty"]):
        # the interactive shell and the configshell commands run in the client's own process
        return None, mgmt.fail(ExitCode.OP_NOT_SUPP, "not a command this server runs")
    return args, None


def serve_one(conn: socket.socket) -> None:
    from ..initiator import mgmt, protocol
    from ..initiator.exitcodes import ExitCode
    from . import target_served
    try:
        conn.settimeout(REQUEST_TIMEOUT)
        try:
            line = _read_line(conn, mgmt.MAX_LINE)
        except ValueError:
            conn.sendall(mgmt.encode(mgmt.fail(ExitCode.INVALID_MGMT_REQ, "request too large")))
            return
        if mgmt.peer_uid(conn) != 0:
            conn.sendall(mgmt.encode(mgmt.fail(ExitCode.ACCESS, "iscsikit-targetd serves root only")))
            return
        args, refusal = _request(line)
        if refusal is not None:
            conn.sendall(mgmt.encode(refusal))
            return
        conn.sendall(mgmt.encode(mgmt.ok({"frames": "binary"})))
        conn.settimeout(SEND_TIMEOUT)
        alive = [True]

        def write(kind: int, data: bytes) -> None:
            if alive[0]:
                try:
                    conn.sendall(protocol.frame(kind, data))
                except OSError:       # the client went away: the command still runs to its end
                    alive[0] = False
        start = time.monotonic()
        try:
            code = target_served.run(args["argv"], args["env"], args["tty"], write, args.get("cwd"))
        except Exception as e:      # a bug must not end the server
            log.exception("served command failed")
            write(protocol.FRAME_ERR, f"iscsikit-target: internal error: {e}\n".encode())
            code = 1
        # the exit code and the time only: a command line may carry CHAP secrets
        log.debug("served command: exit %d, %.3f s", code, time.monotonic() - start)
        write(protocol.FRAME_EXIT, int(code).to_bytes(4, "big", signed=True))
    except OSError:
        pass
    finally:
        conn.close()


def listen(path: str) -> socket.socket:
    """The server's socket at `path`: 0600 from its creation (root only before SO_PEERCRED)."""
    os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        os.unlink(path)          # a stale one left by a killed server
    except FileNotFoundError:
        pass
    old = os.umask(0o177)
    try:
        s.bind(path)
    finally:
        os.umask(old)
    s.listen(64)
    return s


def serve(sock: socket.socket, stop: threading.Event | None = None) -> None:
    """Accept until `stop` is set (tests) or a signal raises _Stop (main)."""
    sock.settimeout(0.5 if stop is not None else None)
    while stop is None or not stop.is_set():
        try:
            conn, _ = sock.accept()
        except TimeoutError:
            continue
        except OSError:
            if stop is not None and stop.is_set():
                break
            raise
        t = threading.Thread(target=_serve_tracked, args=(conn,), name="served", daemon=True)
        _RUNNING.add(t)
        t.start()


def _serve_tracked(conn: socket.socket) -> None:
    try:
        serve_one(conn)
    finally:
        _RUNNING.discard(threading.current_thread())


def main(argv: list[str] | None = None) -> int:
    from . import server_args
    args = server_args.parse(
        "iscsikit-targetd", "Runs iscsikit-target's one-shot commands in a warm process for the forwarding "
        "iscsikit-target.", "exit status: 0 stopped cleanly (after the command that runs); 1 could not start; "
        "2 bad usage.", "socket path (default /run/iscsikit/iscsikit-targetd.sock, or $ISCSIKIT_TARGET_SOCKET); "
        "ignored when systemd passes the socket", argv)
    if server_args.refuse_non_root("iscsikit-targetd", "it changes LIO's configfs"):
        return 1
    from ..initiator.daemon import listen_fd_from_systemd, sd_notify
    from . import target_served
    fd = listen_fd_from_systemd()
    path = None
    try:
        if fd is not None:
            sock = socket.socket(fileno=fd)
        else:
            path = args.socket or target_served.socket_path()
            sock = listen(path)
    except OSError as e:
        print(f"iscsikit-targetd: cannot start: {e.strerror or e}", file=sys.stderr)
        return 1
    target_served.warm()

    def stop(_sig, _frame):
        raise _Stop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    sd_notify("READY=1")
    try:
        serve(sock)
    except _Stop:
        pass
    finally:
        sock.close()
        if path is not None:
            try:
                os.unlink(path)
            except OSError:
                pass
    # the command that runs now finishes and its client gets its exit code; a stop never
    # cuts a restore or a create midway
    for t in list(_RUNNING):
        t.join(SEND_TIMEOUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())

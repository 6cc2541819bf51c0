"""The management protocol between iscsikitd and its clients, declared once.

Every request the daemon serves, with its arguments and their types, every
event it publishes, and the frames of a streamed CLI run are rows here. The
daemon's dispatcher and the client (`client.py`) both read these rows, so a
request the daemon does not know, an argument it would not read, or a value
of the wrong type is refused with a clear error at the door; nothing is
dropped silently (open-iscsi's mgmt IPC is a raw C struct: a client of
another version is misread, or hangs).

Wire (mgmt.py does the framing): versioned JSON lines on an AF_UNIX stream.

    request   {"v": 2, "op": "login", "args": {...}}
    reply     {"v": 2, "ok": true, "result": ...}
              {"v": 2, "ok": false, "exit_code": 15, "error": "..."}
    watch     the reply {"ok": true, "result": {"events": [...]}} then one
              {"v": 2, "event": "session_added", ...} per event, until either side closes
    cli       the reply {"ok": true, "result": {"frames": "binary"}}, then the
              run's output as binary frames (FRAME_*, below) until the exit frame

Only uid 0 is served (SO_PEERCRED); the socket file is 0600 as well.
"""

from __future__ import annotations

from collections import namedtuple

VERSION = 2

# One argument of a request: its name, the JSON types it accepts, whether it must be present.
Arg = namedtuple("Arg", ("name", "types", "required"), defaults=(True,))

_STR, _INT, _NUM, _BOOL = (str,), (int,), (int, float), (bool,)
_OPT_STR, _OPT_INT = (str, type(None)), (int, type(None))

# The login request: what the daemon needs of a node record to log it in and to
# recover it. records.login_request() is the only code that builds one from a
# record, and it sends every field; a field left out takes NodeConfig's default,
# which is the record table's (open-iscsi's) too.
LOGIN_ARGS: tuple[Arg, ...] = (
    Arg("target", _STR), Arg("address", _STR), Arg("port", _INT, False),
    Arg("tpgt", _OPT_INT, False), Arg("initiator_name", _OPT_STR, False),
    Arg("iface_name", _STR, False), Arg("transport", _STR, False),
    Arg("header_digest", _STR, False), Arg("data_digest", _STR, False),
    Arg("replacement_timeout", _INT, False), Arg("noop_out_interval", _INT, False),
    Arg("noop_out_timeout", _INT, False), Arg("abort_timeout", _INT, False),
    Arg("lu_reset_timeout", _INT, False), Arg("tgt_reset_timeout", _INT, False),
    Arg("fast_abort", _BOOL, False), Arg("cmds_max", _INT, False), Arg("queue_depth", _INT, False),
    Arg("scan", _STR, False), Arg("login_timeout", _NUM, False), Arg("logout_timeout", _NUM, False),
    Arg("operational", (dict,), False),
    Arg("reopen_max", _INT, False), Arg("initial_login_retry_max", _INT, False),
    Arg("max_xmit_dlength", _INT, False),     # node.conn[0].iscsi.MaxXmitDataSegmentLength
    # the iface's binding (login_io.Binding)
    Arg("net_ifacename", _STR, False), Arg("hwaddress", _STR, False), Arg("ipaddress", _STR, False),
    # add a session even when one to this (target, portal, iface) is up: iscsiadm's
    # "(multiple)" (-m session -r SID --op new, node.session.nr_sessions > 1)
    Arg("multiple", _BOOL, False),
    # CHAP (node.session.auth.*): the secrets travel only on this root-only socket
    Arg("username", _STR, False), Arg("password", _STR, False),
    Arg("username_in", _STR, False), Arg("password_in", _STR, False),
    Arg("chap_algs", _STR, False),        # node.session.auth.chap_algs: CHAP_A offer, in order
)

# The streamed CLI run (the fast `iscsiadm`): what the command's behaviour depends on.
CLI_ARGS: tuple[Arg, ...] = (
    Arg("argv", (list,)),                 # argv[0] first, as the client was called
    Arg("env", (dict,)),                  # the client's environment (CLI_ENV: the keys it may read)
    # no cwd: no iscsiadm option takes a relative path
    Arg("tty", (list,)),                  # [stdin, stdout, stderr] is a terminal
)

# How the login request is answered, not what is logged in: wait false (iscsiadm -W)
# is answered {"queued": true} at once, the login going on in the daemon (its outcome
# reaches the watchers as session_added, or the daemon's log when it fails).
LOGIN_OPTIONS: tuple[Arg, ...] = (Arg("wait", _BOOL, False),)

REQUESTS: dict[str, tuple[Arg, ...]] = {
    "version": (),
    "login": LOGIN_ARGS + LOGIN_OPTIONS,
    "logout": (Arg("sid", _INT),),
    # devices=False: no walk of each session's SCSI devices ("disks" left out); what a
    # listing that only wants the daemon's states asks for
    "sessions": (Arg("devices", _BOOL, False),),
    "stats": (Arg("sid", _INT),),
    "rescan": (Arg("sid", _INT),),
    "stop": (),
    "watch": (),
    "cli": CLI_ARGS,
}

# The environment variables a CLI run reads, and so forwards with argv (cli/adm_served.py
# hands them to the command, never to os.environ, which the daemon's threads share); the others
# (PATH, HOME, ...) do not change what iscsiadm does.
CLI_ENV = ("ISCSIKIT_DB_ROOT", "ISCSIKIT_SYSFS_ROOT", "ISCSIKIT_SOCKET", "ISCSIKIT_DEBUG", "COLUMNS", "TERM",
           "NO_COLOR")

# Events the daemon publishes to every watcher, with the fields each carries.
# Every event also carries "time" (the daemon's CLOCK_MONOTONIC seconds) and "sid".
EVENTS: dict[str, tuple[str, ...]] = {
    "session_added": ("target", "address", "port", "tpgt", "iface", "host_no", "adopted"),
    "session_removed": ("target", "reason"),               # logout | destroyed
    "state_changed": ("state", "previous"),                # SESSION_STATES
    "connection_error": ("error", "name"),                 # enum iscsi_err (kernel/constants.ConnErr)
    "recovery_started": (),
    "recovery_succeeded": ("attempts", "seconds"),
    "recovery_timed_out": ("seconds",),                    # replacement_timeout passed: the kernel failed
                                                           # the queued I/O; reconnecting goes on
    "recovery_failed": ("attempts", "seconds", "reason"),  # gave up: node.session.reopen_max attempts spent
}
# LOGGING_IN: the kernel session exists and its first login runs (its events are routed already)
SESSION_STATES = ("LOGGING_IN", "LOGGED_IN", "RECOVERING", "FAILED", "LOGGING_OUT")

# Frames of a streamed CLI run: one kind byte, a 4-byte big-endian length, the data.
# Binary, not JSON lines, so the forwarding client (cli/fastadm.c) stays a few lines
# of C: it copies out/err frames to its fds 1 and 2 and exits with the exit frame's code.
FRAME_HEADER = 5
FRAME_OUT = ord("o")      # bytes for stdout
FRAME_ERR = ord("e")      # bytes for stderr
FRAME_EXIT = ord("x")     # 4-byte big-endian exit code; the last frame
MAX_FRAME = 1 << 20


class RequestError(ValueError):
    """A request this protocol does not declare, or with arguments it does not accept."""


def check_request(op, args) -> dict:
    """The request's arguments, checked against its row; RequestError names what is wrong."""
    row = REQUESTS.get(op) if isinstance(op, str) else None
    if row is None:
        raise RequestError(f"unknown request {op!r}")
    if not isinstance(args, dict):
        raise RequestError(f"{op}: arguments must be an object")
    known = {a.name: a for a in row}
    unknown = sorted(set(args) - set(known))
    if unknown:
        raise RequestError(f"{op}: unknown argument(s) {', '.join(unknown)}")
    for a in row:
        if a.name not in args:
            if a.required:
                raise RequestError(f"{op}: missing argument {a.name}")
            continue
        value = args[a.name]
        # bool is an int in Python; JSON's true is no port number
        if not isinstance(value, a.types) or (isinstance(value, bool) and bool not in a.types):
            names = "/".join("null" if t is type(None) else t.__name__ for t in a.types)
            raise RequestError(f"{op}: argument {a.name} must be {names}, not {type(value).__name__}")
    return args


def event(kind: str, sid: int, time: float, **fields) -> dict:
    """One event record, checked against its row (a daemon bug must not reach watchers as noise)."""
    want = EVENTS[kind]
    if set(fields) != set(want):
        raise ValueError(f"event {kind}: fields {sorted(fields)} are not {sorted(want)}")
    return {"v": VERSION, "event": kind, "sid": sid, "time": round(time, 6), **fields}


def frame(kind: int, data: bytes) -> bytes:
    return bytes((kind,)) + len(data).to_bytes(4, "big") + data


def exit_frame(code: int) -> bytes:
    return frame(FRAME_EXIT, int(code).to_bytes(4, "big", signed=True))

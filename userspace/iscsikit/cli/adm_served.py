"""An iscsiadm command line run inside iscsikitd, for the forwarding `iscsiadm` client.

The daemon's "cli" request (initiator/protocol.py) lands here through the
runner cli/daemon.py hands to the Daemon: this module sits in the top layer,
beside the CLI it runs, so the daemon itself never imports the CLI.

The command sees its client's environment (protocol.CLI_ENV), never the
daemon's: the node database root, the sysfs root and the socket come from
`env`, passed down through adm.Ctx, since worker threads share one
os.environ. Output goes back as it is written (one frame per write), so a
long `-L all` prints its lines as they come.
"""

from __future__ import annotations

import importlib

from ..initiator import protocol
from . import adm
from .adm.main import MODES, handler

# What a command imports only when it runs (the Python iscsikit-adm keeps its start-up
# small that way): the daemon imports it once at start instead, so no forwarded call
# pays a first-use import (under TCG, 0.1-0.2 s each over 9p).
_RUN_TIME_IMPORTS = ("json", "tempfile", "iscsikit.initiator.login_io", "iscsikit.initiator.discovery",
                     "iscsikit.initiator.isns", "iscsikit.kernel.sysfs", "iscsikit.kernel.ibft")


class _FrameStream:
    """A text stream sent back as frames: buffered until flush() (the -L progress line
    flushes) or 64 KiB, so a listing is a few frames, not one loop wake-up per line;
    unbuffered when the client's fd is a terminal."""

    LIMIT = 1 << 16

    def __init__(self, write, kind: int, tty: bool):
        self._write, self._kind, self._tty = write, kind, tty
        self._parts: list[str] = []
        self._size = 0

    def write(self, text: str) -> int:
        if text:
            self._parts.append(text)
            self._size += len(text)
            # on a terminal, a line at a time (C stdio's line buffering, the order a user sees)
            if self._tty or self._size >= self.LIMIT:
                self.flush()
        return len(text)

    def flush(self) -> None:
        if self._parts:
            self._write(self._kind, "".join(self._parts).encode("utf-8", "surrogateescape"))
            self._parts, self._size = [], 0

    def isatty(self) -> bool:
        return self._tty


def warm() -> None:
    """Import every mode's module and what its commands import when they run."""
    for mode in MODES:
        handler(mode)
    for name in _RUN_TIME_IMPORTS:
        importlib.import_module(name)


def run(argv: list[str], env: dict, tty: list[bool], write) -> int:
    """The exit code of `argv` (argv[0] first); stdout/stderr bytes go to write(kind, data)."""
    out = _FrameStream(write, protocol.FRAME_OUT, bool(tty[1]))
    err = _FrameStream(write, protocol.FRAME_ERR, bool(tty[2]))
    argv0 = argv[0] if argv else adm.PROG
    try:
        return adm.run(argv[1:], out=out, err=err, argv0=argv0, env=dict(env), err_tty=bool(tty[2]))
    except SystemExit as e:      # never let a command end the daemon's worker (or the daemon)
        return e.code if isinstance(e.code, int) else 1
    finally:
        # stderr first: iscsiadm writes its error lines unbuffered, before buffered stdout
        err.flush()
        out.flush()

"""An iscsikit-target one-shot command run inside iscsikit-targetd, for the forwarding client.

The C forwarder (userspace/iscsiadm-forward/, built with -DFORWARD_TARGET as
`iscsikit-target`) sends argv, the environment keys a run reads
(protocol.TARGET_CLI_ENV), which of its fds are terminals and its working
directory; the server (cli/targetd.py) asks `servable()` and then `run()`s the
command with cli/target.py's own main(), so the output and the exit code are
the in-process command's, byte for byte. A command it does not serve (the
interactive shell, batch input, anything through configshell, `sessions
--follow`) is refused before it starts, and the forwarder runs the Python
iscsikit-target-local instead.

Nothing about the configuration is kept between runs: every run builds its own
Manager and reads configfs as a fresh process would (targetcli, rtslib or a
second iscsikit may change it at any time). What the warm process saves is
only what cannot change: the interpreter's start-up and the imports (`warm()`).

Runs are one at a time (`LOCK`): each one sets the process's environment,
working directory and sys.stdout/sys.stderr to its client's, which a second
run beside it would see. Two processes changing configfs at once is no
better (targetcli takes no lock either), so nothing is lost by the order.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import threading

from ..initiator import protocol
from . import target
from .adm_served import FrameStream

SOCKET_ENV = "ISCSIKIT_TARGET_SOCKET"
DEFAULT_SOCKET = "/run/iscsikit/iscsikit-targetd.sock"
LOCK = threading.Lock()

# What the served one-shots import when they run (cli/target.py imports them inside
# main() to keep the in-process start small): the server imports them once instead.
_RUN_TIME_IMPORTS = (
    "json", "iscsikit.target.configfs", "iscsikit.target.saveconfig", "iscsikit.target.manager",
    "iscsikit.target.ops", "iscsikit.target.listing", "iscsikit.target.validate", "iscsikit.target.plan",
    "iscsikit.target.apply", "iscsikit.target.sessions", "iscsikit.target.fabrics", "iscsikit.target.model",
)


def socket_path() -> str:
    return os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET


def warm() -> None:
    for name in _RUN_TIME_IMPORTS:
        importlib.import_module(name)


class _Terminal:
    """Stands for the client's stdout/stderr while servable() decides: whether a command
    draws colours (and so goes through configshell) depends on the client's terminal."""

    def __init__(self, tty: bool):
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def servable(argv: list[str], env: dict | None = None, tty: list | None = None) -> bool:
    """argv[0] first, as the client was called; decided in the client's environment and
    with its terminals (`ls` on a terminal draws colours through configshell: not served)."""
    tty = list(tty or (False, False, False))
    with LOCK, _client_process(env or {}, None, _Terminal(bool(tty[1])), _Terminal(bool(tty[2]))):
        return target.servable(list(argv[1:]))


@contextlib.contextmanager
def _client_process(env: dict, cwd: str | None, out, err):
    """os.environ, the working directory and the std streams as the client's process has
    them, for the length of one run; the server's own afterwards."""
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    saved_streams = sys.stdout, sys.stderr
    for key in protocol.TARGET_CLI_ENV:
        os.environ.pop(key, None)
    os.environ.update({k: v for k, v in env.items() if k in protocol.TARGET_CLI_ENV and isinstance(v, str)})
    try:
        if cwd:
            os.chdir(cwd)
        sys.stdout, sys.stderr = out, err
        yield
    finally:
        sys.stdout, sys.stderr = saved_streams
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)


def run(argv: list[str], env: dict, tty: list[bool], write, cwd: str | None = None) -> int:
    """The exit code of `argv` (argv[0] first); stdout/stderr bytes go to write(kind, data)."""
    out = FrameStream(write, protocol.FRAME_OUT, bool(tty[1]))
    err = FrameStream(write, protocol.FRAME_ERR, bool(tty[2]))
    with LOCK:
        try:
            with _client_process(env, cwd, out, err):
                return target.main(list(argv[1:]))
        except SystemExit as e:     # argparse's usage errors: the server goes on
            return e.code if isinstance(e.code, int) else 1
        finally:
            err.flush()
            out.flush()

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

from ..initiator import protocol
from . import adm


class _FrameStream:
    """A text stream that sends each write as one frame."""

    def __init__(self, write, kind: int, tty: bool):
        self._write, self._kind, self._tty = write, kind, tty

    def write(self, text: str) -> int:
        if text:
            self._write(self._kind, text.encode("utf-8", "surrogateescape"))
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return self._tty


def run(argv: list[str], env: dict, tty: list[bool], write) -> int:
    """The exit code of `argv` (argv[0] first); stdout/stderr bytes go to write(kind, data)."""
    out = _FrameStream(write, protocol.FRAME_OUT, bool(tty[1]))
    err = _FrameStream(write, protocol.FRAME_ERR, bool(tty[2]))
    argv0 = argv[0] if argv else adm.PROG
    return adm.run(argv[1:], out=out, err=err, argv0=argv0, env=dict(env), err_tty=bool(tty[2]))

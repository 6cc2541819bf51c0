"""Errors of the QEMU lab: one line each, naming the cause and the fix."""


class LabError(Exception):
    """Something the lab cannot do; `str()` is the one-line message for the user."""

    exit_code = 1

    def __init__(self, cause: str, fix: str | None = None):
        self.cause = cause
        self.fix = fix
        super().__init__(f"{cause}: {fix}" if fix else cause)


class GuestError(LabError):
    """The guest (QEMU, its kernel or its agent) failed or stopped answering.

    The first line of `str()` is the cause and the fix; the lines after it are the
    guest console's tail, for test logs (the CLI prints only the first line).
    """


class GuestCommandError(LabError):
    """A command run in the guest with check=True exited non-zero."""

    def __init__(self, result):
        self.result = result
        tail = result.stderr.decode(errors="replace").strip().splitlines()[-3:]
        what = "timed out" if result.timed_out else f"exited {result.rc}"
        super().__init__(f"guest command {result.command!r} {what}" + (f": {' | '.join(tail)}" if tail else ""))

"""One error base for the initiator: an iscsiadm exit code and the lines that say why.

Every failure a user can see (a refused request, a failed login, a record
iscsiadm would refuse, a database that cannot be written) is an IscsiError,
so the CLI prints `lines` and exits with `exit_code`, and D-Bus names its
error after the code, without knowing which layer failed. proto/ knows no
exit codes: it reports outcomes (proto/status.py), mapped here.
"""

from __future__ import annotations

from ..proto.status import Outcome
from .exitcodes import ExitCode


class IscsiError(Exception):
    def __init__(self, exit_code: int, *lines: str) -> None:
        self.exit_code = int(exit_code)
        self.lines = [str(line) for line in lines]
        super().__init__("; ".join(self.lines))

    @property
    def code(self) -> int:
        """The exit code (the name the node database and record errors always used)."""
        return self.exit_code


# A Login Response's outcome -> iscsiadm 2.1.8's exit code (open-iscsi-facts.md §3.5).
LOGIN_EXIT: dict[Outcome, ExitCode] = {
    Outcome.AUTH_FAILED: ExitCode.LOGIN_AUTH_FAILED,
    Outcome.FATAL: ExitCode.FATAL_LOGIN,
    Outcome.RETRY: ExitCode.LOGIN,
}


def login_exit_code(outcome: Outcome) -> ExitCode:
    return LOGIN_EXIT.get(outcome, ExitCode.FATAL_LOGIN)

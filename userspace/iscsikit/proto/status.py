"""Login Response status (RFC 7143 §11.13.5) and what each class means to us.

The reaction per class follows open-iscsi 2.1.8 (open-iscsi-facts.md §3.5):
redirects are followed, 0x0201/0x0202 are authentication failures (exit 24),
other initiator errors are fatal (exit 19), target errors are retried (exit 5).
"""

from __future__ import annotations

import enum
from typing import NamedTuple

from .exitcodes import ExitCode


class Outcome(enum.Enum):
    SUCCESS = "success"
    REDIRECT = "redirect"
    AUTH_FAILED = "authentication failure"
    FATAL = "non-retryable failure"
    RETRY = "retryable failure"


class StatusClass(enum.IntEnum):
    SUCCESS = 0
    REDIRECTION = 1
    INITIATOR_ERROR = 2
    TARGET_ERROR = 3


# (class, detail) -> description, from RFC 7143 §11.13.5
STATUS_TEXT: dict[tuple[int, int], str] = {
    (0, 0): "success",
    (1, 1): "target moved temporarily",
    (1, 2): "target moved permanently",
    (2, 0): "initiator error",
    (2, 1): "authentication failure",
    (2, 2): "authorization failure",
    (2, 3): "target not found",
    (2, 4): "target removed",
    (2, 5): "unsupported version",
    (2, 6): "too many connections",
    (2, 7): "missing parameter",
    (2, 8): "can't include in session",
    (2, 9): "session type not supported",
    (2, 10): "session does not exist",
    (2, 11): "invalid request during login",
    (3, 0): "target error",
    (3, 1): "service unavailable",
    (3, 2): "out of resources",
}


class Reaction(NamedTuple):
    outcome: Outcome
    exit_code: ExitCode


# Per class, then per (class, detail) where a detail differs from its class.
CLASS_REACTION: dict[int, Reaction] = {
    StatusClass.SUCCESS: Reaction(Outcome.SUCCESS, ExitCode.SUCCESS),
    StatusClass.REDIRECTION: Reaction(Outcome.REDIRECT, ExitCode.SUCCESS),
    StatusClass.INITIATOR_ERROR: Reaction(Outcome.FATAL, ExitCode.FATAL_LOGIN),
    StatusClass.TARGET_ERROR: Reaction(Outcome.RETRY, ExitCode.LOGIN),
}
DETAIL_REACTION: dict[tuple[int, int], Reaction] = {
    (2, 1): Reaction(Outcome.AUTH_FAILED, ExitCode.LOGIN_AUTH_FAILED),
    (2, 2): Reaction(Outcome.AUTH_FAILED, ExitCode.LOGIN_AUTH_FAILED),
}
REDIRECT_DETAILS = frozenset({1, 2})


def reaction(status_class: int, status_detail: int) -> Reaction:
    """How to react to a status; unknown classes count as fatal initiator-side errors."""
    if (status_class, status_detail) in DETAIL_REACTION:
        return DETAIL_REACTION[status_class, status_detail]
    if status_class == StatusClass.REDIRECTION and status_detail not in REDIRECT_DETAILS:
        return Reaction(Outcome.FATAL, ExitCode.FATAL_LOGIN)
    return CLASS_REACTION.get(status_class, Reaction(Outcome.FATAL, ExitCode.FATAL_LOGIN))


def describe(status_class: int, status_detail: int) -> str:
    text = STATUS_TEXT.get((status_class, status_detail), "unknown status")
    return f"{text} (status {status_class:#04x}{status_detail:02x})"

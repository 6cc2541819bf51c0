"""Login Response status (RFC 7143 §11.13.5) and what each class means to us.

The outcome per class follows open-iscsi 2.1.8 (open-iscsi-facts.md §3.5):
redirects are followed, 0x0201/0x0202 are authentication failures, other
initiator errors are fatal, target errors are retried. What an outcome means
to a user (iscsiadm's exit code) is the initiator's business
(initiator/errors.py), not the protocol's.
"""

from __future__ import annotations

import enum


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


# Per class, then per (class, detail) where a detail differs from its class.
CLASS_OUTCOME: dict[int, Outcome] = {
    StatusClass.SUCCESS: Outcome.SUCCESS,
    StatusClass.REDIRECTION: Outcome.REDIRECT,
    StatusClass.INITIATOR_ERROR: Outcome.FATAL,
    StatusClass.TARGET_ERROR: Outcome.RETRY,
}
DETAIL_OUTCOME: dict[tuple[int, int], Outcome] = {
    (2, 1): Outcome.AUTH_FAILED,
    (2, 2): Outcome.AUTH_FAILED,
}
REDIRECT_DETAILS = frozenset({1, 2})


def outcome(status_class: int, status_detail: int) -> Outcome:
    """How to react to a status; unknown classes count as fatal initiator-side errors."""
    if (status_class, status_detail) in DETAIL_OUTCOME:
        return DETAIL_OUTCOME[status_class, status_detail]
    if status_class == StatusClass.REDIRECTION and status_detail not in REDIRECT_DETAILS:
        return Outcome.FATAL
    return CLASS_OUTCOME.get(status_class, Outcome.FATAL)


def describe(status_class: int, status_detail: int) -> str:
    text = STATUS_TEXT.get((status_class, status_detail), "unknown status")
    return f"{text} (status {status_class:#04x}{status_detail:02x})"

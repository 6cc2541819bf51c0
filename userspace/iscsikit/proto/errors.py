"""Protocol errors, split by which side broke the protocol (the h11 habit).

A `RemoteProtocolError` means the peer sent something RFC 7143 forbids; a
`LocalProtocolError` means our own caller asked us to send something that
would break the protocol. Both carry the login stage and the PDU involved so
a one-line message is enough to diagnose a failed login.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base of every error `iscsikit.proto` raises on bad input."""

    def __init__(self, message: str, *, stage: str | None = None, pdu: str | None = None) -> None:
        self.message = message
        self.stage = stage
        self.pdu = pdu
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = " ".join(part for part in (self.stage, self.pdu) if part)
        return f"{where}: {self.message}" if where else self.message

    def located(self, *, stage: str | None = None, pdu: str | None = None) -> "ProtocolError":
        """Return a copy naming the stage/PDU, keeping what is already known."""
        return type(self)(self.message, stage=self.stage or stage, pdu=self.pdu or pdu)


class LocalProtocolError(ProtocolError):
    """We were asked to do something the protocol forbids."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol forbids."""


class AuthenticationFailure(ProtocolError):
    """CHAP did not complete: the target refused us, or failed to prove itself.

    Kept apart from protocol errors because open-iscsi reports it with its own
    exit code (24, ISCSI_ERR_LOGIN_AUTH_FAILED). Messages never hold secrets.
    """

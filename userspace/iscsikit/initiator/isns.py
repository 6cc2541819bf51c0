"""iSNS discovery (RFC 4171) over TCP, as iscsiadm 2.1.8 does it (usr/discovery.c
discovery_isns): query the server for the targets' portal groups with the initiator's
name as the source; a server that does not know that source ("Source Unknown") is
registered with, queried again and deregistered from afterwards. The wire is
proto/isns.py's; this module owns the socket, the deadline and the exit codes."""

from __future__ import annotations

import itertools
import socket
import time

from ..proto import isns
from ..proto.errors import ProtocolError
from .errors import IscsiError
from .exitcodes import ExitCode

# libisns gives a call 60 s by default; a discovery waits no longer than this in all
TIMEOUT = 30.0
_xids = itertools.count(1)


class IsnsError(IscsiError):
    """A failed iSNS discovery: iscsiadm's lines and exit code, and what really happened
    (`reason`: iscsiadm says "Internal error" for any failed exchange, as libisns does)."""

    def __init__(self, exit_code: int, *lines: str, reason: str = "") -> None:
        super().__init__(exit_code, *lines)
        self.reason = reason


def _failed(e) -> IsnsError:
    return IsnsError(ExitCode.ISNS_QUERY, "iSNS discovery failed: Internal error",
                     reason=str(getattr(e, "strerror", None) or e))


class _Connection:
    def __init__(self, server: str, port: int, deadline: float) -> None:
        self.deadline = deadline
        family = socket.AF_INET6 if ":" in server else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(self._left())
        self.sock.connect((server, port))

    def _left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        return left

    def call(self, message: bytes) -> isns.Response:
        self.sock.sendall(message)
        reader = isns.ResponseReader()
        while True:
            self.sock.settimeout(self._left())
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the iSNS server closed the connection")
            reader.feed(data)
            resp = reader.next_response()
            if resp is not None:
                return resp

    def close(self) -> None:
        self.sock.close()


def discover(server: str, port: int, initiator_name: str, timeout: float = TIMEOUT) -> list[isns.PortalGroup]:
    """The portal groups of every target the server lets `initiator_name` see."""
    deadline = time.monotonic() + timeout
    try:
        conn = _Connection(server, port, deadline)
    except (OSError, TimeoutError) as e:
        err = _failed(e)
        err.reason = f"cannot connect to {server}:{port}: {err.reason}"
        raise err from None
    registered = False
    try:
        resp = conn.call(isns.query_targets(next(_xids) & 0xFFFF, initiator_name))
        if resp.status == isns.SOURCE_UNKNOWN:
            # the server wants its clients registered: register just so that we may query
            reg = conn.call(isns.register_initiator(next(_xids) & 0xFFFF, initiator_name))
            if reg.status != isns.SUCCESS:
                raise IsnsError(ExitCode.ISNS_REG_FAILED, f"Could not register {initiator_name} with iSNS "
                                f"server: {isns.status_text(reg.status)}.")
            registered = True
            resp = conn.call(isns.query_targets(next(_xids) & 0xFFFF, initiator_name))
        if resp.status != isns.SUCCESS:
            raise IsnsError(ExitCode.ISNS_QUERY, f"iSNS discovery failed: {isns.status_text(resp.status)}")
        return isns.portal_groups(resp.attributes)
    except (OSError, TimeoutError, ProtocolError) as e:
        raise _failed(e) from None
    finally:
        if registered:
            try:
                conn.call(isns.deregister(next(_xids) & 0xFFFF, initiator_name))
            except (OSError, TimeoutError, ProtocolError):
                pass   # the registration expires with the server's RegistrationPeriod
        conn.close()

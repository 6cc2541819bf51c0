"""SendTargets discovery (RFC 7143 §13.3, Appendix C), sans-IO.

`SendTargetsExchange` runs the Text Request/Response exchange in a logged-in
Discovery session, following continuation (C bit, Target Transfer Tag) as
open-iscsi does (facts §3.7). `parse_sendtargets` turns the accumulated
`TargetName=`/`TargetAddress=` pairs into records.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re

from .errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from .fullfeature import ping_answer
from .keys import decode_text, encode_text
from .pdu import RESERVED_TAG, NopIn, Pdu, Reject, TextRequest, TextResponse

DEFAULT_PORT = 3260
MAX_TARGET_NAME = 223       # RFC 7143 §4.2.7.1: iSCSI names are at most 223 bytes
MAX_RESPONSE_TEXT = 1 << 20
# A peer controls how many PDUs one SendTargets takes; these bound it (the text size alone does
# not: an empty F=0 response, or a NOP-In, adds nothing to it). 1 MiB in 4 KiB pieces is 256.
MAX_CONTINUATIONS = 256
MAX_UNSOLICITED = 16        # NOP-Ins answered during one exchange
NO_TPGT = -1

_HOSTNAME = re.compile(r"(?=.{1,253}\Z)[A-Za-z0-9_]([A-Za-z0-9_\-]{0,62})(\.[A-Za-z0-9_\-]{1,63})*\.?\Z")


@dataclasses.dataclass(frozen=True, order=True)
class Portal:
    host: str
    port: int = DEFAULT_PORT
    tpgt: int = NO_TPGT

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port},{self.tpgt}"

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)


@dataclasses.dataclass(frozen=True)
class DiscoveredTarget:
    name: str
    portals: tuple[Portal, ...]


def parse_target_address(text: str, error: type[ProtocolError] = RemoteProtocolError) -> Portal:
    """`host[:port][,tpgt]` where host is IPv4, `[IPv6]` or a DNS name."""
    address, sep, tpgt_text = text.rpartition(",") if "," in text else (text, "", "")
    tpgt = NO_TPGT
    if sep:
        if not (tpgt_text.isascii() and tpgt_text.isdigit()) or int(tpgt_text) > 65535:
            raise error(f"bad portal group tag in TargetAddress {text[:80]!r}")
        tpgt = int(tpgt_text)
    port = DEFAULT_PORT
    if address.startswith("["):
        host, bracket, rest = address[1:].partition("]")
        if not bracket:
            raise error(f"unterminated IPv6 address in {text[:80]!r}")
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise error(f"bad IPv6 address in {text[:80]!r}") from None
        if rest:
            if not rest.startswith(":"):
                raise error(f"junk after IPv6 address in {text[:80]!r}")
            port = _port(rest[1:], text, error)
    else:
        host, colon, port_text = address.partition(":")
        if colon:
            port = _port(port_text, text, error)
        if not _HOSTNAME.match(host):
            raise error(f"bad host in TargetAddress {text[:80]!r}")
    return Portal(host, port, tpgt)


def _port(text: str, whole: str, error: type[ProtocolError]) -> int:
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) <= 65535 or len(text) > 5:
        raise error(f"bad port in {whole[:80]!r}")
    return int(text)


def parse_sendtargets(pairs: list[tuple[str, str]], default: Portal | None = None) -> list[DiscoveredTarget]:
    """Records from a SendTargets response; `default` serves targets with no TargetAddress."""
    targets: list[DiscoveredTarget] = []
    name: str | None = None
    portals: list[Portal] = []

    def flush() -> None:
        if name is None:
            return
        if len(name.encode()) > MAX_TARGET_NAME:
            return  # open-iscsi skips over-long names (facts §3.7)
        found = portals or ([Portal(default.host, default.port, NO_TPGT)] if default else [])
        targets.append(DiscoveredTarget(name, tuple(found)))

    for key, value in pairs:
        if key == "TargetName":
            flush()
            if not value:
                raise RemoteProtocolError("empty TargetName in SendTargets response")
            name, portals = value, []
        elif key == "TargetAddress":
            if name is None:
                raise RemoteProtocolError("TargetAddress before any TargetName")
            portals.append(parse_target_address(value))
        elif key == "TargetAlias":
            continue
        else:
            raise RemoteProtocolError(f"unexpected key {key[:63]} in SendTargets response")
    flush()
    return targets


class SendTargetsExchange:
    """One SendTargets request and its (possibly continued) response.

    CmdSN advances with every Text Request (they are not immediate);
    ExpStatSN follows the target's StatSN.
    """

    def __init__(self, *, itt: int, cmdsn: int, exp_statsn: int, what: str = "All",
                 default_portal: Portal | None = None,
                 max_text: int = MAX_RESPONSE_TEXT) -> None:
        self.itt = itt
        self.cmdsn = cmdsn
        self.exp_statsn = exp_statsn
        self.what = what
        self.default_portal = default_portal
        self.max_text = max_text
        self.done = False
        self.targets: list[DiscoveredTarget] | None = None
        self._text = bytearray()
        self._started = False
        self.continuations = 0
        self.unsolicited = 0

    def request(self) -> TextRequest:
        if self._started:
            raise LocalProtocolError("SendTargets request already sent")
        self._started = True
        return self._text_request(encode_text([("SendTargets", self.what)]), RESERVED_TAG)

    def _text_request(self, data: bytes, ttt: int) -> TextRequest:
        pdu = TextRequest(final=True, itt=self.itt, ttt=ttt, cmdsn=self.cmdsn,
                          expstatsn=self.exp_statsn, data=data)
        self.cmdsn = (self.cmdsn + 1) & 0xFFFFFFFF
        return pdu

    def receive(self, pdu: Pdu) -> Pdu | list[DiscoveredTarget] | None:
        """The next PDU to send, the final target list, or None (nothing to do)."""
        try:
            return self._receive(pdu)
        except ProtocolError as exc:
            raise exc.located(stage="SendTargets", pdu=type(pdu).__name__) from None

    def _receive(self, pdu: Pdu) -> Pdu | list[DiscoveredTarget] | None:
        if not self._started or self.done:
            raise LocalProtocolError("no SendTargets request outstanding")
        if isinstance(pdu, NopIn):
            self.unsolicited += 1
            if self.unsolicited > MAX_UNSOLICITED:
                raise RemoteProtocolError(f"more than {MAX_UNSOLICITED} NOP-Ins during SendTargets")
            return ping_answer(pdu, self.cmdsn, self.exp_statsn)
        if isinstance(pdu, Reject):
            raise RemoteProtocolError(f"target rejected the Text Request (reason {pdu.reason:#04x})")
        if not isinstance(pdu, TextResponse):
            raise RemoteProtocolError("unexpected PDU during SendTargets")
        if pdu.itt != self.itt:
            raise RemoteProtocolError(f"ITT {pdu.itt:#x} does not match ours {self.itt:#x}")
        if pdu.final and pdu.cont:
            raise RemoteProtocolError("F and C both set")
        self.exp_statsn = (pdu.statsn + 1) & 0xFFFFFFFF
        self._text += pdu.data
        if len(self._text) > self.max_text:
            raise RemoteProtocolError(f"SendTargets response longer than {self.max_text} bytes")
        if not pdu.final and pdu.ttt != RESERVED_TAG:
            self.continuations += 1
            if self.continuations > MAX_CONTINUATIONS:
                raise RemoteProtocolError(f"SendTargets response continued more than {MAX_CONTINUATIONS} times")
            return self._text_request(b"", pdu.ttt)
        if pdu.cont:
            raise RemoteProtocolError("C=1 without a Target Transfer Tag to continue with")
        self.done = True
        self.targets = parse_sendtargets(decode_text(bytes(self._text)), self.default_portal)
        return self.targets

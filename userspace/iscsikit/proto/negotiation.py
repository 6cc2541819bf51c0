"""Text-mode negotiation (RFC 7143 §6.1-6.2, §13), sans-IO.

One `Negotiation` follows one side of one login (or one Text exchange). It
records what we offered and declared, checks every answer the peer gives
against the key's result rule in `keys.KEYS`, answers the peer's own offers,
and finally folds everything into `Parameters` (defaults for whatever was
never negotiated).
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Iterable, Mapping

from .errors import LocalProtocolError, RemoteProtocolError
from .keys import (KEY_BY_NAME, KEYS, SPECIAL_VALUES, Key, Kind, Rule, Sender, Stage,
                   default_value, format_value, parse_value)

NEGOTIATED_RULES = frozenset({Rule.LIST, Rule.MIN, Rule.MAX, Rule.AND, Rule.OR})


class Role(enum.Enum):
    INITIATOR = Sender.INITIATOR
    TARGET = Sender.TARGET

    @property
    def peer(self) -> "Role":
        return Role.TARGET if self is Role.INITIATOR else Role.INITIATOR


@dataclasses.dataclass(frozen=True)
class Parameters:
    """The outcome of a login: negotiated values plus each side's declarations."""

    negotiated: Mapping[str, Any]
    ours: Mapping[str, Any]
    theirs: Mapping[str, Any]

    def __getitem__(self, name: str) -> Any:
        return self.negotiated[name]

    @property
    def header_digest(self) -> bool:
        return self.negotiated.get("HeaderDigest") == "CRC32C"

    @property
    def data_digest(self) -> bool:
        return self.negotiated.get("DataDigest") == "CRC32C"

    @property
    def max_recv_data_segment(self) -> int:
        """What we declared we can receive: the reader's limit from now on."""
        return self.ours.get("MaxRecvDataSegmentLength", 8192)

    @property
    def max_xmit_data_segment(self) -> int:
        """What the peer declared it can receive: our send limit."""
        return self.theirs.get("MaxRecvDataSegmentLength", 8192)


def _determined_by(key: Key, offered: bool) -> bool:
    """Booleans whose result our own offer already fixes (§6.2.2): No for AND, Yes for OR."""
    return (key.rule is Rule.AND and not offered) or (key.rule is Rule.OR and offered)


class Negotiation:
    def __init__(self, role: Role = Role.INITIATOR, *, discovery: bool = False,
                 policy: Mapping[str, str] | None = None) -> None:
        """`policy` holds our acceptable values, by key: for list keys, the values
        we accept in preference order; for others, the value we would offer."""
        self.role = role
        self.discovery = discovery
        self.policy = dict(policy or {})
        self.offered: dict[str, Any] = {}        # our open offers, typed
        self.answered: set[str] = set()
        self.results: dict[str, Any] = {}
        self.ours: dict[str, Any] = {}           # our declarations
        self.theirs: dict[str, Any] = {}         # the peer's declarations
        self.not_understood: set[str] = set()
        self.irrelevant: set[str] = set()
        self.rejected: set[str] = set()
        self._sent: set[str] = set()
        self._received: set[str] = set()

    # -- our side -----------------------------------------------------------

    def offer(self, stage: Stage, pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """Validate and record keys we are about to send; returns them unchanged."""
        out = []
        for name, text in pairs:
            key = KEY_BY_NAME.get(name)
            if key is None:
                raise LocalProtocolError(f"unknown key {name!r}")
            if self.role.value not in key.senders:
                raise LocalProtocolError(f"the {self.role.name.lower()} may not send {name}")
            if stage not in key.stages:
                raise LocalProtocolError(f"{name} is not allowed in stage {stage.name}")
            if name in self._sent:
                raise LocalProtocolError(f"{name} offered twice")
            if name in self._received:
                continue  # the peer offered it first; our answer already went out
            try:
                value = self._parse_offer(key, text)
            except RemoteProtocolError as exc:
                raise LocalProtocolError(exc.message) from None
            self._sent.add(name)
            if key.rule in NEGOTIATED_RULES:
                self.offered[name] = value
            elif key.rule is Rule.DECLARATIVE:
                self.ours[name] = value
            out.append((name, text))
        return out

    def _parse_offer(self, key: Key, text: str) -> Any:
        if key.rule is Rule.LIST:
            values = text.split(",")
            if not all(v in key.values for v in values):
                raise RemoteProtocolError(f"{key.name}={text!r} has a value outside {key.values}")
            return tuple(values)
        if key.rule in (Rule.CHAP, Rule.REQUEST, Rule.IRRELEVANT):
            return text
        return parse_value(key, text)

    def unanswered(self) -> set[str]:
        return set(self.offered) - self.answered

    # -- the peer's side ----------------------------------------------------

    def receive(self, stage: Stage, pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """Process the peer's keys; return our answers (to be sent next)."""
        answers: list[tuple[str, str]] = []
        for name, text in pairs:
            try:
                answer = self._receive_one(stage, name, text)
            except RemoteProtocolError as exc:
                raise exc.located(stage=stage.rfc_name) from None
            if answer is not None:
                answers.append((name, answer))
        return answers

    def _receive_one(self, stage: Stage, name: str, text: str) -> str | None:
        if name in self._received:
            raise RemoteProtocolError(f"{name} sent twice")
        self._received.add(name)
        key = KEY_BY_NAME.get(name)
        if name in self.offered:
            assert key is not None
            self._check_answer(key, text)
            return None
        if text in SPECIAL_VALUES and name in self._sent:
            self.ours.pop(name, None)  # a declaration the peer cannot use
            (self.irrelevant if text == "Irrelevant" else self.not_understood).add(name)
            return None
        if text in SPECIAL_VALUES:
            raise RemoteProtocolError(f"{name}={text} answers a key we did not send")
        if key is None:
            return "NotUnderstood"
        if self.role.peer.value not in key.senders:
            raise RemoteProtocolError(f"the {self.role.peer.name.lower()} may not send {name}")
        if stage not in key.stages:
            raise RemoteProtocolError(f"{name} is not allowed in this stage")
        if key.rule is Rule.DECLARATIVE:
            self.theirs[name] = parse_value(key, text)
            return None
        if key.rule is Rule.IRRELEVANT or (self.discovery and key.discovery_irrelevant):
            self.irrelevant.add(name)
            return "Irrelevant"
        if key.rule in (Rule.CHAP, Rule.REQUEST):
            raise RemoteProtocolError(f"{name} cannot be negotiated here")
        result = self._respond(key, text)
        if result is None:
            self.rejected.add(name)
            return "Reject"
        self.results[name] = result
        return format_value(result)

    def _ours(self, key: Key) -> Any:
        # Unless told otherwise an initiator stands by open-iscsi's offer, a target by the RFC default.
        fallback = key.open_iscsi if self.role is Role.INITIATOR and key.open_iscsi else key.default
        text = self.policy.get(key.name, fallback)
        if key.rule is Rule.LIST:
            return tuple(text.split(","))
        return parse_value(key, text)

    def _respond(self, key: Key, text: str) -> Any:
        """Our answer to the peer's offer, by the key's rule; None means Reject."""
        ours = self._ours(key)
        if key.rule is Rule.LIST:
            for value in text.split(","):
                if value in ours:
                    return value
            return None
        try:
            theirs = parse_value(key, text)
        except RemoteProtocolError:
            return None  # §6.2: an inadmissible offer is answered with Reject
        if key.rule is Rule.MIN:
            return min(theirs, ours)
        if key.rule is Rule.MAX:
            return max(theirs, ours)
        if key.rule is Rule.AND:
            return theirs and ours
        return theirs or ours

    def _check_answer(self, key: Key, text: str) -> None:
        self.answered.add(key.name)
        offered = self.offered[key.name]
        if text == "NotUnderstood":
            self.not_understood.add(key.name)
            return
        if text == "Irrelevant":
            self.irrelevant.add(key.name)
            return
        if text == "Reject":
            self.rejected.add(key.name)
            return
        if key.rule is Rule.LIST:
            if text not in offered:
                raise RemoteProtocolError(f"{key.name}={text[:40]!r} was not among the offered values")
            self.results[key.name] = text
            return
        value = parse_value(key, text)
        if key.rule is Rule.MIN and value > offered:
            raise RemoteProtocolError(f"{key.name}={value} exceeds our offer {offered} (minimum rule)")
        if key.rule is Rule.MAX and value < offered:
            raise RemoteProtocolError(f"{key.name}={value} is below our offer {offered} (maximum rule)")
        if key.rule in (Rule.AND, Rule.OR) and _determined_by(key, offered) and value != offered:
            raise RemoteProtocolError(
                f"{key.name}={format_value(value)} contradicts the {key.rule.value} of our {format_value(offered)}")
        self.results[key.name] = value

    # -- outcome ------------------------------------------------------------

    def parameters(self) -> Parameters:
        negotiated: dict[str, Any] = {}
        for key in KEYS:
            if key.rule not in NEGOTIATED_RULES:
                continue
            if key.name in self.results:
                negotiated[key.name] = self.results[key.name]
            elif (key.name in self.offered and key.kind is Kind.BOOLEAN
                  and _determined_by(key, self.offered[key.name])
                  and key.name not in self.rejected | self.not_understood):
                negotiated[key.name] = self.offered[key.name]
            else:
                negotiated[key.name] = default_value(key)
        if not self.discovery:
            first, most = negotiated["FirstBurstLength"], negotiated["MaxBurstLength"]
            if first > most and "FirstBurstLength" not in self.irrelevant:
                raise RemoteProtocolError(f"FirstBurstLength {first} exceeds MaxBurstLength {most}")
        return Parameters(negotiated, dict(self.ours), dict(self.theirs))


__all__ = ["Negotiation", "Parameters", "Role"]

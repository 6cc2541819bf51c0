"""The login phase (RFC 7143 §6.3, §11.12-11.13), initiator side, sans-IO.

Everything that decides a login transition lives in this file, and as much as
possible of it in the tables below (the h11 habit): `TRANSITIONS` maps the
current state and the kind of Login Response received to the next state.
What does not fit a table (the checks on each response, text continuation,
handing keys to CHAP or to the negotiation engine) is code in this file.

`LoginMachine` never reads or sleeps: `start()` gives the first Login
Request, `receive(response)` gives the next request or a final event
(`LoginSuccess`, `LoginRedirect`, `LoginFailure`). A target that breaks the
protocol raises `RemoteProtocolError` naming the stage and the PDU.
"""

from __future__ import annotations

import dataclasses
import enum
import os
from typing import Callable, Mapping, Union

from . import status as _status
from .chap import CHAP_KEYS, ChapCredentials, ChapInitiator
from .errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from .keys import (DISCOVERY_MAX_RECV_DATA_SEGMENT, DISCOVERY_OFFER, KEY_BY_NAME, NORMAL_OFFER,
                   Stage, decode_text, encode_text)
from .negotiation import Negotiation, Parameters, Role
from .pdu import LoginRequest, LoginResponse, Pdu, Reject
from .reader import LOGIN_MAX_DATA_SEGMENT
from .sendtargets import Portal, parse_target_address

DISCOVERY_ISID = 0x00023D000000  # open-iscsi's OUI-format ISID, qualifier 0
MAX_LOGIN_TEXT = 64 * 1024
SECURITY_KEYS = CHAP_KEYS | {"AuthMethod"}


class LoginState(enum.Enum):
    SECURITY = "SecurityNegotiation"
    OPERATIONAL = "LoginOperationalNegotiation"
    FULL_FEATURE = "FullFeaturePhase"
    REDIRECTED = "Redirected"
    FAILED = "Failed"


class ResponseKind(enum.Enum):
    """How a Login Response is classified before the transition table is consulted."""

    PARTIAL = "T=0"
    CONTINUED = "C=1 (text continues)"
    TO_OPERATIONAL = "T=1 NSG=LoginOperationalNegotiation"
    TO_FULL_FEATURE = "T=1 NSG=FullFeaturePhase"
    REDIRECT = "status class 1 (redirect)"
    AUTH_FAILED = "status 0x0201/0x0202"
    FATAL = "status class 2"
    RETRY = "status class 3"


_S, _R = LoginState, ResponseKind
_STATUS_TRANSITIONS = {_R.REDIRECT: _S.REDIRECTED, _R.AUTH_FAILED: _S.FAILED,
                       _R.FATAL: _S.FAILED, _R.RETRY: _S.FAILED}
TRANSITIONS: dict[LoginState, dict[ResponseKind, LoginState]] = {
    _S.SECURITY: {_R.PARTIAL: _S.SECURITY, _R.CONTINUED: _S.SECURITY,
                  _R.TO_OPERATIONAL: _S.OPERATIONAL, _R.TO_FULL_FEATURE: _S.FULL_FEATURE,
                  **_STATUS_TRANSITIONS},
    _S.OPERATIONAL: {_R.PARTIAL: _S.OPERATIONAL, _R.CONTINUED: _S.OPERATIONAL,
                     _R.TO_FULL_FEATURE: _S.FULL_FEATURE, **_STATUS_TRANSITIONS},
    _S.FULL_FEATURE: {},
    _S.REDIRECTED: {},
    _S.FAILED: {},
}
STAGE_OF = {_S.SECURITY: Stage.SECURITY, _S.OPERATIONAL: Stage.OPERATIONAL,
            _S.FULL_FEATURE: Stage.FULL_FEATURE}
KIND_OF_OUTCOME = {_status.Outcome.REDIRECT: _R.REDIRECT, _status.Outcome.AUTH_FAILED: _R.AUTH_FAILED,
                   _status.Outcome.FATAL: _R.FATAL, _status.Outcome.RETRY: _R.RETRY}
KIND_OF_NSG = {Stage.OPERATIONAL: _R.TO_OPERATIONAL, Stage.FULL_FEATURE: _R.TO_FULL_FEATURE}


@dataclasses.dataclass(frozen=True)
class LoginConfig:
    initiator_name: str
    target_name: str | None = None          # None: a discovery session
    initiator_alias: str | None = None
    chap: ChapCredentials | None = None
    isid: int = DISCOVERY_ISID
    tsih: int = 0
    cid: int = 0
    itt: int = 0
    cmdsn: int | None = None                # default: 1 for discovery, 0 otherwise (facts §3.3)
    exp_statsn: int = 0
    operational: Mapping[str, str] = dataclasses.field(default_factory=dict)
    max_exchanges: int = 32

    @property
    def discovery(self) -> bool:
        return self.target_name is None

    def first_cmdsn(self) -> int:
        if self.cmdsn is not None:
            return self.cmdsn
        return 1 if self.discovery else 0

    def operational_offer(self) -> list[tuple[str, str]]:
        """open-iscsi's operational keys in its order, with our overrides applied."""
        order = DISCOVERY_OFFER if self.discovery else NORMAL_OFFER
        values = {name: KEY_BY_NAME[name].open_iscsi for name in order}
        if self.discovery:
            values["MaxRecvDataSegmentLength"] = str(DISCOVERY_MAX_RECV_DATA_SEGMENT)
        values.update(self.operational)
        if self.discovery:  # open-iscsi forces digests off for discovery (facts §3.7)
            values.update(HeaderDigest="None", DataDigest="None")
        # None withdraws a key from the offer (iSER sends no MaxRecvDataSegmentLength)
        return [(name, str(value)) for name, value in values.items() if value is not None]


@dataclasses.dataclass(frozen=True)
class LoginSuccess:
    parameters: Parameters
    tsih: int
    statsn: int
    exp_cmdsn: int
    max_cmdsn: int

    @property
    def exp_statsn(self) -> int:
        return (self.statsn + 1) & 0xFFFFFFFF

    @property
    def target_portal_group_tag(self) -> int | None:
        return self.parameters.theirs.get("TargetPortalGroupTag")


@dataclasses.dataclass(frozen=True)
class LoginRedirect:
    portal: Portal
    permanent: bool
    status_class: int
    status_detail: int


@dataclasses.dataclass(frozen=True)
class LoginFailure:
    status_class: int
    status_detail: int
    outcome: _status.Outcome
    message: str

    @property
    def retryable(self) -> bool:
        return self.outcome is _status.Outcome.RETRY


LoginEvent = Union[LoginRequest, LoginSuccess, LoginRedirect, LoginFailure]  # type: ignore[valid-type]


class LoginMachine:
    def __init__(self, config: LoginConfig, *,
                 random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        self.config = config
        self.state = LoginState.SECURITY if config.chap else LoginState.OPERATIONAL
        self._offer = config.operational_offer()
        self.negotiation = Negotiation(Role.INITIATOR, discovery=config.discovery,
                                       policy=dict(self._offer))
        self.chap = ChapInitiator(config.chap, random_bytes) if config.chap else None
        self.tsih = config.tsih
        self.cmdsn = config.first_cmdsn()
        self.exp_statsn = config.exp_statsn
        self.statsn: int | None = None
        self.exp_cmdsn = self.max_cmdsn = 0
        self._request: Pdu | None = None
        self._outgoing = b""               # text still to send with C=1 continuation
        self._final_flags = (False, 0)     # T and NSG for the last piece of it
        self._incoming = bytearray()       # text the target is still continuing
        self._exchanges = 0

    @property
    def stage(self) -> Stage:
        return STAGE_OF[self.state]

    # -- sending --------------------------------------------------------------

    def start(self) -> LoginRequest:
        if self._request is not None:
            raise LocalProtocolError("login already started")
        cfg = self.config
        pairs = [("InitiatorName", cfg.initiator_name)]
        if cfg.initiator_alias:
            pairs.append(("InitiatorAlias", cfg.initiator_alias))
        if cfg.discovery:
            pairs.append(("SessionType", "Discovery"))
        else:
            pairs += [("TargetName", cfg.target_name), ("SessionType", "Normal")]
        if self.chap is not None:
            pairs.append(("AuthMethod", self.chap.auth_method_offer()))
            return self._send(pairs, self.chap.first_transit(), Stage.OPERATIONAL)
        return self._send(pairs + self._offer, True, Stage.FULL_FEATURE)

    def _send(self, pairs: list[tuple[str, str]], transit: bool, nsg: Stage,
              answers: list[tuple[str, str]] = ()) -> LoginRequest:
        """Send our offers and declarations (checked and recorded by the
        negotiation engine) followed by `answers` already produced by it or CHAP."""
        plain = [p for p in pairs if p[0] not in SECURITY_KEYS]
        self.negotiation.offer(self.stage, plain)
        text = encode_text(list(pairs) + list(answers))
        self._outgoing, self._final_flags = text, (transit, nsg)
        return self._next_piece()

    def _next_piece(self) -> LoginRequest:
        piece, self._outgoing = self._outgoing[:LOGIN_MAX_DATA_SEGMENT], self._outgoing[LOGIN_MAX_DATA_SEGMENT:]
        if self._outgoing:  # a continued request must not ask to transit (§11.12.2)
            return self._request_pdu(piece, transit=False, cont=True, nsg=0)
        transit, nsg = self._final_flags
        return self._request_pdu(piece, transit=transit, cont=False, nsg=nsg if transit else 0)

    def _request_pdu(self, data: bytes, *, transit: bool, cont: bool, nsg: int) -> LoginRequest:
        self._exchanges += 1
        if self._exchanges > self.config.max_exchanges:
            raise RemoteProtocolError(f"login did not finish in {self.config.max_exchanges} exchanges")
        cfg = self.config
        self._request = LoginRequest(
            transit=transit, cont=cont, csg=self.stage, nsg=nsg, isid=cfg.isid, tsih=self.tsih,
            itt=cfg.itt, cid=cfg.cid, cmdsn=self.cmdsn, expstatsn=self.exp_statsn, data=data)
        return self._request

    # -- receiving ------------------------------------------------------------

    def receive(self, pdu: Pdu) -> LoginEvent:
        if self._request is None:
            raise LocalProtocolError("receive() before start()")
        if not TRANSITIONS[self.state]:
            raise LocalProtocolError(f"login is over ({self.state.value})")
        stage = self.state.value
        try:
            return self._receive(pdu)
        except ProtocolError as exc:
            self.state = LoginState.FAILED
            raise exc.located(stage=stage, pdu=type(pdu).__name__) from None

    def _receive(self, rsp: Pdu) -> LoginEvent:
        if isinstance(rsp, Reject):
            raise RemoteProtocolError(f"target rejected our Login Request (reason {rsp.reason:#04x})")
        if not isinstance(rsp, LoginResponse):
            raise RemoteProtocolError("unexpected PDU during login")
        req = self._request
        if rsp.itt != req.itt:
            raise RemoteProtocolError(f"ITT {rsp.itt:#x} does not match the request's {req.itt:#x}")
        outcome = _status.outcome(rsp.status_class, rsp.status_detail)
        if outcome is not _status.Outcome.SUCCESS:
            # Only the status matters here: tgtd, for one, zeroes the ISID of a failure.
            self.state = TRANSITIONS[self.state][KIND_OF_OUTCOME[outcome]]
            return self._status_event(rsp, outcome)
        if rsp.isid != req.isid:
            raise RemoteProtocolError(f"ISID {rsp.isid:#014x} does not match ours {req.isid:#014x}")
        if rsp.version_active != 0:
            raise RemoteProtocolError(f"unsupported Version-active {rsp.version_active}")
        if rsp.csg != self.stage:
            raise RemoteProtocolError(f"CSG {rsp.csg} but we are in stage {int(self.stage)}")
        if rsp.transit and rsp.cont:
            raise RemoteProtocolError("T and C both set")
        if rsp.transit and not req.transit:
            raise RemoteProtocolError("T=1 although our request had T=0")
        if rsp.transit and (rsp.nsg not in KIND_OF_NSG or rsp.nsg <= rsp.csg or rsp.nsg > req.nsg):
            raise RemoteProtocolError(f"NSG {rsp.nsg} not allowed (we asked for {req.nsg})")
        self.statsn, self.exp_statsn = rsp.statsn, (rsp.statsn + 1) & 0xFFFFFFFF
        self.exp_cmdsn, self.max_cmdsn = rsp.expcmdsn, rsp.maxcmdsn
        if self._outgoing:
            if rsp.data or rsp.transit or rsp.cont:
                raise RemoteProtocolError("a continued request must be answered with an empty response")
            return self._next_piece()
        self._incoming += rsp.data
        if len(self._incoming) > MAX_LOGIN_TEXT:
            raise RemoteProtocolError(f"login text longer than {MAX_LOGIN_TEXT} bytes")
        if rsp.cont:
            self.state = TRANSITIONS[self.state][ResponseKind.CONTINUED]
            # The empty acknowledgement repeats our T/NSG so the target may
            # still finish the stage with its last piece of text.
            return self._request_pdu(b"", transit=req.transit, cont=False, nsg=req.nsg)
        pairs = decode_text(bytes(self._incoming))
        self._incoming.clear()
        kind = KIND_OF_NSG[Stage(rsp.nsg)] if rsp.transit else ResponseKind.PARTIAL
        next_state = TRANSITIONS[self.state].get(kind)
        if next_state is None:
            raise RemoteProtocolError(f"{kind.value} is not allowed here")
        answers, want_transit = self._process(pairs)
        if not rsp.transit:
            nsg = Stage.OPERATIONAL if self.state is LoginState.SECURITY else Stage.FULL_FEATURE
            return self._send([], want_transit, nsg, answers)
        if answers:
            names = ", ".join(name for name, _ in answers)
            raise RemoteProtocolError(f"T=1 response carries keys that need an answer: {names}")
        if self.state is LoginState.SECURITY and self.chap is not None:
            self.chap.check_may_transit()
        self.state = next_state
        if next_state is LoginState.FULL_FEATURE:
            return self._success(rsp)
        return self._send(list(self._offer), True, Stage.FULL_FEATURE)

    def _process(self, pairs: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], bool]:
        """Hand security keys to CHAP and the rest to negotiation; collect answers."""
        answers: list[tuple[str, str]] = []
        want_transit = True
        if self.state is LoginState.SECURITY and self.chap is not None:
            security = {}
            for name, value in pairs:
                if name in SECURITY_KEYS:
                    if name in security:
                        raise RemoteProtocolError(f"{name} sent twice")
                    security[name] = value
            answers, want_transit = self.chap.receive(security)
            if security.get("AuthMethod") in ("CHAP", "None"):
                self.negotiation.results["AuthMethod"] = security["AuthMethod"]
            pairs = [p for p in pairs if p[0] not in SECURITY_KEYS]
        answers += self.negotiation.receive(self.stage, pairs)
        return answers, want_transit

    def _status_event(self, rsp: Pdu, outcome: _status.Outcome) -> LoginEvent:
        described = _status.describe(rsp.status_class, rsp.status_detail)
        if outcome is _status.Outcome.REDIRECT:
            addresses = [v for k, v in decode_text(rsp.data) if k == "TargetAddress"]
            if len(addresses) != 1:
                raise RemoteProtocolError(f"redirect with {len(addresses)} TargetAddress keys")
            return LoginRedirect(parse_target_address(addresses[0]), rsp.status_detail == 2,
                                 rsp.status_class, rsp.status_detail)
        return LoginFailure(rsp.status_class, rsp.status_detail, outcome, f"target reported {described}")

    def _success(self, rsp: Pdu) -> LoginSuccess:
        if self.tsih == 0 and rsp.tsih == 0:
            raise RemoteProtocolError("final Login Response without a TSIH")
        if self.tsih and rsp.tsih != self.tsih:
            raise RemoteProtocolError(f"TSIH {rsp.tsih} differs from the session's {self.tsih}")
        self.tsih = rsp.tsih
        return LoginSuccess(self.negotiation.parameters(), rsp.tsih, rsp.statsn,
                            rsp.expcmdsn, rsp.maxcmdsn)

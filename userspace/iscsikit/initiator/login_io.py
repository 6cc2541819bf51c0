"""Blocking discovery and login over a plain TCP socket.

All protocol decisions are made by `iscsikit.proto`; this adapter only moves
bytes, keeps the deadlines (connect timeout, one login timer covering connect
plus the whole exchange as iscsid does, a reply timeout for SendTargets),
bounds every read by what the PDU reader says it still needs, and turns
outcomes into `LoginError` carrying open-iscsi's exit code.

`login()` returns a `Session` holding the still-open socket, the negotiated
parameters and the sequence numbers, ready to be handed to the kernel.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import time
from typing import Callable, Mapping

from iscsikit.proto.chap import ChapCredentials
from iscsikit.proto.errors import AuthenticationFailure, LocalProtocolError, RemoteProtocolError
from ..kernel.netdev import Netdevs
from .errors import IscsiError, login_exit_code
from .exitcodes import MESSAGES, ExitCode
from iscsikit.proto.fullfeature import (ScsiExchange, ScsiResult, Sequencer, WriteExchange, WriteLimits,
                                        ping_answer)
from iscsikit.proto.login import (DISCOVERY_ISID, LoginConfig, LoginFailure, LoginMachine,
                                  LoginRedirect, LoginState, LoginSuccess)
from iscsikit.proto.negotiation import Parameters
from iscsikit.proto.pdu import LoginRequest, LogoutResponse, NopIn, Pdu
from iscsikit.proto.reader import PduReader
from iscsikit.proto.sendtargets import (DiscoveredTarget, Portal, SendTargetsExchange,
                                        parse_target_address)

DEFAULT_LOGIN_TIMEOUT = 15.0      # discovery.sendtargets.timeo.login_timeout (records.py); sessions pass theirs
DEFAULT_CONNECT_TIMEOUT = 15.0
DEFAULT_REPLY_TIMEOUT = 30.0      # discovery.sendtargets.timeo.active_timeout: the whole text exchange
MAX_REDIRECTS = 4                 # Login Redirects followed in one login (all within its login_timeout)
MAX_READ = 64 * 1024

log = logging.getLogger(__name__)


def default_initiator_name() -> str:
    return f"iqn.2024-01.org.iscsikit:{socket.gethostname().lower() or 'localhost'}"


class LoginError(IscsiError):
    """A failed discovery or login, with the exit code iscsiadm would return."""

    def __init__(self, exit_code: ExitCode, message: str, stage: str = "login") -> None:
        code = ExitCode(exit_code)
        self.message = message
        # where it failed (connect, security, operational, redirect, sendtargets, ...): for the log
        self.stage = stage
        super().__init__(code, f"{message} ({MESSAGES[code]}, exit code {int(code)})")
        self.exit_code = code


def as_portal(portal: "Portal | str | tuple[str, int]") -> Portal:
    if isinstance(portal, Portal):
        return portal
    if isinstance(portal, tuple):
        return Portal(portal[0], int(portal[1]))
    try:
        return parse_target_address(portal, LocalProtocolError)
    except LocalProtocolError as exc:
        raise LoginError(ExitCode.INVAL, exc.message) from None


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def remaining(self, code: ExitCode, what: str) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise LoginError(code, f"timed out {what}")
        return left


class _Channel:
    """PDUs over a socket, with the reader's limits and the negotiated digests."""

    def __init__(self, sock: socket.socket, portal: Portal) -> None:
        self.sock = sock
        self.portal = portal
        self.reader = PduReader()
        self.header_digest = self.data_digest = False
        self.max_xmit = 8192

    def send(self, pdu: Pdu) -> None:
        wire = pdu.encode(header_digest=self.header_digest, data_digest=self.data_digest,
                          max_data_segment=self.max_xmit)
        try:
            self.sock.sendall(wire)
        except OSError as exc:
            raise LoginError(ExitCode.TRANS, f"send to {self.portal} failed: {exc.strerror or exc}") from None

    def recv(self, deadline: _Deadline, code: ExitCode, what: str) -> Pdu:
        while True:
            pdu = self.reader.next_pdu()
            if pdu is not None:
                return pdu
            self.sock.settimeout(deadline.remaining(code, what))
            try:
                chunk = self.sock.recv(min(self.reader.bytes_wanted(), MAX_READ))
            except socket.timeout:
                raise LoginError(code, f"timed out {what}") from None
            except OSError as exc:
                raise LoginError(ExitCode.TRANS, f"{self.portal} connection error: {exc.strerror or exc}") from None
            if not chunk:
                raise LoginError(ExitCode.TRANS, f"{self.portal} closed the connection {what}")
            self.reader.feed(chunk)


@dataclasses.dataclass
class Session:
    """A logged-in connection: socket, negotiated parameters, sequence numbers."""

    portal: Portal
    target_name: str | None
    login: LoginSuccess
    sequencer: Sequencer
    _channel: _Channel

    @property
    def parameters(self) -> Parameters:
        return self.login.parameters

    @property
    def socket(self) -> socket.socket:
        return self._channel.sock

    def send(self, pdu: Pdu) -> None:
        self._channel.send(pdu)

    def recv(self, timeout: float = DEFAULT_REPLY_TIMEOUT) -> Pdu:
        return self.recv_until(_Deadline(timeout), "waiting for a reply")

    def recv_until(self, deadline: _Deadline, what: str) -> Pdu:
        pdu = self._channel.recv(deadline, ExitCode.PDU_TIMEOUT, what)
        self.sequencer.observe(pdu)
        return pdu

    def ping(self, data: bytes = b"", timeout: float = DEFAULT_REPLY_TIMEOUT) -> NopIn:
        request = self.sequencer.nop_out(data)
        self.send(request)
        while True:
            reply = self.recv(timeout)
            if isinstance(reply, NopIn) and reply.itt == request.itt:
                if reply.data != data:
                    raise LoginError(ExitCode.ERR, "NOP-In did not echo the ping data")
                return reply
            self._unsolicited(reply)

    def scsi(self, cdb: bytes, *, lun: int = 0, expected_length: int = 0,
             timeout: float = DEFAULT_REPLY_TIMEOUT) -> ScsiResult:
        command = self.sequencer.scsi_command(cdb, lun=lun, expected_length=expected_length)
        exchange = ScsiExchange(command)
        self.send(command)
        return self._finish(exchange, timeout)

    def write(self, cdb: bytes, data: bytes, *, lun: int = 0,
              timeout: float = DEFAULT_REPLY_TIMEOUT) -> ScsiResult:
        """A SCSI write of `data`, shaped by what the login negotiated (proto's WriteExchange:
        immediate data, unsolicited Data-Out, R2Ts)."""
        exchange = WriteExchange(self.sequencer, cdb, data, WriteLimits.from_parameters(self.parameters), lun=lun)
        for pdu in exchange.start():
            self.send(pdu)
        return self._finish(exchange, timeout)

    def _finish(self, exchange: "ScsiExchange | WriteExchange", timeout: float) -> ScsiResult:
        while True:
            reply = self.recv(timeout)
            if isinstance(reply, NopIn) and reply.itt == 0xFFFFFFFF:
                self._unsolicited(reply)
                continue
            try:
                result = exchange.receive(reply)
            except RemoteProtocolError as exc:
                raise LoginError(ExitCode.ERR, str(exc)) from None
            if isinstance(result, list):        # Data-Out an R2T asked for
                for pdu in result:
                    self.send(pdu)
            elif result is not None:
                return result

    def _unsolicited(self, pdu: Pdu) -> None:
        if isinstance(pdu, NopIn) and (answer := ping_answer(pdu, self.sequencer.cmdsn, self.sequencer.exp_statsn)):
            self.send(answer)

    def logout(self, timeout: float = DEFAULT_REPLY_TIMEOUT) -> None:
        request = self.sequencer.logout()
        self.send(request)
        while True:
            reply = self.recv(timeout)
            if isinstance(reply, LogoutResponse) and reply.itt == request.itt:
                break
            self._unsolicited(reply)
        self.close()
        if reply.response != 0:
            raise LoginError(ExitCode.LOGOUT, f"target answered Logout with response {reply.response}")

    def detach(self) -> socket.socket:
        """Give up the socket (for the kernel hand-off); the Session is unusable after."""
        sock = self._channel.sock
        sock.settimeout(None)
        return sock

    def close(self) -> None:
        self._channel.sock.close()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclasses.dataclass(frozen=True)
class Binding:
    """Where an iface's connections leave from, as open-iscsi binds them (usr/io.c
    bind_conn_to_iface): `hwaddress`, else `net_ifacename`, names the netdev the socket
    is bound to (SO_BINDTODEVICE); `ipaddress` is bound as the source address (iscsid
    refuses that for iscsi_tcp; we bind it, so an iface can pick one of several
    addresses on one netdev). Resolved at every connect: discovery, the first login
    and each recovery login, so a netdev that went away is named when it is missing."""

    iface: str = "default"
    net_ifacename: str = ""
    hwaddress: str = ""
    ipaddress: str = ""

    def netdev(self, netdevs: Netdevs | None = None) -> str | None:
        """The netdev to bind to, checked present, up and addressed; None when unbound."""
        netdevs = netdevs or Netdevs()
        if self.hwaddress:
            name = netdevs.by_hwaddress(self.hwaddress)
            if name is None:
                raise LoginError(ExitCode.TRANS, f"iface {self.iface}: no netdev has hwaddress {self.hwaddress}", "bind")
        elif self.net_ifacename:
            name = self.net_ifacename
        else:
            return None
        dev = netdevs.get(name)
        if dev is None:
            raise LoginError(ExitCode.TRANS, f"iface {self.iface}: netdev {name} does not exist", "bind")
        if not dev.up:
            raise LoginError(ExitCode.TRANS, f"iface {self.iface}: netdev {name} is down", "bind")
        if not dev.addresses:
            raise LoginError(ExitCode.TRANS, f"iface {self.iface}: netdev {name} has no IP address", "bind")
        return name


UNBOUND = Binding()


def _connect(portal: Portal, deadline: _Deadline, connect_timeout: float,
             bind: Binding = UNBOUND) -> socket.socket:
    try:
        timeout = min(connect_timeout, deadline.remaining(ExitCode.TRANS_TIMEOUT, f"connecting to {portal}"))
    except LoginError as exc:
        exc.stage = "connect"
        raise
    netdev = bind.netdev()
    try:
        infos = socket.getaddrinfo(portal.host, portal.port, 0, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    except OSError as exc:
        raise LoginError(ExitCode.TRANS, f"cannot connect to {portal}: {exc.strerror or exc}", "connect") from None
    if bind.ipaddress:
        want = socket.AF_INET6 if ":" in bind.ipaddress else socket.AF_INET
        infos = [i for i in infos if i[0] == want]
        if not infos:
            raise LoginError(ExitCode.TRANS, f"iface {bind.iface}: ipaddress {bind.ipaddress} cannot reach {portal}", "bind")
    error: OSError | None = None
    for family, kind, proto, _name, address in infos:
        sock = socket.socket(family, kind, proto)
        try:
            if netdev:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, netdev.encode() + b"\0")
            if bind.ipaddress:
                try:
                    sock.bind((bind.ipaddress, 0))
                except OSError as exc:
                    raise LoginError(ExitCode.TRANS, f"iface {bind.iface}: cannot bind source address "
                                                     f"{bind.ipaddress}: {exc.strerror or exc}", "bind") from None
            sock.settimeout(timeout)
            sock.connect(address)
        except socket.timeout:
            sock.close()
            raise LoginError(ExitCode.TRANS_TIMEOUT, f"timed out connecting to {portal}", "connect") from None
        except OSError as exc:
            sock.close()
            error = exc
            continue
        except BaseException:
            sock.close()
            raise
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    via = f" through {netdev}" if netdev else ""
    raise LoginError(ExitCode.TRANS, f"cannot connect to {portal}{via}: {error.strerror or error}", "connect")


def connect(portal: "Portal | str | tuple[str, int]", timeout: float = DEFAULT_CONNECT_TIMEOUT,
            bind: Binding = UNBOUND) -> socket.socket:
    """A connected TCP socket to `portal` (for a login that another party drives)."""
    portal = as_portal(portal)
    return _connect(portal, _Deadline(timeout), timeout, bind)


def login(portal: "Portal | str | tuple[str, int]", target: str | None = None, *,
          initiator_name: str | None = None, chap: ChapCredentials | None = None,
          isid: int | None = None, operational: Mapping[str, str] | None = None,
          connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
          login_timeout: float = DEFAULT_LOGIN_TIMEOUT, max_redirects: int = MAX_REDIRECTS,
          random_bytes: Callable[[int], bytes] = os.urandom, bind: Binding = UNBOUND) -> Session:
    """Log in to `target` at `portal` (a discovery session when `target` is None)."""
    portal = as_portal(portal)
    config = LoginConfig(
        initiator_name=initiator_name or default_initiator_name(), target_name=target, chap=chap,
        isid=DISCOVERY_ISID if isid is None else isid, operational=dict(operational or {}))
    # one login timer for every hop: a chain of redirects is bounded by login_timeout, as one login is
    deadline = _Deadline(login_timeout)
    first = portal
    for hop in range(max_redirects + 1):
        sock = _connect(portal, deadline, connect_timeout, bind)
        try:
            outcome = _login_exchange(_Channel(sock, portal), config, deadline, random_bytes)
        except BaseException:
            sock.close()
            raise
        if isinstance(outcome, Session):
            return outcome
        sock.close()
        if isinstance(outcome, LoginFailure):
            raise LoginError(login_exit_code(outcome.outcome), f"{portal}: {outcome.message}",
                             "status") from None
        # RFC 7143 §11.13.5: 0x0101 moved temporarily, 0x0102 moved permanently; either way this
        # login goes on at the TargetAddress (parsed and checked by proto: host, port 1-65535, tag)
        log.info("login to %s at %s redirected (%s) to %s", target or "discovery", portal,
                 "permanent" if outcome.permanent else "temporary", outcome.portal)
        portal = Portal(outcome.portal.host, outcome.portal.port, outcome.portal.tpgt)
    raise LoginError(ExitCode.LOGIN, f"{first}: more than {max_redirects} redirects", "redirect")


def _login_exchange(channel: _Channel, config: LoginConfig, deadline: _Deadline,
                    random_bytes: Callable[[int], bytes]) -> "Session | LoginFailure | LoginRedirect":
    machine = LoginMachine(config, random_bytes=random_bytes)
    stage = machine.state
    try:
        event: object = machine.start()
        while isinstance(event, LoginRequest):
            channel.send(event)
            # the login timer ran out: 8, as open-iscsi answers a login that timed out
            pdu = channel.recv(deadline, ExitCode.TRANS_TIMEOUT, "during login")
            stage = machine.state
            event = machine.receive(pdu)
    except AuthenticationFailure as exc:
        raise LoginError(ExitCode.LOGIN_AUTH_FAILED, f"{channel.portal}: {exc}", _stage(stage)) from None
    except RemoteProtocolError as exc:
        raise LoginError(protocol_error_code(stage, config), f"{channel.portal}: protocol error: {exc}",
                         _stage(stage)) from None
    except LocalProtocolError as exc:
        raise LoginError(ExitCode.INTERNAL, f"{channel.portal}: {exc}", _stage(stage)) from None
    except LoginError as exc:
        exc.stage = _stage(stage)
        raise
    if not isinstance(event, LoginSuccess):
        return event  # type: ignore[return-value]
    params = event.parameters
    channel.reader.max_data_segment = params.max_recv_data_segment
    channel.reader.header_digest = channel.header_digest = params.header_digest
    channel.reader.data_digest = channel.data_digest = params.data_digest
    channel.max_xmit = params.max_xmit_data_segment
    sequencer = Sequencer(cmdsn=event.exp_cmdsn, exp_statsn=event.exp_statsn,
                          max_cmdsn=event.max_cmdsn, first_itt=config.itt + 1)
    return Session(channel.portal, config.target_name, event, sequencer, channel)


def _stage(state: LoginState) -> str:
    """The login stage a failure happened in, for the daemon's log (security, operational, ...)."""
    return state.name.lower()


def protocol_error_code(stage: LoginState, config: LoginConfig) -> ExitCode:
    """A target that breaks the protocol: 5, or 19 inside CHAP (a malformed CHAP_A, CHAP_I or
    CHAP_C), where open-iscsi's authentication code gives up for good."""
    if stage is LoginState.SECURITY and config.chap is not None:
        return ExitCode.FATAL_LOGIN
    return ExitCode.LOGIN


def discover(portal: "Portal | str | tuple[str, int]", *, initiator_name: str | None = None,
             chap: ChapCredentials | None = None, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
             login_timeout: float = DEFAULT_LOGIN_TIMEOUT,
             reply_timeout: float = DEFAULT_REPLY_TIMEOUT, logout: bool = False,
             random_bytes: Callable[[int], bytes] = os.urandom,
             bind: Binding = UNBOUND) -> list[DiscoveredTarget]:
    """SendTargets=All at `portal`. Like iscsiadm, the connection is closed
    without a Logout unless `logout` is set."""
    portal = as_portal(portal)
    session = login(portal, None, initiator_name=initiator_name, chap=chap,
                    connect_timeout=connect_timeout, login_timeout=login_timeout,
                    random_bytes=random_bytes, bind=bind)
    with session:
        seq = session.sequencer
        exchange = SendTargetsExchange(itt=seq.next_itt(), cmdsn=seq.cmdsn,
                                       exp_statsn=seq.exp_statsn, default_portal=session.portal)
        # active_timeout bounds the whole exchange, not each PDU: a target that answers with a
        # NOP-In or an empty continuation every second would otherwise never run out of time
        deadline = _Deadline(reply_timeout)
        session.send(exchange.request())
        while True:
            pdu = session.recv_until(deadline, "waiting for the SendTargets response")
            try:
                outcome = exchange.receive(pdu)
            except RemoteProtocolError as exc:
                raise LoginError(ExitCode.ERR, f"{portal}: {exc}", "sendtargets") from None
            if isinstance(outcome, list):
                break
            if outcome is not None:
                session.send(outcome)
        seq.cmdsn, seq.exp_statsn = exchange.cmdsn, exchange.exp_statsn
        if logout:
            session.logout(reply_timeout)
    return outcome

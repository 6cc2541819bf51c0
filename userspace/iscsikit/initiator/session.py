"""Log a node in end to end and hand the connection to the kernel; log it out again.

Order (why it differs from iscsid's): iscsid binds the socket to the kernel
first and runs the login through SEND_PDU/RECV_PDU events. We run the login
on the plain socket before BIND_CONN instead, with the same sans-IO login
machine that discovery uses:
- one login code path for discovery, normal sessions and recovery, driven by
  a socket with real timeouts, not by netlink events;
- no 8192-byte RECV_PDU buffer limit on login responses (facts §1.5);
- the kernel never holds a half-logged-in connection, so a failed login
  unwinds to nothing but a session object with no connection.
The session is created first all the same: its sid makes the ISID, as in
iscsid, so a later recovery or a restarted daemon can rebuild the same ISID
(session reinstatement) from sysfs alone. The kernel's initial CmdSN is the
login's CmdSN (0), since login PDUs do not advance it.

    connect → CREATE_SESSION → login (plain socket) → CREATE_CONN → BIND_CONN(fd)
      → params A → params B (negotiated) → START_CONN → SCSI scan
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..kernel import kmod
from ..kernel.constants import Ev, KEv, Param, StopFlag
from ..kernel.netlink import IscsiNetlink, KernelError
from ..kernel.sysfs import Sysfs
from ..proto.chap import ChapCredentials
from ..proto.errors import AuthenticationFailure, ProtocolError
from .exitcodes import ExitCode
from ..proto.login import LoginConfig, LoginFailure, LoginMachine, LoginRedirect, LoginSuccess
from ..proto.pdu import LoginRequest, LoginResponse, LogoutRequest, LogoutResponse
from ..proto.reader import PduReader
from . import login_io
from .errors import IscsiError, login_exit_code
from .records import login_default as _default
from .transports import template

log = logging.getLogger(__name__)

# iscsid's ISID: OUI format (type 0), the 0x023d qualifier, and the sid in the low 24 bits.
ISID_BASE = 0x00023D000000
LOGOUT_TIMEOUT = 15.0


def isid_for(sid: int) -> int:
    return ISID_BASE | (sid & 0xFFFFFF)


@dataclass
class NodeConfig:
    """What a login needs to know about a node (the node record's subset used here)."""
    target: str
    address: str
    port: int = 3260
    tpgt: int | None = None
    initiator_name: str | None = None
    iface_name: str = "default"
    transport: str = "tcp"
    chap: ChapCredentials | None = None
    # the defaults are the node record's (records.py, open-iscsi's): one place
    header_digest: str = _default("header_digest")
    data_digest: str = _default("data_digest")
    replacement_timeout: int = _default("replacement_timeout")
    noop_out_interval: int = _default("noop_out_interval")
    noop_out_timeout: int = _default("noop_out_timeout")
    abort_timeout: int = _default("abort_timeout")
    lu_reset_timeout: int = _default("lu_reset_timeout")
    tgt_reset_timeout: int = _default("tgt_reset_timeout")
    fast_abort: bool = True              # node.session.iscsi.FastAbort's "Yes"
    cmds_max: int = _default("cmds_max")
    queue_depth: int = _default("queue_depth")
    scan: str = _default("scan")         # auto | manual
    login_timeout: float = _default("login_timeout")
    logout_timeout: float = _default("logout_timeout")   # the Logout's waits (devices gone, Response)
    operational: dict = field(default_factory=dict)

    def login_keys(self) -> dict:
        """The operational keys a login offers: the digests, then the record's own keys."""
        return {"HeaderDigest": self.header_digest, "DataDigest": self.data_digest, **self.operational}


@dataclass
class KernelSession:
    sid: int
    host_no: int
    cid: int
    handle: int
    node: NodeConfig
    negotiated: dict
    initiator_name: str = ""


def _flag(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, str) and value in ("Yes", "No"):
        return "1" if value == "Yes" else "0"
    return str(value)


def _params_before_login(node: NodeConfig, initiator_name: str) -> list[tuple[Param, str]]:
    """List A (facts §2.2), in iscsid's order; empty strings are not sent."""
    chap = node.chap
    rows = [
        (Param.TARGET_NAME, node.target),
        (Param.PERSISTENT_ADDRESS, node.address),
        (Param.PERSISTENT_PORT, str(node.port)),
        (Param.SESS_RECOVERY_TMO, str(node.replacement_timeout)),
        (Param.USERNAME, chap.username if chap else ""),
        (Param.USERNAME_IN, (chap.username_in or "") if chap else ""),
        (Param.PASSWORD, chap.secret.reveal().decode("latin-1") if chap else ""),
        (Param.PASSWORD_IN, chap.secret_in.reveal().decode("latin-1") if chap and chap.secret_in else ""),
        (Param.FAST_ABORT, _flag(node.fast_abort)),
        (Param.ABORT_TMO, str(node.abort_timeout)),
        (Param.LU_RESET_TMO, str(node.lu_reset_timeout)),
        (Param.TGT_RESET_TMO, str(node.tgt_reset_timeout)),
        (Param.PING_TMO, str(node.noop_out_timeout)),
        (Param.RECV_TMO, str(node.noop_out_interval)),
        (Param.IFACE_NAME, node.iface_name),
        (Param.INITIATOR_NAME, initiator_name),
        (Param.DISCOVERY_SESS, "0"),
    ]
    return [(p, v) for p, v in rows if v != ""]


def _params_after_login(success: LoginSuccess) -> list[tuple[Param, str]]:
    """List B (facts §2.2): the negotiated values; tcp has no markers, so 12/13 are skipped."""
    params = success.parameters
    n = params.negotiated
    tpgt = success.target_portal_group_tag
    rows = [
        (Param.MAX_RECV_DLENGTH, str(params.max_recv_data_segment)),
        (Param.MAX_XMIT_DLENGTH, str(params.max_xmit_data_segment)),
        (Param.HDRDGST_EN, _flag(params.header_digest)),
        (Param.DATADGST_EN, _flag(params.data_digest)),
        (Param.INITIAL_R2T_EN, _flag(n.get("InitialR2T", "Yes"))),
        (Param.MAX_R2T, str(n.get("MaxOutstandingR2T", 1))),
        (Param.IMM_DATA_EN, _flag(n.get("ImmediateData", "Yes"))),
        (Param.FIRST_BURST, str(n.get("FirstBurstLength", 65536))),
        (Param.MAX_BURST, str(n.get("MaxBurstLength", 262144))),
        (Param.PDU_INORDER_EN, _flag(n.get("DataPDUInOrder", "Yes"))),
        (Param.DATASEQ_INORDER_EN, _flag(n.get("DataSequenceInOrder", "Yes"))),
        (Param.ERL, "0"),
        (Param.EXP_STATSN, str(success.exp_statsn)),
    ]
    if tpgt is not None:
        rows.append((Param.TPGT, str(tpgt)))
    return rows


class SessionError(IscsiError):
    """A login or logout that failed, with the exit code iscsiadm gives for it."""

    def __init__(self, exit_code: int, message: str, stage: str = "login"):
        super().__init__(exit_code, message)
        self.stage = stage      # connect, security, operational, kernel, ...: for the daemon's log


class Initiator:
    """The kernel side of sessions: one NETLINK_ISCSI socket, sysfs, modules."""

    def __init__(self, sysfs: Sysfs | None = None, netlink: IscsiNetlink | None = None):
        self.sysfs = sysfs or Sysfs()
        self._nl = netlink
        self._handles: dict[str, int] = {}

    @property
    def nl(self) -> IscsiNetlink:
        if self._nl is None:
            self._nl = IscsiNetlink()
        return self._nl

    def close(self) -> None:
        if self._nl is not None:
            self._nl.close()
            self._nl = None

    def transport_handle(self, name: str, fresh: bool = False) -> int:
        """The kernel's handle for transport `name`, its module loaded on first use.

        Kept once read: it is the module's address in the kernel, which changes only
        when the module is reloaded, and the kernel refuses a stale one with EINVAL
        (login then asks again with `fresh`)."""
        if not fresh and (handle := self._handles.get(name)) is not None:
            return handle
        tmpl = template(name)
        t = self.sysfs.transport(name)
        if t is None:
            kmod.load(tmpl.module)
            t = self.sysfs.transport(name)
        if t is None:
            raise SessionError(ExitCode.TRANS_NOT_FOUND, f"transport {name} did not register after loading {tmpl.module}")
        if t.caps & tmpl.required_caps != tmpl.required_caps:
            raise SessionError(ExitCode.TRANS_CAPS, f"transport {name} caps {t.caps:#x} lack {tmpl.required_caps:#x}")
        self._handles[name] = t.handle
        return t.handle

    # ---- login -----------------------------------------------------------
    def _login_conn(self, node: NodeConfig, sid: int, initiator_name: str) -> login_io.Session:
        try:
            return login_io.login((node.address, node.port), node.target, initiator_name=initiator_name,
                                  chap=node.chap, isid=isid_for(sid), operational=node.login_keys(),
                                  login_timeout=node.login_timeout)
        except login_io.LoginError as e:
            # the reason only: the exit code's own text is the CLI's to print
            raise SessionError(e.exit_code, e.message, e.stage) from None

    def _set_params(self, handle: int, sid: int, cid: int, rows: list[tuple[Param, str]]) -> None:
        for _param, e in self.nl.set_params(handle, sid, cid, rows):
            if e.errno != 38:   # ENOSYS: a parameter this transport does not keep, as iscsid ignores
                raise e

    def _hand_over(self, handle: int, sid: int, cid: int, node: NodeConfig, conn: login_io.Session,
                   initiator_name: str) -> None:
        """Give a logged-in socket to the kernel: bind, list A, list B, start."""
        self.nl.bind_conn(handle, sid, cid, conn.socket.fileno(), is_leading=True)
        self._set_params(handle, sid, cid, _params_before_login(node, initiator_name) + _params_after_login(conn.login))
        self.nl.start_conn(handle, sid, cid)

    def login(self, node: NodeConfig, created: Callable[[KernelSession], None] | None = None,
              scan: bool = True) -> KernelSession:
        """`created(ks)` is called as soon as the kernel session exists, before any connection
        is bound to it: from then on the kernel may report errors for it, and whoever routes
        events must know it (a daemon registers it there). `scan`: scan the host here when the
        record says auto (a daemon scans it itself, so that the scan's wait is bounded)."""
        handle = self.transport_handle(node.transport)
        initiator_name = node.initiator_name or login_io.default_initiator_name()
        nl = self.nl
        try:
            sid, host_no = nl.create_session(handle, initial_cmdsn=0, cmds_max=node.cmds_max,
                                             queue_depth=node.queue_depth)
        except KernelError as e:
            if e.errno != errno.EINVAL:
                raise
            # the transport's module was reloaded since its handle was read
            handle = self.transport_handle(node.transport, fresh=True)
            sid, host_no = nl.create_session(handle, initial_cmdsn=0, cmds_max=node.cmds_max,
                                             queue_depth=node.queue_depth)
        ks = KernelSession(sid, host_no, 0, handle, node, {}, initiator_name)
        cid = None
        conn: login_io.Session | None = None
        try:
            if created is not None:
                created(ks)
            conn = self._login_conn(node, sid, initiator_name)
            cid = ks.cid = nl.create_conn(handle, sid, 0)
            self._hand_over(handle, sid, cid, node, conn, initiator_name)
            ks.negotiated = dict(conn.parameters.negotiated)
        except BaseException as e:
            self._unwind(handle, sid, cid, bound=cid is not None)
            if conn is not None:
                conn.close()
            if isinstance(e, KernelError):
                raise SessionError(ExitCode.INTERNAL, f"kernel refused the session: {e}", "kernel") from None
            raise
        # The kernel holds its own reference to the socket now; ours is no longer needed.
        conn.detach().close()
        if scan and node.scan == "auto":
            self.sysfs.scan_host(host_no)
        return ks

    def stop_for_recovery(self, ks: KernelSession) -> None:
        """STOP_CONN(RECOVER): releases the dead socket and clears the kernel's cleanup flag.

        Without it every later BIND_CONN answers -ENOTCONN (-107), the endless loop of
        open-iscsi #387; so it is sent once per connection error, before any reconnect.
        """
        self.nl.stop_conn(ks.handle, ks.sid, ks.cid, StopFlag.RECOVER)

    def reinstate(self, ks: KernelSession, recv_pdu: Callable[[int, float], bytes | None] | None = None) -> None:
        """Log the same kernel session in again on a new socket (same ISID, TSIH 0) and restart it.

        Unlike the first login, this one runs through the kernel (SEND_PDU, RECV_PDU
        events), as iscsid's does: the kernel stamps the login with its session's
        current CmdSN, which has moved on since the first login and which userspace
        cannot read, so a login on the plain socket would leave the target expecting
        a CmdSN the kernel never sends. `recv_pdu(sid, timeout)` returns the next
        RECV_PDU payload for the session (a daemon routes events; by default this
        object's own socket is read).
        """
        node = ks.node
        portal: tuple[str, int] = (node.address, node.port)
        # a redirect (0x0101 temporary, 0x0102 permanent) is followed here too, bounded as in
        # the first login; each new recovery starts again at the record's portal
        for _hop in range(login_io.MAX_REDIRECTS + 1):
            outcome = self._reconnect(ks, portal, recv_pdu or self._recv_pdu)
            if isinstance(outcome, LoginSuccess):
                break
            log.info("session %d: reconnect to %s,%s redirected (%s) to %s", ks.sid, portal[0], portal[1],
                     "permanent" if outcome.permanent else "temporary", outcome.portal)
            portal = outcome.portal.address
        else:
            raise SessionError(ExitCode.LOGIN, f"{node.address},{node.port}: more than "
                                               f"{login_io.MAX_REDIRECTS} redirects", "redirect")
        success = outcome
        ks.negotiated = dict(success.parameters.negotiated)
        # as iscsid 2.1.8 does: devices the recovery timeout took offline are set running again
        for lun in self.sysfs.luns(ks.sid):
            if lun.state in ("offline", "transport-offline"):
                with contextlib.suppress(OSError), \
                        open(self.sysfs.path("bus", "scsi", "devices", lun.hctl, "state"), "w") as f:
                    f.write("running")

    def _reconnect(self, ks: KernelSession, portal: tuple[str, int], recv_pdu) -> "LoginSuccess | LoginRedirect":
        """One reconnect: a new socket bound to the session, the login through the kernel, and
        on success the negotiated values and START_CONN; a redirect gives the socket back."""
        node = ks.node
        try:
            sock = login_io.connect(portal, node.login_timeout)
        except login_io.LoginError as e:
            raise SessionError(e.exit_code, e.message, e.stage) from None
        with sock:
            try:
                self.nl.bind_conn(ks.handle, ks.sid, ks.cid, sock.fileno(), is_leading=True)
                self._set_params(ks.handle, ks.sid, ks.cid, _params_before_login(node, ks.initiator_name))
                outcome = self._login_through_kernel(ks, recv_pdu, portal)
                if isinstance(outcome, LoginRedirect):
                    with contextlib.suppress(KernelError):
                        self.nl.stop_conn(ks.handle, ks.sid, ks.cid, StopFlag.RECOVER)
                    return outcome
                self._set_params(ks.handle, ks.sid, ks.cid, _params_after_login(outcome))
                self.nl.start_conn(ks.handle, ks.sid, ks.cid)
            except KernelError as e:
                with contextlib.suppress(KernelError):
                    self.nl.stop_conn(ks.handle, ks.sid, ks.cid, StopFlag.RECOVER)
                raise SessionError(ExitCode.INTERNAL, f"kernel refused the reconnected session: {e}",
                                   "kernel") from None
            except SessionError:
                # give the socket back: the next attempt binds a new one
                with contextlib.suppress(KernelError):
                    self.nl.stop_conn(ks.handle, ks.sid, ks.cid, StopFlag.RECOVER)
                raise
        return outcome

    def _login_through_kernel(self, ks: KernelSession, recv_pdu,
                              portal: tuple[str, int] | None = None) -> "LoginSuccess | LoginRedirect":
        node = ks.node
        where = "%s,%s" % (portal or (node.address, node.port))
        config = LoginConfig(initiator_name=ks.initiator_name, target_name=node.target, chap=node.chap,
                             isid=isid_for(ks.sid), operational=node.login_keys())
        machine = LoginMachine(config, random_bytes=os.urandom)
        deadline = time.monotonic() + node.login_timeout
        stage = machine.state
        try:
            event = machine.start()
            while isinstance(event, LoginRequest):
                stage = machine.state
                raw = event.encode()
                self.nl.send_pdu(ks.handle, ks.sid, ks.cid, raw[:48], event.data)
                payload = recv_pdu(ks.sid, deadline - time.monotonic())
                if payload is None:
                    raise SessionError(ExitCode.PDU_TIMEOUT, f"no Login Response within {node.login_timeout:.0f} s")
                reader = PduReader()
                reader.feed(payload)
                pdu = reader.next_pdu()
                if pdu is None:
                    raise SessionError(ExitCode.LOGIN, "truncated Login Response from the kernel")
                # The kernel tags each request with its own ITT; with one request outstanding
                # the response answers ours.
                if isinstance(pdu, LoginResponse):
                    pdu = dataclasses.replace(pdu, itt=event.itt)
                event = machine.receive(pdu)
        except AuthenticationFailure as e:
            raise SessionError(ExitCode.LOGIN_AUTH_FAILED, f"{where}: {e}", "security") from None
        except ProtocolError as e:
            raise SessionError(login_io.protocol_error_code(stage, config), f"{where}: protocol error: {e}",
                               stage.name.lower()) from None
        if isinstance(event, LoginFailure):
            raise SessionError(login_exit_code(event.outcome), f"{where}: {event.message}", "status")
        return event

    def _recv_pdu(self, sid: int, timeout: float) -> bytes | None:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            ev = self.nl.next_event(left)
            if ev is None:
                return None
            if ev.type == KEv.RECV_PDU and ev["sid"] == sid:
                return ev.payload
        return None

    def _unwind(self, handle: int, sid: int, cid: int | None, bound: bool) -> None:
        """Undo a half-made session, so nothing is left in sysfs."""
        nl = self.nl
        if cid is not None:
            if bound:
                with contextlib.suppress(KernelError):
                    nl.stop_conn(handle, sid, cid, StopFlag.TERM)
            with contextlib.suppress(KernelError):
                nl.destroy_conn(handle, sid, cid)
        with contextlib.suppress(KernelError):
            nl.destroy_session(handle, sid)

    # ---- logout ----------------------------------------------------------
    def logout(self, sid: int, transport: str = "tcp", timeout: float = LOGOUT_TIMEOUT,
               wait_for: Callable[[KEv, int, float], bool] | None = None) -> None:
        """iscsid's order (facts §2.4): unbind, and once the kernel says the SCSI devices
        are gone (KEVENT_UNBIND_SESSION), the Logout PDU; then stop and destroy.

        Sending the Logout while the kernel still removes the devices races their
        last commands (sd's SYNCHRONIZE CACHE) against the target closing the session.
        `wait_for(kind, sid, timeout)` waits for KEv.UNBIND_SESSION or, for KEv.RECV_PDU,
        a Logout Response; by default this object's own socket is read, a daemon that
        routes events passes its own.
        """
        handle = self.transport_handle(transport)
        if self.sysfs.session(sid, luns=False) is None:
            raise SessionError(ExitCode.NO_OBJS_FOUND, f"no session {sid}")
        wait = wait_for or self._wait_for
        nl = self.nl
        t0 = time.monotonic()
        nl.unbind_session(handle, sid)
        t1 = time.monotonic()
        if not wait(KEv.UNBIND_SESSION, sid, timeout):
            log.info("session %d: devices not removed within %.0f s; logging out all the same", sid, timeout)
        # The kernel fills ITT, CmdSN and ExpStatSN; a zero header of the right kind is enough.
        request = LogoutRequest(immediate=True, reason=0, itt=0, cmdsn=0, expstatsn=0)
        t2 = time.monotonic()
        try:
            nl.send_pdu(handle, sid, 0, request.encode())
            if not wait(KEv.RECV_PDU, sid, timeout):
                log.info("session %d: no Logout Response within %.0f s", sid, timeout)
        except KernelError as e:
            log.info("session %d: logout PDU not sent (%s); closing without it", sid, e)
        # stop, destroy the connection, destroy the session: one datagram, answered in
        # order; only the session's destruction must succeed
        t3 = time.monotonic()
        *_, destroyed = nl.batch([(Ev.STOP_CONN, handle, b"", {"sid": sid, "cid": 0, "flag": int(StopFlag.TERM)}),
                                  (Ev.DESTROY_CONN, handle, b"", {"sid": sid, "cid": 0}),
                                  (Ev.DESTROY_SESSION, handle, b"", {"sid": sid})])
        log.debug("session %d: logout: unbind sent in %.3f s, devices gone after %.3f s, Logout Response "
                  "after %.3f s, destroyed in %.3f s", sid, t1 - t0, t2 - t1, t3 - t2, time.monotonic() - t3)
        if isinstance(destroyed, KernelError):
            raise destroyed

    def _wait_for(self, kind: KEv, sid: int, timeout: float) -> bool:
        """Read this object's own socket for a logout step's event (one caller at a time:
        events of other sessions read meanwhile are dropped; the daemon routes its own)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            ev = self.nl.next_event(left)
            if ev is None:
                break
            if is_logout_step(ev, kind, sid):
                return True
        return False


def received_pdu(ev) -> object | None:
    """The PDU a RECV_PDU event carries, decoded; None for anything else or a PDU we cannot read."""
    if ev.type != KEv.RECV_PDU:
        return None
    reader = PduReader()
    try:
        reader.feed(ev.payload)
        return reader.next_pdu()
    except ProtocolError:   # a malformed PDU from the target is not the event loop's problem
        return None


def is_logout_step(ev, kind: KEv, sid: int) -> bool:
    """Whether `ev` is the logout step `kind` of session `sid`: the devices' removal
    (KEv.UNBIND_SESSION) or the Logout Response (KEv.RECV_PDU)."""
    if ev.type != kind or ev.fields.get("sid") != sid:
        return False
    return kind != KEv.RECV_PDU or isinstance(received_pdu(ev), LogoutResponse)

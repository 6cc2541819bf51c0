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

A transport whose endpoint the kernel makes (iser; transports.Endpoint.KERNEL_EP)
has no socket to log in on: the kernel connects, the session is created on
that endpoint, and the login runs through the kernel as a recovery login does
(the endpoint path, written once for every such transport):

    EP_CONNECT(portal) → EP_POLL until connected or login_timeout → CREATE_BOUND_SESSION(ep)
      → CREATE_CONN → BIND_CONN(ep) → params A → login (SEND_PDU / RECV_PDU)
      → params B → START_CONN → SCSI scan

EP_DISCONNECT ends the endpoint on logout, on every unwind, and after a
connection error (scsi_transport_iscsi.c iscsi_if_ep_disconnect: the kernel
keeps the endpoint until userspace lets it go).
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
from ..kernel.constants import Ev, HostParam, KEv, Param, StopFlag
from ..kernel.netlink import IscsiNetlink, KernelError, send_pdu_request
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
from .transports import Endpoint, data_segment_limits, rdma_accepted, template
from .transports import login_keys as transport_login_keys

log = logging.getLogger(__name__)

# iscsid's ISID: OUI format (type 0), the 0x023d qualifier, and the sid in the low 24 bits.
ISID_BASE = 0x00023D000000
LOGOUT_TIMEOUT = 15.0
# what a recv_pdu(sid, timeout) gives when the connection failed while a login through the
# kernel waited (a CONN_ERROR event for the session): the login ends at once, not at its timeout
CONN_LOST = b""
LATE_RESPONSE = 1.0      # seconds a login waits after CONN_LOST for a response already on its way


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
    reopen_max: int = _default("reopen_max")
    initial_login_retry_max: int = _default("initial_login_retry_max")
    max_xmit_dlength: int = _default("max_xmit_dlength")   # 0: what the target declares
    net_ifacename: str = _default("net_ifacename")
    hwaddress: str = _default("hwaddress")
    ipaddress: str = _default("ipaddress")
    logout_timeout: float = _default("logout_timeout")   # the Logout's waits (devices gone, Response)
    operational: dict = field(default_factory=dict)
    # not a record key: this login adds a session beside one to the same (target, portal, iface)
    multiple: bool = False

    def binding(self) -> login_io.Binding:
        return login_io.Binding(self.iface_name, self.net_ifacename, self.hwaddress, self.ipaddress)

    def host_params(self) -> list[tuple[HostParam, str]]:
        """What iscsid sets on the session's host (usr/initiator_common.c iscsi_host_set_params):
        the iface's netdev and hwaddress, each only when the iface names one, so an unbound
        session's host shows "(null)" as open-iscsi's do."""
        return [(p, v) for p, v in ((HostParam.NETDEV_NAME, self.net_ifacename),
                                    (HostParam.HWADDRESS, self.hwaddress)) if v]

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
    ep: int | None = None        # the kernel endpoint's handle (KERNEL_EP transports), while one is bound


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


def _params_after_login(success: LoginSuccess, node: NodeConfig) -> list[tuple[Param, str]]:
    """List B (facts §2.2): the negotiated values; tcp has no markers, so 12/13 are skipped.
    MAX_XMIT_DLENGTH is capped by the record's MaxXmitDataSegmentLength (transports.xmit_limit)."""
    params = success.parameters
    n = params.negotiated
    tpgt = success.target_portal_group_tag
    max_recv, max_xmit = data_segment_limits(template(node.transport), params, node.max_xmit_dlength)
    rows = [
        (Param.MAX_RECV_DLENGTH, str(max_recv)),
        (Param.MAX_XMIT_DLENGTH, str(max_xmit)),
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


class LoginConnectionLost(SessionError):
    """The connection failed during a login through the kernel before the target's Login
    Response arrived (ib_isert can close the RDMA connection on a refused login before its
    response is delivered). iscsid 2.1.8 ignores a connection error in login ("let it
    timeout", usr/initiator.c __conn_error_handle) and its login timer ends the try as a
    PDU timeout (11, iscsi_login_timedout); that is this error's code and what the
    daemon's first-login window (daemon.py _first_login) tries again, once per
    login_timeout as iscsid's timer paces it."""

    def __init__(self, message: str):
        super().__init__(ExitCode.PDU_TIMEOUT, message, "connection")


class Initiator:
    """The kernel side of sessions: one NETLINK_ISCSI socket, sysfs, modules."""

    def __init__(self, sysfs: Sysfs | None = None, netlink: IscsiNetlink | None = None):
        self.sysfs = sysfs or Sysfs()
        self._nl = netlink
        self._handles: dict[str, int] = {}
        self._caps: dict[str, int] = {}

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
        self._caps[name] = t.caps
        return t.handle

    def login_keys(self, node: NodeConfig) -> dict:
        """The operational keys `node`'s login offers over its transport (transports.login_keys)."""
        self.transport_handle(node.transport)
        return transport_login_keys(template(node.transport), self._caps[node.transport], node.login_keys(),
                                    node.max_xmit_dlength)

    # ---- login -----------------------------------------------------------
    def _login_conn(self, node: NodeConfig, sid: int, initiator_name: str) -> login_io.Session:
        try:
            return login_io.login((node.address, node.port), node.target, initiator_name=initiator_name,
                                  chap=node.chap, isid=isid_for(sid), operational=self.login_keys(node),
                                  login_timeout=node.login_timeout, bind=node.binding())
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
        self._set_params(handle, sid, cid, _params_before_login(node, initiator_name) + _params_after_login(conn.login, node))
        self.nl.start_conn(handle, sid, cid)

    def _set_host_params(self, handle: int, host_no: int, node: NodeConfig) -> None:
        for param, value in node.host_params():
            try:
                self.nl.set_host_param(handle, host_no, param, value)
            except KernelError as e:
                if e.errno != errno.ENOSYS:   # a transport that keeps no host params
                    raise

    def login(self, node: NodeConfig, created: Callable[[KernelSession], None] | None = None,
              scan: bool = True, pdu_route: Callable | None = None) -> KernelSession:
        """`created(ks)` is called as soon as the kernel session exists, before any connection
        is bound to it: from then on the kernel may report errors for it, and whoever routes
        events must know it (a daemon registers it there). `scan`: scan the host here when the
        record says auto (a daemon scans it itself, so that the scan's wait is bounded).
        `pdu_route(sid)`: a context manager giving the recv_pdu(sid, timeout) a login through
        the kernel (a KERNEL_EP transport's) reads its responses with (see reinstate; the
        daemon routes its events socket's RECV_PDUs), this object's own socket by default."""
        handle = self.transport_handle(node.transport)
        initiator_name = node.initiator_name or login_io.default_initiator_name()
        if template(node.transport).endpoint is Endpoint.KERNEL_EP:
            return self._endpoint_session(node, handle, initiator_name, pdu_route or self._own_pdus,
                                          created, scan)
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
            self._set_host_params(handle, host_no, node)
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
        # the dead connection's endpoint: the kernel's cleanup disconnected it, and it is
        # freed once userspace says it is done with it (iscsi_if_disconnect_bound_ep)
        self._ep_disconnect(ks.handle, ks.ep)
        ks.ep = None

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
        if template(node.transport).endpoint is Endpoint.KERNEL_EP:
            self._reinstate_through_endpoint(ks, recv_pdu or self._recv_pdu)
            self._revive_luns(ks)
            return
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
        self._revive_luns(ks)

    def _revive_luns(self, ks: KernelSession) -> None:
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
            sock = login_io.connect(portal, node.login_timeout, node.binding())
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
                self._set_params(ks.handle, ks.sid, ks.cid, _params_after_login(outcome, node))
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
                             isid=isid_for(ks.sid), operational=self.login_keys(node))
        machine = LoginMachine(config, random_bytes=os.urandom)
        deadline = time.monotonic() + node.login_timeout
        stage = machine.state
        try:
            event = machine.start()
            while isinstance(event, LoginRequest):
                stage = machine.state
                raw = event.encode()
                self._send_login_pdu(ks, raw[:48], event.data, deadline)
                payload = recv_pdu(ks.sid, deadline - time.monotonic())
                if payload == CONN_LOST:
                    # the target's last Login Response (a refusal) may be passed up just after
                    # the error that its closing the connection caused: give it a moment
                    payload = recv_pdu(ks.sid, min(LATE_RESPONSE, max(0.0, deadline - time.monotonic()))) \
                        or CONN_LOST
                if payload == CONN_LOST:
                    # e.g. ib_isert closing the connection on a refused login before its Login
                    # Response got through
                    raise LoginConnectionLost(f"{where}: the connection failed during the login "
                                              "before any Login Response")
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
        tmpl = template(node.transport)
        if isinstance(event, LoginSuccess) and not rdma_accepted(tmpl, event.parameters):
            raise SessionError(ExitCode.LOGIN, f"{where}: the target did not accept RDMAExtensions=Yes, "
                                               f"which {tmpl.name} needs", "operational")
        return event

    def _send_login_pdu(self, ks: KernelSession, header: bytes, data: bytes, deadline: float) -> None:
        """SEND_PDU of a Login Request, again while the kernel still holds the last one's task.

        libiscsi.c __iscsi_complete_pdu passes a Login Response up (iscsi_recv_pdu) before it
        frees the login task (iscsi_complete_task), and __iscsi_conn_send_pdu refuses a new
        Login while that task is busy ("Login/Text in progress", -EPERM): a quick answer to
        the RECV_PDU can beat the kernel to it (seen over iser in the guest)."""
        pause = 0.002
        while True:
            try:
                self.nl.send_pdu(ks.handle, ks.sid, ks.cid, header, data)
                return
            except KernelError as e:
                if e.errno != errno.EPERM or time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    @contextlib.contextmanager
    def _own_pdus(self, _sid: int):
        yield self._recv_pdu

    # ---- the kernel-endpoint path (transports.Endpoint.KERNEL_EP) ------------
    def _ep_connect(self, handle: int, node: NodeConfig, deadline: float,
                    portal: tuple[str, int] | None = None) -> int:
        """EP_CONNECT to `portal` (the record's by default; a redirect's TargetAddress), then
        EP_POLL until it is up or `deadline` passes.

        The poll asks with a 1 ms timeout and sleeps between asks, as iscsid's does: the
        kernel holds its rx_queue_mutex through a request (scsi_transport_iscsi.c
        iscsi_if_rx), so a long EP_POLL would stall every other session's requests. The
        endpoint is disconnected on every way out but success. ib_iser takes only the
        destination: its ep_connect passes no source address to rdma_resolve_addr
        (iscsi_iser.c), so routing chooses the source, as it does for iscsid's iser logins.
        """
        address, port = portal or (node.address, node.port)
        where = f"{address},{port}"
        bound = [f"{k} {v}" for k, v in (("iface.net_ifacename", node.net_ifacename),
                                         ("iface.hwaddress", node.hwaddress),
                                         ("iface.ipaddress", node.ipaddress)) if v]
        if bound:
            # refused, not accepted and ignored: the kernel would route the connection anyway
            raise SessionError(ExitCode.INVAL, f"iface {node.iface_name}: {node.transport} connects through the "
                                               f"kernel, which binds no source: unset {', '.join(bound)}", "connect")
        try:
            ep = self.nl.ep_connect(handle, address, port)
        except KernelError as e:
            raise SessionError(ExitCode.TRANS, f"cannot connect to {where} over {node.transport}: "
                                               f"{os.strerror(e.errno)}") from None
        try:
            pause = 0.005
            while True:
                try:
                    if self.nl.ep_poll(handle, ep, 1):
                        return ep
                except KernelError:
                    # iscsi_iser_ep_poll answers -1 once the connection attempt failed
                    # (address or route resolution, rejected or unreachable): no errno to tell
                    raise SessionError(ExitCode.TRANS, f"cannot connect to {where} over {node.transport}: "
                                                       "the kernel's connection attempt failed "
                                                       "(no route, or nothing listening there)") from None
                if time.monotonic() + pause > deadline:
                    raise SessionError(ExitCode.TRANS_TIMEOUT, f"timed out connecting to {where} over "
                                                               f"{node.transport} ({node.login_timeout:.0f} s)")
                time.sleep(pause)
                pause = min(pause * 2, 0.1)
        except BaseException:
            self._ep_disconnect(handle, ep)
            raise

    def _ep_disconnect(self, handle: int, ep: int | None) -> None:
        if ep is None:
            return
        try:
            self.nl.ep_disconnect(handle, ep)
        except KernelError as e:
            # EINVAL: the kernel let it go already (a connection error's cleanup, a stop)
            log.debug("EP_DISCONNECT %d: %s", ep, e)

    def _endpoint_session(self, node: NodeConfig, handle: int, initiator_name: str,
                          pdu_route: Callable, created: Callable | None, scan: bool) -> KernelSession:
        """The first login over a kernel endpoint, one try: a failure unwinds everything
        (endpoint, connection, session); trying again is the daemon's (_first_login), one
        window for every transport, as iscsid has one (iscsi_login_eh)."""
        nl = self.nl
        deadline = time.monotonic() + node.login_timeout
        ep = self._ep_connect(handle, node, deadline)
        sid = cid = ks = None
        bound = False
        try:
            sid, host_no = nl.create_bound_session(handle, ep, initial_cmdsn=0, cmds_max=node.cmds_max,
                                                   queue_depth=node.queue_depth)
            cid = nl.create_conn(handle, sid, 0)
            ks = KernelSession(sid, host_no, cid, handle, node, {}, initiator_name, ep=ep)
            if created is not None:
                created(ks)
            with pdu_route(sid) as recv_pdu:
                nl.bind_conn(handle, sid, cid, ep, is_leading=True)
                bound = True
                self._set_params(handle, sid, cid, _params_before_login(node, initiator_name))
                success = self._endpoint_login(ks, recv_pdu, deadline)
            self._set_params(handle, sid, cid, _params_after_login(success, node))
            nl.start_conn(handle, sid, cid)
        except BaseException as e:
            self._ep_disconnect(handle, ks.ep if ks is not None else ep)
            if sid is not None:
                self._unwind(handle, sid, cid, bound)
            if isinstance(e, KernelError):
                raise SessionError(ExitCode.INTERNAL, f"kernel refused the session: {e}") from None
            raise
        ks.negotiated = dict(success.parameters.negotiated)
        if scan and node.scan == "auto":
            self.sysfs.scan_host(host_no)
        return ks

    def _endpoint_login(self, ks: KernelSession, recv_pdu, deadline: float) -> LoginSuccess:
        """The login through the kernel on ks.ep, following redirects (0x0101 temporary, 0x0102
        permanent; at most login_io.MAX_REDIRECTS, within `deadline`) as iscsid does for a
        kernel endpoint: stop the connection, let the endpoint go, connect a new endpoint to
        the TargetAddress and bind it to the same connection, then log in again there."""
        node = ks.node
        portal: tuple[str, int] | None = None
        for _hop in range(login_io.MAX_REDIRECTS + 1):
            outcome = self._login_through_kernel(ks, recv_pdu, portal)
            if isinstance(outcome, LoginSuccess):
                return outcome
            log.info("session %d: login to %s,%s over %s redirected (%s) to %s", ks.sid,
                     *(portal or (node.address, node.port)), node.transport,
                     "permanent" if outcome.permanent else "temporary", outcome.portal)
            portal = outcome.portal.address
            with contextlib.suppress(KernelError):
                self.nl.stop_conn(ks.handle, ks.sid, ks.cid, StopFlag.RECOVER)
            self._ep_disconnect(ks.handle, ks.ep)
            ks.ep = None
            ks.ep = self._ep_connect(ks.handle, node, deadline, portal)
            self.nl.bind_conn(ks.handle, ks.sid, ks.cid, ks.ep, is_leading=True)
            self._set_params(ks.handle, ks.sid, ks.cid, _params_before_login(node, ks.initiator_name))
        raise SessionError(ExitCode.LOGIN, f"{node.address},{node.port}: more than "
                                           f"{login_io.MAX_REDIRECTS} redirects", "redirect")

    def _reinstate_through_endpoint(self, ks: KernelSession, recv_pdu) -> None:
        """reinstate() for a KERNEL_EP transport: a new endpoint bound to the same connection
        (each recovery starts again at the record's portal, as the tcp path does)."""
        node = ks.node
        self._ep_disconnect(ks.handle, ks.ep)     # normally gone with stop_for_recovery already
        ks.ep = None
        deadline = time.monotonic() + node.login_timeout
        ks.ep = self._ep_connect(ks.handle, node, deadline)
        try:
            self.nl.bind_conn(ks.handle, ks.sid, ks.cid, ks.ep, is_leading=True)
            self._set_params(ks.handle, ks.sid, ks.cid, _params_before_login(node, ks.initiator_name))
            success = self._endpoint_login(ks, recv_pdu, deadline)
            self._set_params(ks.handle, ks.sid, ks.cid, _params_after_login(success, node))
            self.nl.start_conn(ks.handle, ks.sid, ks.cid)
        except BaseException as e:
            self._ep_disconnect(ks.handle, ks.ep)
            ks.ep = None
            with contextlib.suppress(KernelError):
                self.nl.stop_conn(ks.handle, ks.sid, ks.cid, StopFlag.RECOVER)
            if isinstance(e, KernelError):
                raise SessionError(ExitCode.INTERNAL, f"kernel refused the reconnected session: {e}") from None
            raise
        ks.negotiated = dict(success.parameters.negotiated)

    def _recv_pdu(self, sid: int, timeout: float) -> bytes | None:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            ev = self.nl.next_event(left)
            if ev is None:
                return None
            if ev.type == KEv.RECV_PDU and ev["sid"] == sid:
                return ev.payload
            if ev.type == KEv.CONN_ERROR and ev["sid"] == sid:
                return CONN_LOST
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
               ep: int | None = None) -> None:
        """logout_steps() driven here, blocking: requests and the kernel's events on this
        object's own socket. The daemon drives the same steps as a coroutine instead."""
        handle = self.transport_handle(transport)
        if self.sysfs.session(sid, luns=False) is None:
            raise SessionError(ExitCode.NO_OBJS_FOUND, f"no session {sid}")
        steps = logout_steps(handle, sid, timeout, ep, unbound=self.sysfs.unbound(sid))
        answer = None
        while True:
            try:
                step = steps.send(answer)
            except StopIteration:
                return
            answer = (self.nl.batch(step.requests) if isinstance(step, Send)
                      else self._wait_for(step.kind, sid, step.timeout))

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


@dataclass(frozen=True)
class Send:
    """A logout step: these requests in one datagram; the answer is their results (Uevent or KernelError)."""
    requests: list


@dataclass(frozen=True)
class Await:
    """A logout step: the kernel's event `kind` for the session (is_logout_step); the answer is
    whether it came within `timeout` seconds."""
    kind: KEv
    timeout: float


def logout_steps(handle: int, sid: int, timeout: float = LOGOUT_TIMEOUT, ep: int | None = None,
                 unbound: bool = False):
    """The logout in iscsid's order (facts §2.4), as a generator of Send / Await steps, so a
    blocking caller (Initiator.logout) and the daemon's event loop drive the one sequence:
    unbind, and once the kernel says the SCSI devices are gone (KEVENT_UNBIND_SESSION), the
    Logout PDU; then (disconnect the endpoint,) stop, destroy the connection, destroy the session.

    Sending the Logout while the kernel still removes the devices races their last commands
    (sd's SYNCHRONIZE CACHE) against the target closing the session. A wait that runs out,
    or a Logout PDU the kernel refuses, does not stop the logout; only the session's
    destruction must succeed (KernelError raised otherwise; an UNBIND the kernel refuses
    raises before anything else is sent). `ep`: the connection's kernel endpoint (KERNEL_EP
    transports), disconnected first, as iscsid does (ktransport_ep_disconnect before
    stop_conn); an adopted session's comes from the daemon's endpoint record (sysfs links no
    connection to its endpoint). Unknown (a session another daemon made), STOP_CONN
    disconnects it in the kernel (6.1 iscsi_if_stop_conn; before 5.18 it stayed behind).
    `unbound`: sysfs says the session's target_state is UNBOUND (an earlier logout got past the
    unbind, then the kernel refused its destruction): __iscsi_unbind_session sends no event for
    such a session (6.1), so neither the unbind nor the wait for its event is made.
    """
    t0 = time.monotonic()
    if not unbound:
        [answer] = yield Send([(Ev.UNBIND_SESSION, handle, b"", {"sid": sid})])
        if isinstance(answer, KernelError):
            raise answer
    t1 = time.monotonic()
    if not unbound and not (yield Await(KEv.UNBIND_SESSION, timeout)):
        log.info("session %d: devices not removed within %.0f s; logging out all the same", sid, timeout)
    # The kernel fills ITT, CmdSN and ExpStatSN; a zero header of the right kind is enough.
    request = LogoutRequest(immediate=True, reason=0, itt=0, cmdsn=0, expstatsn=0)
    t2 = time.monotonic()
    [sent] = yield Send([send_pdu_request(handle, sid, 0, request.encode())])
    if isinstance(sent, KernelError):
        log.info("session %d: logout PDU not sent (%s); closing without it", sid, sent)
    elif not (yield Await(KEv.RECV_PDU, timeout)):
        log.info("session %d: no Logout Response within %.0f s", sid, timeout)
    t3 = time.monotonic()
    ep_step = [(Ev.TRANSPORT_EP_DISCONNECT, handle, b"", {"ep_handle": ep})] if ep is not None else []
    *answers, destroyed = yield Send(ep_step + [
        (Ev.STOP_CONN, handle, b"", {"sid": sid, "cid": 0, "flag": int(StopFlag.TERM)}),
        (Ev.DESTROY_CONN, handle, b"", {"sid": sid, "cid": 0}),
        (Ev.DESTROY_SESSION, handle, b"", {"sid": sid})])
    if ep is not None and isinstance(answers[0], KernelError):
        log.info("session %d: logout: endpoint ep-%d not disconnected (%s); STOP_CONN let it go", sid, ep, answers[0])
    elif ep is not None:
        log.info("session %d: logout: endpoint ep-%d disconnected first", sid, ep)
    log.debug("session %d: logout: unbind sent in %.3f s, devices gone after %.3f s, Logout Response "
              "after %.3f s, destroyed in %.3f s", sid, t1 - t0, t2 - t1, t3 - t2, time.monotonic() - t3)
    if isinstance(destroyed, KernelError):
        raise destroyed


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

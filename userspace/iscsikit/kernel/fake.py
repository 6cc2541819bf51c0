"""An in-memory NETLINK_ISCSI and sysfs, for unit tests that drive the real daemon.

The model is pyroute2's ipmock (`IPRoute(use_socket=IPEngine())`): the fake
stands in for the socket, not for the class above it. `FakeKernel.netlink()`
returns a real `IscsiNetlink` whose socket is a `FakeSocket`: requests are
encoded, batched and decoded by the production code, and this module answers
them as Linux 6.1 does, from the same layout tables (netlink.py). Every
other message goes to the sockets joined to the iscsid group, as multicast
events do. The kernel's objects are written as a sysfs-shaped tree in a
directory that `Sysfs(root)` reads unchanged (`FakeKernel.sysfs`).

What it mimics, with the kernel file each behaviour comes from (6.1;
docs: open-iscsi-facts.md §1, §2.6, §2.7):
- scsi_transport_iscsi.c iscsi_if_rx / iscsi_if_recv_msg: every message of a
  datagram is answered in turn with a copy of its uevent, the result in `r`,
  or ISCSI_KEVENT_IF_ERROR with a negative errno; a bad transport handle is
  -EINVAL, an unknown request -ENOSYS; GET_STATS answers by multicast.
- the conn state machine (DOWN / BOUND / UP / FAILED) and the CLEANUP flag
  of a connection error (iscsi_conn_error_event, iscsi_if_stop_conn): until
  STOP_CONN, BIND/START/SEND_PDU answer retcode -ENOTCONN, SET_PARAM -ENOTCONN.
- iscsi_tcp.c: BIND_CONN takes the caller's fd (its own reference, as
  sockfd_lookup does); the socket is released at STOP_CONN and DESTROY_CONN;
  one Scsi_Host per session, freed with it; a peer that closes the socket
  is ISCSI_ERR_TCP_CONN_CLOSE.
- libiscsi.c: SEND_PDU stamps ITT and CmdSN (and ExpStatSN after login)
  and writes the PDU to the bound socket; Login, Text and Logout Responses
  (and Async Messages) read from it come back as RECV_PDU events; a
  target's NOP-In ping is answered here, as the kernel answers it;
  iscsi_set_param's accepted parameters, -ENOSYS for the rest.

- ib_iser (iscsi_iser.c), when made with transports=("tcp", "iser"): the kernel
  endpoint path. TRANSPORT_EP_CONNECT starts the connection to the portal in the payload
  (rdma_resolve_addr...; here a non-blocking TCP connect stands for the RDMA one) and
  answers the endpoint's handle, an /sys/class/iscsi_endpoint/ep-N with the lowest free
  id (idr_alloc from 1); EP_POLL answers 1 once up, 0 when the timeout passed first, -1
  once the attempt failed (iscsi_iser_ep_poll); CREATE_BOUND_SESSION needs the endpoint
  (-EINVAL without), CREATE_SESSION is refused (iscsi_iser_session_create: "no endpoint");
  BIND_CONN takes an endpoint handle (retcode -EINVAL for an unknown one). The endpoint
  goes with EP_DISCONNECT (an unknown handle: -EINVAL), with STOP_CONN of the connection
  bound to it (6.1 iscsi_if_stop_conn disconnects a bound endpoint itself, for a userspace
  that does not know it, as after a restart), and with a connection error's cleanup
  (iscsi_cleanup_conn_work_fn: its sysfs entry goes, its handle stays taken until userspace's
  EP_DISCONNECT). A peer that closes is ISCSI_ERR_CONN_FAILED (1011, iser_conn_error).

Not modelled: the SCSI data path and the recovery_tmo timer (devices do not
go transport-offline by themselves), the other offload transports.

Test hooks: `conn_error(sid, error)` (the connection dies as the kernel sees
it), `add_lun(sid, lun, block)` (what a scan would find), `reload_module()`
(a new transport handle), `refuse(kind, sid)` (the next such request fails),
`busy()` (the kernel's mutex held), `requests` and `kinds()` (every request
received, in order), `datagrams` (how many messages each datagram carried).
Sessions outlive the daemon that made them, so a second daemon on the same
FakeKernel adopts them, as after a restart.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import errno
import os
import select
import selectors
import shutil
import socket
import stat
import threading

from ..proto.errors import ProtocolError
from ..proto.pdu import (INITIATOR_OPCODES, RESERVED_TAG, AsyncMessage, LoginRequest, LoginResponse,
                         LogoutRequest, LogoutResponse, NopIn, NopOut, TextRequest, TextResponse)
from ..proto.reader import LOGIN_MAX_DATA_SEGMENT, PduReader, decode_one
from .constants import GROUP_ISCSID, ConnErr, Ev, HostParam, KEv, Param, StopFlag
from .netlink import (HEAD, NLMSGHDR, REQUEST_FIELDS, RESULT_FIELDS, STATS_CUSTOM_FIELDS, STATS_FIELDS,
                      IscsiNetlink, _layout, layout, parse_sockaddr)
from .sysfs import Sysfs

TCP_CAPS = 0x39                    # iscsi_tcp.c: RECOVERY_L0 | MULTI_R2T | HDRDGST | DATADGST
ISER_CAPS = 0x89                   # iscsi_iser.c: RECOVERY_L0 | MULTI_R2T | TEXT_NEGO (the lab's 6.1 shows 0x89)
FIRST_HANDLE = 18446744072641548384  # a kernel address, as /sys/class/iscsi_transport/tcp/handle shows
# each transport module's handle, its caps and its hosts' proc_name
TRANSPORTS = {"tcp": (FIRST_HANDLE, TCP_CAPS, "iscsi_tcp"),
              "iser": (FIRST_HANDLE + 0x2000000, ISER_CAPS, "iscsi_iser")}
ENDPOINT_EVENTS = (Ev.TRANSPORT_EP_CONNECT, Ev.TRANSPORT_EP_POLL, Ev.TRANSPORT_EP_DISCONNECT,
                   Ev.CREATE_BOUND_SESSION)
SOCKET_BUFFER = 1 << 20

# libiscsi.c iscsi_set_param: what it keeps; anything else is -ENOSYS (iscsid ignores that)
ACCEPTED_PARAMS = frozenset(p for p in Param if p in range(0, 12) or p in range(14, 19) or p in range(22, 29)
                            or p in range(30, 33) or p in range(34, 37) or p in range(39, 42)
                            or p in (43, 44, 70, 71))

# Where a SET_PARAM shows in sysfs (scsi_transport_iscsi.c iscsi_session_attr / iscsi_conn_attr,
# the attributes iscsi_tcp makes visible; facts §2.6).
SESSION_ATTRS = {
    Param.TARGET_NAME: "targetname", Param.TPGT: "tpgt", Param.INITIAL_R2T_EN: "initial_r2t",
    Param.MAX_R2T: "max_outstanding_r2t", Param.IMM_DATA_EN: "immediate_data",
    Param.FIRST_BURST: "first_burst_len", Param.MAX_BURST: "max_burst_len",
    Param.PDU_INORDER_EN: "data_pdu_in_order", Param.DATASEQ_INORDER_EN: "data_seq_in_order",
    Param.ERL: "erl", Param.USERNAME: "username", Param.USERNAME_IN: "username_in",
    Param.PASSWORD: "password", Param.PASSWORD_IN: "password_in", Param.FAST_ABORT: "fast_abort",
    Param.ABORT_TMO: "abort_tmo", Param.LU_RESET_TMO: "lu_reset_tmo", Param.TGT_RESET_TMO: "tgt_reset_tmo",
    Param.IFACE_NAME: "ifacename", Param.INITIATOR_NAME: "initiatorname",
}
CONN_ATTRS = {
    Param.MAX_RECV_DLENGTH: "max_recv_dlength", Param.MAX_XMIT_DLENGTH: "max_xmit_dlength",
    Param.HDRDGST_EN: "header_digest", Param.DATADGST_EN: "data_digest", Param.EXP_STATSN: "exp_statsn",
    Param.PERSISTENT_ADDRESS: "persistent_address", Param.PERSISTENT_PORT: "persistent_port",
    Param.PING_TMO: "ping_tmo", Param.RECV_TMO: "recv_tmo",
}
# libiscsi.c iscsi_session_get_param / iscsi_conn_get_param: strings print "(null)" while
# unset, the rest are numbers (0)
STRING_PARAMS = frozenset({Param.TARGET_NAME, Param.USERNAME, Param.USERNAME_IN, Param.PASSWORD,
                           Param.PASSWORD_IN, Param.IFACE_NAME, Param.INITIATOR_NAME, Param.PERSISTENT_ADDRESS})
HOST_ATTRS = {HostParam.NETDEV_NAME: "netdev", HostParam.HWADDRESS: "hwaddress",
              HostParam.INITIATOR_NAME: "initiatorname"}

# iscsi_tcp.c iscsi_sw_tcp_conn_get_stats: the custom counters it adds
TCP_CUSTOM_STATS = ("tx_sendpage_failures", "rx_discontiguous_hdr", "eh_abort_cnt")
_STATS, _STATS_CUSTOM = _layout(STATS_FIELDS), _layout(STATS_CUSTOM_FIELDS)

# PDUs libiscsi.c __iscsi_complete_pdu hands to userspace (iscsi_recv_pdu) rather than
# completing itself
TO_USERSPACE = (LoginResponse, TextResponse, LogoutResponse, AsyncMessage)


class _Refused(Exception):
    """A handler's negative errno: IF_ERROR when raised, r.retcode when returned."""

    def __init__(self, err: int):
        self.err = -abs(err)


def message(ev_type: int, *, nlmsg_type: int = 0, handle: int = 0, iferror: int = 0,
            u_kind: int | None = None, u: dict | None = None,
            r_kind: int | None = None, r: dict | None = None, payload: bytes = b"") -> bytes:
    """One kernel → user message, packed by the layout netlink.py declares; padded to
    NLMSG_ALIGN and counted in nlmsg_len, as nlmsg_total_size does (iscsi_recv_pdu)."""
    lay = layout(u_kind, r_kind)
    u_rows = REQUEST_FIELDS.get(u_kind, ()) if u_kind is not None else ()
    r_rows = RESULT_FIELDS.get(r_kind, ()) if r_kind is not None else ()
    size = lay.codec.size + len(payload)
    head = {"nlmsg_len": size + (-size % 4), "nlmsg_type": nlmsg_type, "nlmsg_flags": 0, "nlmsg_seq": 0,
            "nlmsg_pid": 0, "type": ev_type, "iferror": iferror, "transport_handle": handle}
    values = ([head[n] for n, _ in NLMSGHDR + HEAD] + [int((u or {}).get(n, 0)) for n, _ in u_rows]
              + [int((r or {}).get(n, 0)) for n, _ in r_rows])
    return lay.codec.pack(*values) + payload + b"\0" * (-size % 4)


def encode_stats(counters: dict, custom: list[tuple[str, int]]) -> bytes:
    """struct iscsi_stats and its custom entries (facts §1.8), what follows a GET_STATS result."""
    values = [counters.get(n, 0) for n, _ in STATS_FIELDS[:-1]] + [len(custom)]
    return _STATS.pack(*values) + b"".join(_STATS_CUSTOM.pack(d.encode(), v) for d, v in custom)


class FakeSocket:
    """What IscsiNetlink needs of an AF_NETLINK socket; the kernel's answers arrive on a
    SOCK_SEQPACKET pair (one message per record, like a datagram, but not limited to
    unix_dgram's 10 queued datagrams), so select() and the event loop see a real fd."""

    def __init__(self, kernel: "FakeKernel", portid: int):
        self.kernel = kernel
        self.portid = portid
        self.groups = 0
        self._r, self._w = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._w.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        self.overrun = False
        self.closed = False

    def setsockopt(self, level, option, value) -> None:
        self._r.setsockopt(level, option, value)

    def bind(self, address) -> None:
        _pid, groups = address
        self.groups = groups
        self.kernel._join(self)

    def fileno(self) -> int:
        return self._r.fileno()

    def sendto(self, data: bytes, _address=None) -> int:
        self.kernel._receive(self, bytes(data))
        return len(data)

    def recv(self, size: int) -> bytes:
        # af_netlink.c netlink_overrun: a full receive queue drops the message and the
        # next read says so once with ENOBUFS
        if self.overrun:
            self.overrun = False
            raise OSError(errno.ENOBUFS, os.strerror(errno.ENOBUFS))
        return self._r.recv(size)

    def deliver(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            self._w.send(data, socket.MSG_DONTWAIT)
        except BlockingIOError:
            self.overrun = True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.kernel._leave(self)
            self._r.close()
            self._w.close()


@dataclasses.dataclass
class _Conn:
    sid: int
    cid: int
    dir: str
    state: str = "down"                 # iscsi_conn_state_name: down | bound | up | failed
    cleanup: bool = False               # ISCSI_CLS_CONN_BIT_CLEANUP
    sock: socket.socket | None = None
    reader: PduReader | None = None
    exp_statsn: int = 0
    header_digest: bool = False
    data_digest: bool = False
    params: dict = dataclasses.field(default_factory=dict)
    counters: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    ep: "_Endpoint | None" = None       # the kernel endpoint bound (iser); its socket is c.sock


@dataclasses.dataclass
class _Endpoint:
    id: int
    sock: socket.socket
    dir: str
    error: int = 0                      # the connect's errno once it failed
    up: bool = False
    conn: _Conn | None = None
    gone: bool = False                  # disconnected by the kernel; the handle still taken


@dataclasses.dataclass
class _Session:
    sid: int
    host_no: int
    handle: int
    dir: str
    cmdsn: int
    cmds_max: int
    state: str = "FREE"                 # iscsi_session_state_name: FREE | LOGGED_IN | FAILED
    target_state: str = "ALLOCATED"     # ALLOCATED | SCANNED | UNBINDING | UNBOUND
    recovered: bool = False             # stopped with RECOVER since the last start (libiscsi stop_stage)
    age: int = 0
    tag: int = 0
    conns: dict = dataclasses.field(default_factory=dict)
    luns: dict = dataclasses.field(default_factory=dict)
    params: dict = dataclasses.field(default_factory=dict)


class FakeKernel:
    """scsi_transport_iscsi + iscsi_tcp in memory, sysfs under `root`."""

    def __init__(self, root: str | os.PathLike, transports: tuple[str, ...] = ("tcp",)):
        self.root = os.fspath(root)
        self.sysfs = Sysfs(self.root)
        self.transports = {name: TRANSPORTS[name][0] for name in transports}
        self.endpoints: dict[int, _Endpoint] = {}
        self.sessions: dict[int, _Session] = {}
        self.requests: list[tuple[Ev | int, dict]] = []
        self.datagrams: list[int] = []      # the messages of each datagram handled, in order
        self.arrived = 0                    # datagrams sent to the kernel, handled or still waiting
        self._refusals: dict[tuple[Ev, int], int] = {}
        self._lock = threading.RLock()      # the kernel's rx_queue_mutex: one message at a time
        self._members: list[FakeSocket] = []
        self._sockets: list[FakeSocket] = []
        self._next_sid = 0                  # iscsi_session_nr: atomic_add_return, never reused
        self._next_host = 0
        self._next_portid = -4096           # af_netlink.c autobind: the pid first, then -4096, -4097, ...
        self._handlers = {
            Ev.CREATE_SESSION: self._create_session, Ev.DESTROY_SESSION: self._destroy_session,
            Ev.UNBIND_SESSION: self._unbind_session, Ev.CREATE_CONN: self._create_conn,
            Ev.DESTROY_CONN: self._destroy_conn, Ev.BIND_CONN: self._bind_conn,
            Ev.SET_PARAM: self._set_param, Ev.START_CONN: self._start_conn, Ev.STOP_CONN: self._stop_conn,
            Ev.SEND_PDU: self._send_pdu, Ev.GET_STATS: self._get_stats, Ev.SET_HOST_PARAM: self._set_host_param,
            Ev.TRANSPORT_EP_CONNECT: self._ep_connect, Ev.TRANSPORT_EP_POLL: self._ep_poll,
            Ev.TRANSPORT_EP_DISCONNECT: self._ep_disconnect, Ev.CREATE_BOUND_SESSION: self._create_bound_session,
        }
        for name, handle in self.transports.items():
            tdir = self._mkdev(os.path.join("devices", "virtual", "iscsi_transport", name), "iscsi_transport", name)
            self._write(tdir, handle=handle, caps=f"{TRANSPORTS[name][1]:#x}")
        for kind in ("iscsi_session", "iscsi_connection", "iscsi_host", "scsi_host", "iscsi_endpoint"):
            os.makedirs(self.path("class", kind), exist_ok=True)
        os.makedirs(self.path("bus", "scsi", "devices"), exist_ok=True)
        self._selector = selectors.DefaultSelector()
        self._stopping = threading.Event()
        self._rx = threading.Thread(target=self._rx_loop, name="fake-kernel-rx", daemon=True)
        self._rx.start()

    # ---- sockets -----------------------------------------------------------
    def netlink(self, groups: int = GROUP_ISCSID, reply_timeout: float = 5.0) -> IscsiNetlink:
        """A production IscsiNetlink on a socket of this kernel (what Daemon(kernel=) opens)."""
        with self._lock:
            portid = os.getpid() if not self._sockets else self._next_portid
            if self._sockets:
                self._next_portid -= 1
            sock = FakeSocket(self, portid)
            self._sockets.append(sock)
        return IscsiNetlink(groups, reply_timeout, sock=sock)

    def _join(self, sock: FakeSocket) -> None:
        with self._lock:
            if sock.groups & (1 << (GROUP_ISCSID - 1)) and sock not in self._members:
                self._members.append(sock)

    def _leave(self, sock: FakeSocket) -> None:
        with self._lock:
            if sock in self._members:
                self._members.remove(sock)

    def _multicast(self, data: bytes) -> int:
        """To every socket in the iscsid group; -ESRCH with nobody listening (nlmsg_multicast)."""
        for sock in list(self._members):
            sock.deliver(data)
        return 0 if self._members else -errno.ESRCH

    def close(self) -> None:
        self._stopping.set()
        self._rx.join(5)
        with self._lock:
            for s in list(self.sessions.values()):
                for c in s.conns.values():
                    self._release(c)
            for ep in list(self.endpoints.values()):
                ep.sock.close()
            for sock in list(self._sockets):
                sock.close()
        self._selector.close()

    def __enter__(self) -> "FakeKernel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- requests ----------------------------------------------------------
    def _receive(self, sock: FakeSocket, data: bytes) -> None:
        """iscsi_if_rx: each message in turn, each answered to its sender."""
        off = 0
        self.arrived += 1
        with self._lock:
            self.datagrams.append(0)
            while off + 16 <= len(data):
                length = int.from_bytes(data[off:off + 4], "little")
                raw = data[off:off + max(length, 16)]
                off += (max(length, 16) + 3) & ~3
                if length < layout(None, None).codec.size:
                    continue        # shorter than nlmsghdr + uevent: skipped without a reply
                nlmsg_type = int.from_bytes(raw[4:6], "little")
                try:
                    kind = Ev(nlmsg_type)
                except ValueError:
                    kind = None
                lay = layout(kind, None)
                values = dict(zip(lay.names, lay.codec.unpack_from(raw)))
                u = {n: values[n] for n, _ in REQUEST_FIELDS.get(kind, ())}
                payload = raw[lay.codec.size:length]
                handle = values["transport_handle"]
                self.requests.append((kind if kind is not None else nlmsg_type, dict(u)))
                self.datagrams[-1] += 1
                r_kind, r, err = None, {}, 0
                try:
                    if (kind, u.get("sid")) in self._refusals:
                        raise _Refused(self._refusals.pop((kind, u.get("sid"))))
                    if handle not in self.transports.values():
                        raise _Refused(errno.EINVAL)       # iscsi_if_transport_lookup found nothing
                    if kind not in self._handlers or (kind in ENDPOINT_EVENTS and not self._is_iser(handle)):
                        # tcp has no ep_connect, no discovery offload, ... (facts §1.3)
                        raise _Refused(errno.EINVAL if kind in ENDPOINT_EVENTS + (Ev.TGT_DSCVR,)
                                       else errno.ENOSYS)
                    result = self._handlers[kind](sock, handle, u, payload)
                    if kind == Ev.GET_STATS:
                        continue                            # answered by multicast, no reply
                    if isinstance(result, _Refused):
                        r_kind, r = kind, {"retcode": result.err}
                    elif result is not None:
                        r_kind, r = kind, result
                    else:
                        r_kind = kind if kind in RESULT_FIELDS else None
                except _Refused as e:
                    err = e.err
                ev_type = KEv.IF_ERROR if err else nlmsg_type
                sock.deliver(message(ev_type, nlmsg_type=nlmsg_type, handle=handle, iferror=err,
                                     u_kind=kind, u=u, r_kind=None if err else r_kind, r=r))

    def _session(self, sid: int) -> _Session:
        s = self.sessions.get(sid)
        if s is None:
            raise _Refused(errno.EINVAL)
        return s

    def _conn(self, sid: int, cid: int) -> _Conn:
        c = self._session(sid).conns.get(cid)
        if c is None:
            raise _Refused(errno.EINVAL)
        return c

    def _is_iser(self, handle: int) -> bool:
        return self.transports.get("iser") == handle

    def _create_session(self, sock, handle, u, _payload):
        if self._is_iser(handle):
            raise _Refused(errno.ENOMEM)    # iscsi_iser_session_create: "no endpoint"; the class says -ENOMEM
        return self._new_session(sock, handle, u)

    def _create_bound_session(self, sock, handle, u, _payload):
        # scsi_transport_iscsi.c iscsi_if_recv_msg: the endpoint looked up first (its
        # device gives ib_iser's Scsi_Host)
        ep = self.endpoints.get(u["ep_handle"])
        if ep is None or ep.gone:
            raise _Refused(errno.EINVAL)
        return self._new_session(sock, handle, u)

    def _new_session(self, sock, handle, u):
        # libiscsi.c iscsi_session_setup: 0 means the default; fewer than 16 cannot hold the
        # mgmt tasks (create fails, iscsi_if_create_session says -ENOMEM); at most 4096, a power of two
        cmds = u["cmds_max"] or 128
        if cmds < 16:
            raise _Refused(errno.ENOMEM)
        cmds = 1 << (min(cmds, 4096).bit_length() - 1)
        self._next_sid += 1
        sid, host = self._next_sid, self._next_host
        self._next_host += 1
        hdir = os.path.join("devices", "platform", f"host{host}")
        self._write(self._mkdev(os.path.join(hdir, "scsi_host", f"host{host}"), "scsi_host", f"host{host}"),
                    scan="", state="running", proc_name=self._proc_name(handle), can_queue=cmds - 15,
                    cmd_per_lun=u["queue_depth"])
        self._write(self._mkdev(os.path.join(hdir, "iscsi_host", f"host{host}"), "iscsi_host", f"host{host}"),
                    netdev="(null)", hwaddress="(null)", ipaddress="(null)", initiatorname="(null)")
        sdir = self._mkdev(os.path.join(hdir, f"session{sid}", "iscsi_session", f"session{sid}"),
                           "iscsi_session", f"session{sid}")
        os.symlink(os.path.join("..", "..", "..", f"session{sid}"), self.path(sdir, "device"))
        s = _Session(sid, host, handle, sdir, cmdsn=u["initial_cmdsn"], cmds_max=cmds)
        self.sessions[sid] = s
        # iscsi_alloc_session / iscsi_add_session: what the class shows before any SET_PARAM
        self._write(sdir, state=s.state, target_state=s.target_state, creator=sock.portid, target_id=0,
                    recovery_tmo=120, **{a: "(null)" if p in STRING_PARAMS else 0 for p, a in SESSION_ATTRS.items()})
        self._multicast(message(KEv.CREATE_SESSION, handle=handle, r_kind=KEv.CREATE_SESSION,
                                r={"sid": sid, "host_no": host}))
        return {"sid": sid, "host_no": host}

    def _create_conn(self, _sock, _handle, u, _payload):
        s = self._session(u["sid"])
        cid = u["cid"]
        if cid in s.conns:
            raise _Refused(errno.ENOMEM)    # iscsi_if_create_conn: "can't create connection"
        name = f"connection{s.sid}:{cid}"
        cdir = self._mkdev(os.path.join(self._host_dir(s), f"session{s.sid}", name, "iscsi_connection", name),
                           "iscsi_connection", name)
        c = s.conns[cid] = _Conn(s.sid, cid, cdir)
        self._write(cdir, state=c.state,
                    **{a: "(null)" if p in STRING_PARAMS else 0 for p, a in CONN_ATTRS.items()})
        return {"sid": s.sid, "cid": cid}

    def _proc_name(self, handle: int) -> str:
        return next(TRANSPORTS[n][2] for n, h in self.transports.items() if h == handle)

    def _bind_conn(self, _sock, handle, u, _payload):
        c = self._conn(u["sid"], u["cid"])
        if c.cleanup:
            return _Refused(errno.ENOTCONN)
        if self._is_iser(handle):
            return self._bind_endpoint(c, u["transport_eph"])
        fd = u["transport_eph"]
        # iscsi_tcp.c iscsi_sw_tcp_conn_bind: sockfd_lookup in the caller's fd table
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                return _Refused(errno.EEXIST)
            sock = socket.socket(fileno=os.dup(fd))
        except OSError:
            return _Refused(errno.EEXIST)
        if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
            sock.close()
            return _Refused(errno.EINVAL)
        self._release(c)
        sock.settimeout(15)                 # sk_sndtimeo = 15 s
        c.sock = sock
        c.reader = PduReader(max_data_segment=LOGIN_MAX_DATA_SEGMENT)
        c.state = "bound"
        peer, local = sock.getpeername(), sock.getsockname()
        self._write(c.dir, state=c.state, address=peer[0], port=peer[1], local_port=local[1])
        self._write(self._host_dir_of(c.sid, "iscsi_host"), ipaddress=local[0])
        self._selector.register(sock, selectors.EVENT_READ, c)
        return {"retcode": 0}

    def _bind_endpoint(self, c: _Conn, handle: int):
        """iscsi_iser_conn_bind: the endpoint by its handle (retcode -EINVAL: "can't bind
        eph"); the connection now reads and writes through it."""
        ep = self.endpoints.get(handle)
        if ep is None or ep.gone or not ep.up:
            return _Refused(errno.EINVAL)
        self._release(c)
        c.ep, ep.conn = ep, c
        c.sock = ep.sock
        c.reader = PduReader(max_data_segment=LOGIN_MAX_DATA_SEGMENT)
        c.state = "bound"
        peer = ep.sock.getpeername()
        self._write(c.dir, state=c.state, address=peer[0], port=peer[1])
        self._selector.register(ep.sock, selectors.EVENT_READ, c)
        return {"retcode": 0}

    # ---- ib_iser's endpoints -----------------------------------------------
    def _ep_connect(self, _sock, _handle, _u, payload):
        try:
            address = parse_sockaddr(payload)
        except ValueError:
            raise _Refused(errno.EINVAL) from None
        ep_id = next(i for i in range(1, len(self.endpoints) + 2) if i not in self.endpoints)
        sock = socket.socket(socket.AF_INET6 if ":" in address[0] else socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        err = sock.connect_ex(address)
        name = f"ep-{ep_id}"
        edir = self._mkdev(os.path.join("devices", "virtual", "iscsi_endpoint", name), "iscsi_endpoint", name)
        self._write(edir, handle=ep_id)
        ep = self.endpoints[ep_id] = _Endpoint(ep_id, sock, edir)
        if err not in (0, errno.EINPROGRESS):
            ep.error = err
        ep.up = err == 0
        return {"handle": ep_id}

    def _ep_poll(self, _sock, _handle, u, _payload):
        ep = self.endpoints.get(u["ep_handle"])
        if ep is None or ep.gone:
            raise _Refused(errno.EINVAL)     # iscsi_if_transport_ep: no such endpoint
        if not ep.up and not ep.error:
            # iser_connected_handler or an RDMA CM error, within the poll's timeout (the
            # kernel's mutex held meanwhile, as iscsi_if_rx holds it)
            _r, writable, _x = select.select([], [ep.sock], [], u["timeout_ms"] / 1000)
            if writable:
                ep.error = ep.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                ep.up = not ep.error
        if ep.error:
            return _Refused(1)               # iscsi_iser_ep_poll: -1 once the attempt failed
        return {"retcode": int(ep.up)}

    def _ep_disconnect(self, _sock, _handle, u, _payload):
        # iscsi_if_ep_disconnect: a bound endpoint is first taken from its connection
        ep = self.endpoints.get(u["ep_handle"])
        if ep is None:
            raise _Refused(errno.EINVAL)
        if ep.conn is not None:
            self._release(ep.conn)
        self._drop_endpoint(ep, held=False)
        return None

    def _drop_endpoint(self, ep: _Endpoint, held: bool) -> None:
        """iscsi_iser_ep_disconnect → iscsi_destroy_endpoint: the connection closed and the
        sysfs entry gone; `held`: the kernel's cleanup still holds the handle, until
        userspace's EP_DISCONNECT lets it go."""
        if not ep.gone:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(ep.sock)
            with contextlib.suppress(OSError):
                ep.sock.shutdown(socket.SHUT_RDWR)
            ep.sock.close()
            name = f"ep-{ep.id}"
            self._rmdev(ep.dir, "iscsi_endpoint", name)
            ep.gone = True
        if not held:
            self.endpoints.pop(ep.id, None)

    def _set_param(self, _sock, _handle, u, payload):
        # scsi_transport_iscsi.c iscsi_if_set_param
        s = self._session(u["sid"])
        c = self._conn(u["sid"], u["cid"])
        if u["len"] > len(payload) or u["len"] > 4096:
            raise _Refused(errno.EINVAL)
        value = payload[:u["len"]].split(b"\0", 1)[0].decode("latin-1")
        param = u["param"]
        if param == Param.SESS_RECOVERY_TMO:     # the class's own, in any conn state
            s.params[param] = value
            # iscsi_priv_session_attr_show: -1 (wait forever) reads back as "off"
            tmo = int(value)
            self._write(s.dir, recovery_tmo="off" if tmo == -1 else tmo)
            return None
        if c.state not in ("bound", "up"):
            raise _Refused(errno.ENOTCONN)
        if param not in ACCEPTED_PARAMS:
            raise _Refused(errno.ENOSYS)
        if param in SESSION_ATTRS:
            s.params[param] = value
            self._write(s.dir, **{SESSION_ATTRS[param]: value})
        else:
            c.params[param] = value
            if param in CONN_ATTRS:
                self._write(c.dir, **{CONN_ATTRS[param]: value})
        if param == Param.EXP_STATSN:
            c.exp_statsn = int(value)
        elif param == Param.HDRDGST_EN:
            c.header_digest = value == "1"
        elif param == Param.DATADGST_EN:
            c.data_digest = value == "1"
        return None

    def _set_host_param(self, _sock, _handle, u, payload):
        # scsi_transport_iscsi.c iscsi_set_host_param: the host by number, or -ENODEV
        hosts = {s.host_no: s for s in self.sessions.values()}
        s = hosts.get(u["host_no"])
        if s is None:
            raise _Refused(errno.ENODEV)
        if u["param"] not in HOST_ATTRS:
            raise _Refused(errno.ENOSYS)
        value = payload[:u["len"]].split(b"\0", 1)[0].decode("latin-1")
        self._write(self._host_dir_of(s.sid, "iscsi_host"), **{HOST_ATTRS[u["param"]]: value})
        return None

    def _start_conn(self, _sock, _handle, u, _payload):
        s = self._session(u["sid"])
        c = self._conn(u["sid"], u["cid"])
        if c.cleanup:
            return _Refused(errno.ENOTCONN)
        # libiscsi.c iscsi_conn_start
        p = {**s.params, **c.params}
        if (p.get(Param.IMM_DATA_EN) == "1" or p.get(Param.INITIAL_R2T_EN) == "0") and \
                int(p.get(Param.FIRST_BURST, 0)) > int(p.get(Param.MAX_BURST, 262144)):
            return _Refused(errno.EINVAL)
        if s.recovered:
            s.age = (s.age + 1) & 0xF        # the ITT's age bits: tasks of the dead conn are told apart
            s.recovered = False
        if c.reader is not None:
            c.reader.max_data_segment = int(c.params.get(Param.MAX_RECV_DLENGTH, LOGIN_MAX_DATA_SEGMENT))
            c.reader.header_digest, c.reader.data_digest = c.header_digest, c.data_digest
        c.state = "up"
        s.state = "LOGGED_IN"                # iscsi_unblock_session
        self._write(c.dir, state=c.state)
        self._write(s.dir, state=s.state)
        return {"retcode": 0}

    def _stop_conn(self, _sock, _handle, u, _payload):
        # scsi_transport_iscsi.c iscsi_if_stop_conn: not subject to the CLEANUP check
        c = self._conn(u["sid"], u["cid"])
        flag = u["flag"]
        if c.ep is not None:
            # 6.1: "iscsid may not know about the ep like when iscsid is restarted": a
            # bound endpoint is disconnected here (iscsi_if_disconnect_bound_ep)
            ep = c.ep
            self._release(c)
            self._drop_endpoint(ep, held=False)
        if flag == StopFlag.TERM:
            self._stop(c, StopFlag.TERM)
        elif flag == StopFlag.RECOVER:
            if not c.cleanup:
                self._stop(c, StopFlag.RECOVER)
            # else the kernel's own cleanup already stopped it (flush_work); either way
            # the flag is cleared, and BIND_CONN works again (open-iscsi #387)
            c.cleanup = False
        # other flags: iscsi_stop_conn logs "invalid stop flag" and the reply is success
        return None

    def _stop(self, c: _Conn, flag: StopFlag) -> None:
        """iscsi_stop_conn → iscsi_sw_tcp_conn_stop: the socket released; RECOVER blocks the session."""
        s = self.sessions[c.sid]
        if c.ep is not None:
            # a connection error's cleanup work (iscsi_cleanup_conn_work_fn): the endpoint
            # disconnected, its handle held for userspace's EP_DISCONNECT
            ep = c.ep
            self._release(c)
            self._drop_endpoint(ep, held=True)
        self._release(c)
        if flag == StopFlag.RECOVER:
            c.state = "failed"
            s.state = "FAILED"               # iscsi_block_session
            s.recovered = True
            self._write(s.dir, state=s.state)
        else:
            c.state = "down"
        self._write(c.dir, state=c.state)

    def _release(self, c: _Conn) -> None:
        """iscsi_sw_tcp_release_conn: our reference to the socket dropped (a FIN to the target
        when it was the last); shut down first so a read in flight ends."""
        if c.sock is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(c.sock)
        if c.ep is not None:
            # iser: the socket is the endpoint's; the connection only lets go of it
            c.ep.conn, c.ep = None, None
            c.sock, c.reader = None, None
            return
        with contextlib.suppress(OSError):
            c.sock.shutdown(socket.SHUT_RDWR)
        c.sock.close()
        c.sock = None
        c.reader = None

    def _destroy_conn(self, _sock, _handle, u, _payload):
        c = self._conn(u["sid"], u["cid"])
        s = self.sessions[c.sid]
        self._release(c)                     # iscsi_sw_tcp_conn_destroy
        del s.conns[c.cid]
        name = f"connection{c.sid}:{c.cid}"
        self._rmdev(os.path.join(self._host_dir(s), f"session{s.sid}", name), "iscsi_connection", name)
        return None

    def _unbind_session(self, _sock, _handle, u, _payload):
        self._unbind(self._session(u["sid"]))
        return None

    def _unbind(self, s: _Session) -> None:
        """__iscsi_unbind_session (6.1, with target_state): the SCSI target removed if it was
        scanned, one UNBIND_SESSION event; a session already unbound sends none."""
        if s.target_state not in ("ALLOCATED", "SCANNED"):
            return
        for lun in list(s.luns):
            self._remove_lun(s, lun)
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self.path(self._host_dir(s), f"session{s.sid}", f"target{s.host_no}:0:0"))
        self._multicast(message(KEv.UNBIND_SESSION, handle=s.handle, r_kind=KEv.UNBIND_SESSION,
                                r={"sid": s.sid, "host_no": s.host_no}))
        s.target_state = "UNBOUND"
        self._write(s.dir, target_state=s.target_state)

    def _destroy_session(self, _sock, _handle, u, _payload):
        s = self._session(u["sid"])
        if s.conns:
            raise _Refused(errno.EBUSY)
        # iscsi_sw_tcp_session_destroy → iscsi_remove_session (unbinds) → iscsi_free_session
        # (KEVENT_DESTROY_SESSION); iscsi_tcp's host goes with its session
        self._unbind(s)
        del self.sessions[s.sid]
        self._rmdev(os.path.join(self._host_dir(s), f"session{s.sid}"), "iscsi_session", f"session{s.sid}")
        for kind in ("scsi_host", "iscsi_host"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path("class", kind, f"host{s.host_no}"))
        shutil.rmtree(self.path(self._host_dir(s)), ignore_errors=True)
        self._multicast(message(KEv.DESTROY_SESSION, handle=s.handle, r_kind=KEv.DESTROY_SESSION,
                                r={"host_no": s.host_no, "sid": s.sid}))
        return None

    def _send_pdu(self, _sock, _handle, u, payload):
        # scsi_transport_iscsi.c: the sizes bounded by what was sent
        if u["hdr_size"] > len(payload) or u["data_size"] > len(payload) - u["hdr_size"]:
            raise _Refused(errno.EINVAL)
        s = self._session(u["sid"])
        c = self._conn(u["sid"], u["cid"])
        if c.cleanup or c.sock is None:
            return _Refused(errno.ENOTCONN)
        header, data = payload[:u["hdr_size"]], payload[u["hdr_size"]:u["hdr_size"] + u["data_size"]]
        try:
            pdu = decode_one(header + data, accept=INITIATOR_OPCODES, max_data_segment=(1 << 24) - 1)
        except ProtocolError:
            return _Refused(errno.EINVAL)
        login_or_text = isinstance(pdu, (LoginRequest, TextRequest))
        # libiscsi.c __iscsi_conn_send_pdu: one login buffer of 8192 bytes; other mgmt PDUs
        # only on a logged-in session (the task is not made: iscsi_conn_send_pdu says -EPERM)
        if (login_or_text and len(pdu.data) > LOGIN_MAX_DATA_SEGMENT) or \
                (not login_or_text and s.state != "LOGGED_IN"):
            return _Refused(errno.EPERM)
        s.tag = (s.tag + 1) % s.cmds_max
        stamp = {"cmdsn": s.cmdsn}
        if pdu.itt != RESERVED_TAG:
            stamp["itt"] = (s.age << 28) | s.tag
        if not login_or_text:
            stamp["expstatsn"] = c.exp_statsn
        pdu = dataclasses.replace(pdu, **{k: v for k, v in stamp.items() if k in pdu.header()})
        if not getattr(pdu, "immediate", True) and not login_or_text:
            s.cmdsn = (s.cmdsn + 1) & 0xFFFFFFFF
        self._transmit(c, pdu)
        return {"retcode": 0}

    def _transmit(self, c: _Conn, pdu) -> None:
        wire = pdu.encode(header_digest=c.header_digest and c.state == "up",
                          data_digest=c.data_digest and c.state == "up")
        try:
            c.sock.sendall(wire)
        except OSError:
            # the xmit work fails later in the kernel; the request itself was accepted
            self._conn_failure(c, ConnErr.XMIT_FAILED)
            return
        c.counters["txdata_octets"] += len(wire)
        if isinstance(pdu, NopOut):
            c.counters["noptx_pdus"] += 1
        elif isinstance(pdu, LogoutRequest):
            c.counters["logout_pdus"] += 1
        elif isinstance(pdu, LoginRequest):
            c.counters["login_pdus"] += 1

    def _get_stats(self, _sock, handle, u, _payload):
        # scsi_transport_iscsi.c iscsi_if_get_stats: -EEXIST without the conn; the result
        # multicast to the group (a refusal, and nobody listening, come back as IF_ERROR)
        s = self.sessions.get(u["sid"])
        c = s.conns.get(u["cid"]) if s else None
        if c is None:
            raise _Refused(errno.EEXIST)
        payload = encode_stats(c.counters, [(name, 0) for name in TCP_CUSTOM_STATS])
        err = self._multicast(message(Ev.GET_STATS, handle=handle, u_kind=Ev.GET_STATS, u=u, payload=payload))
        if err:
            raise _Refused(err)
        return None

    # ---- the socket side ---------------------------------------------------
    def _rx_loop(self) -> None:
        """iscsi_tcp's data_ready callback: what the target sends on bound sockets."""
        while not self._stopping.is_set():
            try:
                ready = self._selector.select(0.05)
            except (OSError, ValueError):
                return
            for key, _events in ready:
                c: _Conn = key.data
                with self._lock:
                    if c.sock is not key.fileobj:
                        continue
                    try:
                        chunk = c.sock.recv(65536)
                    except (BlockingIOError, InterruptedError, TimeoutError):
                        continue
                    except OSError:
                        chunk = b""
                    self._received(c, chunk)

    def _received(self, c: _Conn, chunk: bytes) -> None:
        if not chunk:
            # iscsi_sw_tcp_state_change: TCP_CLOSE / CLOSE_WAIT
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(c.sock)
            self._conn_failure(c, ConnErr.CONN_FAILED if c.ep is not None else ConnErr.TCP_CONN_CLOSE)
            return
        c.counters["rxdata_octets"] += len(chunk)
        c.reader.feed(chunk)
        while c.reader is not None:
            try:
                pdu = c.reader.next_pdu()
            except ProtocolError:
                # a bad PDU, or a login response over the 8192-byte buffer (libiscsi_tcp.c)
                with contextlib.suppress(KeyError, ValueError):
                    self._selector.unregister(c.sock)
                self._conn_failure(c, ConnErr.PROTO)
                return
            if pdu is None:
                return
            self._complete(c, pdu)

    def _complete(self, c: _Conn, pdu) -> None:
        """libiscsi.c __iscsi_complete_pdu, for what the fake carries: no SCSI data path."""
        s = self.sessions[c.sid]
        if getattr(pdu, "statsn", None) is not None:
            c.exp_statsn = (pdu.statsn + 1) & 0xFFFFFFFF
            self._write(c.dir, exp_statsn=c.exp_statsn)
        if isinstance(pdu, NopIn):
            c.counters["noprx_pdus"] += 1
            if pdu.ttt != RESERVED_TAG and c.state == "up":    # the target pings: the kernel answers
                self._transmit(c, NopOut(immediate=True, itt=RESERVED_TAG, ttt=pdu.ttt, lun=pdu.lun,
                                         cmdsn=s.cmdsn, expstatsn=c.exp_statsn, data=pdu.data))
            return
        if isinstance(pdu, LogoutResponse):
            c.counters["logoutrsp_pdus"] += 1
        if isinstance(pdu, TO_USERSPACE):
            self._multicast(message(KEv.RECV_PDU, handle=s.handle, r_kind=KEv.RECV_PDU,
                                    r={"sid": c.sid, "cid": c.cid, "recv_handle": 0}, payload=pdu.encode()))

    def _conn_failure(self, c: _Conn, error: int) -> None:
        """libiscsi.c iscsi_conn_failure → iscsi_conn_error_event: once per failure; a bound or
        started conn gets the kernel's own cleanup (stop with RECOVER) and the CLEANUP flag."""
        s = self.sessions.get(c.sid)
        if s is None or s.state == "FAILED":
            return
        s.state = "FAILED"
        if c.state in ("bound", "up") and not c.cleanup:
            c.cleanup = True
            self._stop(c, StopFlag.RECOVER)
        self._write(s.dir, state=s.state)
        self._multicast(message(KEv.CONN_ERROR, handle=s.handle, r_kind=KEv.CONN_ERROR,
                                r={"sid": c.sid, "cid": c.cid, "error": int(error)}))

    # ---- test hooks --------------------------------------------------------
    def conn_error(self, sid: int, error: int = ConnErr.TCP_CONN_CLOSE, cid: int = 0) -> None:
        """The connection dies as the kernel would see it: session FAILED, socket released, CONN_ERROR."""
        with self._lock:
            self._conn_failure(self.sessions[sid].conns[cid], error)

    def add_lun(self, sid: int, lun: int = 0, block: str = "sda") -> None:
        """What a scan of the session's host would find: H:0:0:L with its disk."""
        with self._lock:
            s = self.sessions[sid]
            hctl = f"{s.host_no}:0:0:{lun}"
            udir = os.path.join(self._host_dir(s), f"session{sid}", f"target{s.host_no}:0:0", hctl)
            os.makedirs(self.path(udir, "block", block), exist_ok=True)
            self._write(udir, state="running")
            link = self.path("bus", "scsi", "devices", hctl)
            if not os.path.islink(link):
                os.symlink(os.path.join("..", "..", "..", udir), link)
            s.luns[lun] = hctl
            s.target_state = "SCANNED"
            self._write(s.dir, target_state=s.target_state)

    def _remove_lun(self, s: _Session, lun: int) -> None:
        hctl = s.luns.pop(lun)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path("bus", "scsi", "devices", hctl))

    def reload_module(self, name: str = "tcp") -> int:
        """The transport's module reloaded: a new handle; the old one is refused with -EINVAL."""
        with self._lock:
            self.transports[name] += 0x1000
            self._write(os.path.join("class", "iscsi_transport", name), handle=self.transports[name])
            return self.transports[name]

    def refuse(self, kind: Ev, sid: int, err: int = errno.EBUSY) -> None:
        """The next `kind` request for session `sid` is refused with -err (IF_ERROR)."""
        with self._lock:
            self._refusals[(kind, sid)] = err

    @contextlib.contextmanager
    def busy(self):
        """The kernel's rx_queue_mutex held, as by another process's long request: every
        datagram sent meanwhile waits (counted in `arrived`) and is handled after."""
        with self._lock:
            yield

    def kinds(self) -> list[Ev | int]:
        """The requests received so far, by kind."""
        with self._lock:
            return [k for k, _ in self.requests]

    # ---- the tree ----------------------------------------------------------
    def path(self, *parts) -> str:
        return os.path.join(self.root, *parts)

    def _host_dir(self, s: _Session) -> str:
        return os.path.join("devices", "platform", f"host{s.host_no}")

    def _host_dir_of(self, sid: int, kind: str) -> str:
        s = self.sessions[sid]
        return os.path.join(self._host_dir(s), kind, f"host{s.host_no}")

    def _mkdev(self, rel: str, kind: str, name: str) -> str:
        """A device directory and its /sys/class/KIND/NAME link (relative, as sysfs's are)."""
        os.makedirs(self.path(rel), exist_ok=True)
        os.makedirs(self.path("class", kind), exist_ok=True)
        link = self.path("class", kind, name)
        if not os.path.islink(link):
            os.symlink(os.path.join("..", "..", rel), link)
        return rel

    def _rmdev(self, rel: str, kind: str, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path("class", kind, name))
        shutil.rmtree(self.path(rel), ignore_errors=True)

    def _write(self, rel: str, **attrs) -> None:
        """Attribute files, each replaced whole: a reader never sees half a value."""
        base = self.path(rel)
        for name, value in attrs.items():
            tmp = os.path.join(base, f".{name}.tmp")
            with open(tmp, "w") as f:
                f.write(f"{value}\n")
            os.replace(tmp, os.path.join(base, name))

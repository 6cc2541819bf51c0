"""NETLINK_ISCSI: `struct iscsi_uevent` declared once as data, and the socket that carries it.

The C layout (include/scsi/iscsi_if.h, x86_64, sizeof 56, all host-endian):

    struct iscsi_uevent {
        uint32_t type;              /* k/u events type          @0  */
        uint32_t iferror;           /* carries interface errors @4  */
        uint64_t transport_handle;  /*                          @8  */
        union { ... } u;            /* requests, 24 bytes       @16 */
        union { ... } r;            /* results/events, 16 bytes @40 */
    } __attribute__ ((aligned (sizeof(uint64_t))));

Each union member is one row of REQUEST_FIELDS / RESULT_FIELDS below; a
message layout is nlmsghdr, the header, one `u` member and one `r` member,
each padded to its union's size, compiled once per (u, r) pair into a
struct.Struct: the tables are the only place the layout is written. The
tests check every compiled layout byte for byte against pyroute2's `nlmsg`
built from the same tables. We used that class at run time first; measured
in the lab guest it cost ~2 ms of CPU per message (a login sends 30) and its
package import 25 MB of RSS and half of the daemon's start-up, while a
Struct packs in microseconds. pyroute2's NetlinkSocket does not fit either:
it correlates replies by sequence number and parses attribute TLVs, but the
iSCSI family echoes no sequence, sends events with nlmsg_type 0, and carries
a fixed C struct plus raw trailing bytes. So the socket is a plain AF_NETLINK
one, one request (or one batch) in flight, with events that arrive before a
reply set aside for the consumer.
"""

from __future__ import annotations

import collections
import errno
import os
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple

from .constants import GROUP_ISCSID, NETLINK_ISCSI, Ev, HostParam, KEv, Param, StopFlag

UEVENT_SIZE = 56
U_OFFSET, U_SIZE = 16, 24
R_OFFSET, R_SIZE = 40, 16
NLMSG_HDRLEN = 16
# A RECV_PDU event carries at most the kernel's 8192-byte login buffer plus a BHS.
RECV_BUFFER = 64 * 1024

# struct nlmsghdr, then the uevent's own head
NLMSGHDR = (("nlmsg_len", "I"), ("nlmsg_type", "H"), ("nlmsg_flags", "H"), ("nlmsg_seq", "I"), ("nlmsg_pid", "I"))
HEAD = (("type", "I"), ("iferror", "i"), ("transport_handle", "Q"))

# union u: one row per request kind (the member name in the C header in the comment)
REQUEST_FIELDS: dict[Ev, tuple[tuple[str, str], ...]] = {
    Ev.CREATE_SESSION: (("initial_cmdsn", "I"), ("cmds_max", "H"), ("queue_depth", "H")),     # c_session
    Ev.CREATE_BOUND_SESSION: (("ep_handle", "Q"), ("initial_cmdsn", "I"), ("cmds_max", "H"),
                              ("queue_depth", "H")),                                          # c_bound_session
    Ev.DESTROY_SESSION: (("sid", "I"),),                                                      # d_session
    Ev.DESTROY_SESSION_ASYNC: (("sid", "I"),),
    Ev.UNBIND_SESSION: (("sid", "I"),),
    Ev.CREATE_CONN: (("sid", "I"), ("cid", "I")),                                             # c_conn
    Ev.BIND_CONN: (("sid", "I"), ("cid", "I"), ("transport_eph", "Q"), ("is_leading", "I")),  # b_conn
    Ev.DESTROY_CONN: (("sid", "I"), ("cid", "I")),                                            # d_conn
    Ev.SEND_PDU: (("sid", "I"), ("cid", "I"), ("hdr_size", "I"), ("data_size", "I")),         # send_pdu
    Ev.SET_PARAM: (("sid", "I"), ("cid", "I"), ("param", "I"), ("len", "I")),                 # set_param
    Ev.START_CONN: (("sid", "I"), ("cid", "I")),                                              # start_conn
    Ev.STOP_CONN: (("sid", "I"), ("cid", "I"), ("conn_handle", "Q"), ("flag", "I")),          # stop_conn
    Ev.GET_STATS: (("sid", "I"), ("cid", "I")),                                               # get_stats
    Ev.TRANSPORT_EP_CONNECT: (("non_blocking", "I"),),                                        # ep_connect
    Ev.TRANSPORT_EP_CONNECT_THROUGH_HOST: (("host_no", "I"), ("non_blocking", "I")),
    Ev.TRANSPORT_EP_POLL: (("ep_handle", "Q"), ("timeout_ms", "I")),                          # ep_poll
    Ev.TRANSPORT_EP_DISCONNECT: (("ep_handle", "Q"),),                                        # ep_disconnect
    # tgt_dscvr.type, renamed: one table cannot hold two fields named `type`
    Ev.TGT_DSCVR: (("dscvr_type", "I"), ("host_no", "I"), ("enable", "I")),
    Ev.SET_HOST_PARAM: (("host_no", "I"), ("param", "I"), ("len", "I")),                      # set_host_param
    Ev.GET_HOST_STATS: (("host_no", "I"),),
}

RETCODE = (("retcode", "i"),)
# union r: what a successful reply or an event carries
RESULT_FIELDS: dict[int, tuple[tuple[str, str], ...]] = {
    Ev.CREATE_SESSION: (("sid", "I"), ("host_no", "I")),                                      # c_session_ret
    Ev.CREATE_BOUND_SESSION: (("sid", "I"), ("host_no", "I")),
    Ev.CREATE_CONN: (("sid", "I"), ("cid", "I")),                                             # c_conn_ret
    Ev.BIND_CONN: RETCODE,
    Ev.START_CONN: RETCODE,
    Ev.SEND_PDU: RETCODE,
    Ev.TRANSPORT_EP_POLL: RETCODE,
    Ev.TRANSPORT_EP_CONNECT: (("handle", "Q"),),                                              # ep_connect_ret
    Ev.TRANSPORT_EP_CONNECT_THROUGH_HOST: (("handle", "Q"),),
    KEv.RECV_PDU: (("sid", "I"), ("cid", "I"), ("recv_handle", "Q")),                         # recv_req
    KEv.CONN_ERROR: (("sid", "I"), ("cid", "I"), ("error", "I")),                             # connerror
    KEv.CONN_LOGIN_STATE: (("sid", "I"), ("cid", "I"), ("state", "I")),                       # conn_login
    KEv.DESTROY_SESSION: (("host_no", "I"), ("sid", "I")),                                    # d_session (sic: host_no first)
    KEv.UNBIND_SESSION: (("sid", "I"), ("host_no", "I")),                                     # unbind_session
    KEv.CREATE_SESSION: (("sid", "I"), ("host_no", "I")),                                     # c_session_ret
    KEv.PATH_REQ: (("host_no", "I"),),                                                        # req_path
    KEv.IF_DOWN: (("host_no", "I"),),                                                         # notify_if_down
    KEv.HOST_EVENT: (("host_no", "I"), ("data_size", "I"), ("code", "I")),                    # host_event
    KEv.PING_COMP: (("host_no", "I"), ("status", "I"), ("pid", "I"), ("data_size", "I")),    # ping_comp
}

# struct iscsi_stats (facts §1.8), what follows the uevent in a GET_STATS result; then
# custom_length entries of {char desc[64]; u64 value}. The names are the C ones, which
# iscsiadm prints.
STATS_FIELDS = (
    ("txdata_octets", "Q"), ("rxdata_octets", "Q"),
    ("noptx_pdus", "I"), ("scsicmd_pdus", "I"), ("tmfcmd_pdus", "I"), ("login_pdus", "I"),
    ("text_pdus", "I"), ("dataout_pdus", "I"), ("logout_pdus", "I"), ("snack_pdus", "I"),
    ("noprx_pdus", "I"), ("scsirsp_pdus", "I"), ("tmfrsp_pdus", "I"), ("textrsp_pdus", "I"),
    ("datain_pdus", "I"), ("logoutrsp_pdus", "I"), ("r2t_pdus", "I"), ("async_pdus", "I"),
    ("rjt_pdus", "I"), ("digest_err", "I"), ("timeout_err", "I"), ("custom_length", "I"),
)
STATS_CUSTOM_FIELDS = (("desc", "64s"), ("value", "Q"))
MAX_STATS_CUSTOM = 128


def _layout(rows) -> struct.Struct:
    return struct.Struct("<" + "".join(fmt for _, fmt in rows))


# What follows the uevent in TRANSPORT_EP_CONNECT: the portal as a struct sockaddr_in or
# sockaddr_in6 (family host-endian, port and address in network order), in a buffer of
# sizeof(struct sockaddr_storage) as iscsid sends it (open-iscsi netlink.c ktransport_ep_connect;
# scsi_transport_iscsi.c iscsi_if_ep_connect reads it as the struct sockaddr after the uevent).
SOCKADDR_STORAGE = 128
SOCKADDR_IN = (("family", "H"), ("port", ">H"), ("addr", "4s"))                        # <netinet/in.h>
SOCKADDR_IN6 = (("family", "H"), ("port", ">H"), ("flowinfo", ">I"), ("addr", "16s"), ("scope_id", "I"))


def _mixed(rows) -> tuple[struct.Struct, ...]:
    # struct has one byte order per format; sockaddr mixes two, so one Struct per field
    return tuple(struct.Struct(fmt if fmt[0] in "<>" else "<" + fmt) for _, fmt in rows)


_SOCKADDR = {socket.AF_INET: (SOCKADDR_IN, _mixed(SOCKADDR_IN)),
             socket.AF_INET6: (SOCKADDR_IN6, _mixed(SOCKADDR_IN6))}


def sockaddr(host: str, port: int, scope_id: int = 0) -> bytes:
    """The portal `host` (a numeric IPv4 or IPv6 address) and `port` as EP_CONNECT's payload."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    rows, codecs = _SOCKADDR[family]
    values = {"family": family, "port": port, "addr": socket.inet_pton(family, host),
              "flowinfo": 0, "scope_id": scope_id}
    packed = b"".join(c.pack(values[name]) for (name, _), c in zip(rows, codecs))
    return packed.ljust(SOCKADDR_STORAGE, b"\0")


def parse_sockaddr(data: bytes) -> tuple[str, int]:
    """sockaddr() read back: (host, port); ValueError for a family it does not know."""
    family = int.from_bytes(data[:2], "little")
    if family not in _SOCKADDR:
        raise ValueError(f"sockaddr family {family}")
    rows, codecs = _SOCKADDR[family]
    values, off = {}, 0
    for (name, _), c in zip(rows, codecs):
        values[name] = c.unpack_from(data, off)[0]
        off += c.size
    return socket.inet_ntop(family, values["addr"]), values["port"]


_STATS, _STATS_CUSTOM = _layout(STATS_FIELDS), _layout(STATS_CUSTOM_FIELDS)


def decode_stats(payload: bytes) -> tuple[dict, list[tuple[str, int]]]:
    """The counters of a GET_STATS result and its transport's custom ones, bounds-checked."""
    if len(payload) < _STATS.size:
        raise ValueError(f"short GET_STATS payload ({len(payload)} bytes)")
    stats = dict(zip((n for n, _ in STATS_FIELDS), _STATS.unpack_from(payload)))
    count = min(stats.pop("custom_length"), MAX_STATS_CUSTOM)
    custom = []
    for i in range(count):
        off = _STATS.size + i * _STATS_CUSTOM.size
        if off + _STATS_CUSTOM.size > len(payload):
            break
        desc, value = _STATS_CUSTOM.unpack_from(payload, off)
        custom.append((desc.split(b"\0", 1)[0].decode(errors="replace"), value))
    return stats, custom


# Replies whose success is judged by the driver's r.retcode, not only by IF_ERROR.
RETCODE_REPLIES = frozenset(k for k, v in RESULT_FIELDS.items() if v is RETCODE)


def _padded(rows: tuple[tuple[str, str], ...], size: int, tag: str) -> tuple[tuple[str, str], ...]:
    used = struct.calcsize("=" + "".join(fmt for _, fmt in rows))
    if used > size:
        raise AssertionError(f"union member {rows} is larger than {size} bytes")
    return rows + (((f"__pad_{tag}", f"{size - used}x"),) if used < size else ())


class Layout(NamedTuple):
    rows: tuple[tuple[str, str], ...]   # the declaration, pads included
    codec: struct.Struct
    names: tuple[str, ...]              # the values the codec packs, in order
    # derived once, so a message costs one pack or unpack (a login sends ~30)
    template: tuple[int, ...]           # every value zero, but the header's message type
    union_index: dict[str, int]         # a union field's place among `names`


_HEAD_COUNT = len(NLMSGHDR) + len(HEAD)
_NAMES_OF_HEAD = tuple(n for n, _ in NLMSGHDR + HEAD)
_LEN, _TYPE, _PID, _EV_TYPE, _IFERROR, _HANDLE = (
    _NAMES_OF_HEAD.index(n) for n in ("nlmsg_len", "nlmsg_type", "nlmsg_pid", "type", "iferror", "transport_handle"))


@lru_cache(maxsize=None)
def layout(u_kind: int | None, r_kind: int | None) -> Layout:
    """nlmsghdr + uevent with `u_kind`'s member in union u and `r_kind`'s in union r."""
    u = REQUEST_FIELDS.get(u_kind, ()) if u_kind is not None else ()
    r = RESULT_FIELDS.get(r_kind, ()) if r_kind is not None else ()
    rows = NLMSGHDR + HEAD + _padded(u, U_SIZE, "u") + _padded(r, R_SIZE, "r")
    names = tuple(n for n, _ in rows if not n.startswith("__"))
    assert names[:_HEAD_COUNT] == _NAMES_OF_HEAD
    template = [0] * len(names)
    if u_kind is not None:
        template[_TYPE] = template[_EV_TYPE] = int(u_kind)
    return Layout(rows, _layout(rows), names, tuple(template),
                  {n: i for i, n in enumerate(names) if i >= _HEAD_COUNT})


@dataclass
class Uevent:
    """A decoded message: the header, the union fields of its kind, and what trails the struct."""
    type: int
    iferror: int = 0
    transport_handle: int = 0
    fields: dict = field(default_factory=dict)
    payload: bytes = b""

    def __getitem__(self, key: str):
        return self.fields[key]

    @property
    def name(self) -> str:
        for enum_ in (Ev, KEv):
            try:
                return enum_(self.type).name
            except ValueError:
                pass
        return str(self.type)


def encode(kind: Ev, transport_handle: int = 0, payload: bytes = b"", **values) -> bytes:
    lay = layout(kind, None)
    packed = list(lay.template)
    try:
        for name, value in values.items():
            packed[lay.union_index[name]] = int(value)
    except KeyError:
        raise TypeError(f"{kind.name} has no field(s) {sorted(set(values) - set(lay.union_index))}") from None
    packed[_LEN] = lay.codec.size + len(payload)
    packed[_PID] = os.getpid()
    packed[_HANDLE] = transport_handle
    return lay.codec.pack(*packed) + payload


def _aligned(message: bytes) -> bytes:
    return message + b"\0" * (-len(message) % 4)


def decode(data: bytes, request: Ev | None = None) -> Uevent:
    """Decode one netlink message (nlmsghdr + uevent + payload)."""
    if len(data) < NLMSG_HDRLEN + UEVENT_SIZE:
        raise ValueError(f"short NETLINK_ISCSI message ({len(data)} bytes)")
    ev_type = int.from_bytes(data[NLMSG_HDRLEN:NLMSG_HDRLEN + 4], "little")
    # Replies echo the request's u union; events are known by their own type. The GET_STATS
    # result is multicast like an event, with the request's u.get_stats (sid, cid) echoed.
    u_kind = request if ev_type in (request, KEv.IF_ERROR) else (Ev.GET_STATS if ev_type == Ev.GET_STATS else None)
    r_kind = ev_type if ev_type in RESULT_FIELDS else None
    lay = layout(u_kind, r_kind)
    values = lay.codec.unpack_from(data)
    end = max(values[_LEN], NLMSG_HDRLEN + UEVENT_SIZE)
    return Uevent(type=ev_type, iferror=values[_IFERROR], transport_handle=values[_HANDLE],
                  fields=dict(zip(lay.names[_HEAD_COUNT:], values[_HEAD_COUNT:])),
                  payload=bytes(data[NLMSG_HDRLEN + UEVENT_SIZE:end]))


def split(datagram: bytes) -> list[bytes]:
    """The netlink messages in one datagram (each NLMSG-aligned to 4 bytes)."""
    out, off = [], 0
    while off + NLMSG_HDRLEN <= len(datagram):
        length = int.from_bytes(datagram[off:off + 4], "little")
        if length < NLMSG_HDRLEN or off + length > len(datagram):
            raise ValueError(f"bad nlmsg_len {length} at offset {off}")
        out.append(datagram[off:off + length])
        off += (length + 3) & ~3
    return out


class KernelError(OSError):
    """The kernel refused a request: IF_ERROR (negative errno) or a driver retcode."""

    def __init__(self, request: Ev, err: int, how: str):
        self.request = request
        # the kernel speaks negative errnos; OSError's errno is positive, as everywhere else in Python
        super().__init__(abs(err), f"{request.name} failed: {how} {-abs(err)} "
                                   f"({os.strerror(abs(err)) if err else 'unknown'})")


class Requests:
    """The requests by name, over `batch()`: what both the socket (IscsiNetlink) and a
    sender that shares one socket among many callers (initiator/kernel_requests.py) offer."""

    def batch(self, requests: list[tuple[Ev, int, bytes, dict]]) -> list[Uevent | KernelError]:
        raise NotImplementedError

    def request(self, kind: Ev, transport_handle: int = 0, payload: bytes = b"", **values) -> Uevent:
        result = self.batch([(kind, transport_handle, payload, values)])[0]
        if isinstance(result, KernelError):
            raise result
        return result

    def ep_connect(self, handle: int, host: str, port: int, non_blocking: bool = True) -> int:
        """TRANSPORT_EP_CONNECT: the transport connects to host:port in the kernel; the endpoint's handle."""
        return self.request(Ev.TRANSPORT_EP_CONNECT, handle, sockaddr(host, port),
                            non_blocking=int(non_blocking))["handle"]

    def ep_poll(self, handle: int, ep: int, timeout_ms: int) -> bool:
        """TRANSPORT_EP_POLL: True once connected, False when `timeout_ms` passed first;
        KernelError when the connect failed (the driver's negative retcode)."""
        return self.request(Ev.TRANSPORT_EP_POLL, handle, ep_handle=ep, timeout_ms=timeout_ms)["retcode"] > 0

    def ep_disconnect(self, handle: int, ep: int) -> None:
        self.request(Ev.TRANSPORT_EP_DISCONNECT, handle, ep_handle=ep)

    def create_bound_session(self, handle: int, ep: int, initial_cmdsn: int = 0, cmds_max: int = 128,
                             queue_depth: int = 32) -> tuple[int, int]:
        """CREATE_BOUND_SESSION: a session whose Scsi_Host the endpoint's device provides."""
        r = self.request(Ev.CREATE_BOUND_SESSION, handle, ep_handle=ep, initial_cmdsn=initial_cmdsn,
                         cmds_max=cmds_max, queue_depth=queue_depth)
        return r["sid"], r["host_no"]

    def create_session(self, handle: int, initial_cmdsn: int = 0, cmds_max: int = 128,
                       queue_depth: int = 32) -> tuple[int, int]:
        r = self.request(Ev.CREATE_SESSION, handle, initial_cmdsn=initial_cmdsn, cmds_max=cmds_max,
                         queue_depth=queue_depth)
        return r["sid"], r["host_no"]

    def destroy_session(self, handle: int, sid: int) -> None:
        self.request(Ev.DESTROY_SESSION, handle, sid=sid)

    def unbind_session(self, handle: int, sid: int) -> None:
        self.request(Ev.UNBIND_SESSION, handle, sid=sid)

    def create_conn(self, handle: int, sid: int, cid: int = 0) -> int:
        r = self.request(Ev.CREATE_CONN, handle, sid=sid, cid=cid)
        if r["cid"] == 0xFFFFFFFF:
            raise KernelError(Ev.CREATE_CONN, -errno.EINVAL, "kernel returned cid -1:")
        return r["cid"]

    def bind_conn(self, handle: int, sid: int, cid: int, fd: int, is_leading: bool = True) -> None:
        self.request(Ev.BIND_CONN, handle, sid=sid, cid=cid, transport_eph=fd, is_leading=int(is_leading))

    def set_param(self, handle: int, sid: int, cid: int, param: Param, value: str | int) -> None:
        data = str(value).encode() + b"\0"
        self.request(Ev.SET_PARAM, handle, data, sid=sid, cid=cid, param=int(param), len=len(data))

    def set_params(self, handle: int, sid: int, cid: int,
                   rows: list[tuple[Param, str | int]]) -> list[tuple[Param, KernelError]]:
        """Many SET_PARAMs in one datagram; the (param, error) pairs the kernel refused."""
        requests = []
        for param, value in rows:
            data = str(value).encode() + b"\0"
            requests.append((Ev.SET_PARAM, handle, data, {"sid": sid, "cid": cid, "param": int(param), "len": len(data)}))
        return [(param, r) for (param, _), r in zip(rows, self.batch(requests)) if isinstance(r, KernelError)]

    def set_host_param(self, handle: int, host_no: int, param: HostParam, value: str) -> None:
        data = str(value).encode() + b"\0"
        self.request(Ev.SET_HOST_PARAM, handle, data, host_no=host_no, param=int(param), len=len(data))

    def start_conn(self, handle: int, sid: int, cid: int = 0) -> None:
        self.request(Ev.START_CONN, handle, sid=sid, cid=cid)

    def stop_conn(self, handle: int, sid: int, cid: int = 0, flag: StopFlag = StopFlag.TERM) -> None:
        self.request(Ev.STOP_CONN, handle, sid=sid, cid=cid, flag=int(flag))

    def destroy_conn(self, handle: int, sid: int, cid: int = 0) -> None:
        self.request(Ev.DESTROY_CONN, handle, sid=sid, cid=cid)

    def send_pdu(self, handle: int, sid: int, cid: int, header: bytes, data: bytes = b"") -> None:
        kind, handle, payload, values = send_pdu_request(handle, sid, cid, header, data)
        self.request(kind, handle, payload, **values)


class IscsiNetlink(Requests):
    """The NETLINK_ISCSI socket: one request in flight; events set aside in order."""

    def __init__(self, groups: int = GROUP_ISCSID, reply_timeout: float = 30.0, sock=None):
        # `sock`: a stand-in for the AF_NETLINK socket (kernel/fake.py's, as pyroute2's IPRoute
        # takes ipmock's with use_socket); everything else here runs the same on it
        self.sock = sock if sock is not None else self._open()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        # bit 1 is group 1; joining needs CAP_NET_ADMIN
        self.sock.bind((0, 1 << (groups - 1) if groups else 0))
        self.reply_timeout = reply_timeout
        self.events: collections.deque[Uevent] = collections.deque()
        self._lock = threading.Lock()

    @staticmethod
    def _open() -> socket.socket:
        try:
            return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ISCSI)
        except OSError as e:
            if e.errno == errno.EPROTONOSUPPORT:
                raise OSError(e.errno, "NETLINK_ISCSI is not available: load scsi_transport_iscsi "
                                       "(modprobe iscsi_tcp), and run in the initial network namespace") from None
            raise

    def close(self) -> None:
        self.sock.close()

    def fileno(self) -> int:
        return self.sock.fileno()

    def __enter__(self) -> "IscsiNetlink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _recv(self, timeout: float | None) -> bytes | None:
        if timeout is not None:
            ready, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
            if not ready:
                return None
        return self.sock.recv(RECV_BUFFER)

    def batch(self, requests: list[tuple[Ev, int, bytes, dict]]) -> list[Uevent | KernelError]:
        """Several requests in one datagram; their replies (or errors) in the same order.

        The kernel (iscsi_if_rx) walks every message of a datagram in turn and
        answers each, so a session's two dozen SET_PARAMs cost one send and one
        lock hold instead of two dozen round trips. A refused request does not
        stop the ones after it: each result stands alone.
        """
        kinds = [kind for kind, *_ in requests]
        data = b"".join(_aligned(encode(kind, handle, payload, **values))
                        for kind, handle, payload, values in requests)
        results: list[Uevent | KernelError] = []
        with self._lock:
            self.sock.sendto(data, (0, 0))
            deadline = time.monotonic() + self.reply_timeout
            while len(results) < len(kinds):
                chunk = self._recv(deadline - time.monotonic())
                if chunk is None:
                    results.extend(KernelError(k, -errno.ETIMEDOUT, "no reply within the timeout:")
                                   for k in kinds[len(results):])
                    break
                for raw in split(chunk):
                    kind = kinds[len(results)] if len(results) < len(kinds) else None
                    ev = decode(raw, kind)
                    if kind is not None and ev.type == KEv.IF_ERROR:
                        results.append(KernelError(kind, ev.iferror, "kernel returned"))
                    elif kind is not None and ev.type == kind:
                        if kind in RETCODE_REPLIES and ev["retcode"] < 0:
                            results.append(KernelError(kind, ev["retcode"], "driver returned"))
                        else:
                            results.append(ev)
                    else:
                        self.events.append(ev)
        return results

    def post(self, kind: Ev, transport_handle: int = 0, payload: bytes = b"", **values) -> None:
        """Send a request whose answer arrives as an event (GET_STATS), without waiting."""
        with self._lock:
            self.sock.sendto(encode(kind, transport_handle, payload, **values), (0, 0))

    def next_event(self, timeout: float | None = 0.0) -> Uevent | None:
        """The oldest event, reading the socket for at most `timeout` seconds (None: wait)."""
        if self.events:
            return self.events.popleft()
        with self._lock:
            chunk = self._recv(timeout)
        if chunk is None:
            return None
        self.events.extend(decode(raw) for raw in split(chunk))
        return self.events.popleft() if self.events else None

def send_pdu_request(handle: int, sid: int, cid: int, header: bytes, data: bytes = b"") -> tuple[Ev, int, bytes, dict]:
    """SEND_PDU as one batch() row: the BHS, then the data padded to 4 bytes (counted in data_size, as iscsid does)."""
    padded = data + b"\0" * (-len(data) % 4)
    return Ev.SEND_PDU, handle, header + padded, {"sid": sid, "cid": cid, "hdr_size": len(header),
                                                   "data_size": len(padded)}

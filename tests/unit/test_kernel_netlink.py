"""The uevent layout against the offsets the 6.1 header gives (open-iscsi-facts §1.4)."""

import pytest

from iscsikit.kernel import netlink
from iscsikit.kernel.constants import Ev, KEv
from iscsikit.kernel.netlink import KernelError, decode, encode, split

HDR = netlink.NLMSG_HDRLEN


def _field(data, offset, size, signed=False):
    return int.from_bytes(data[HDR + offset:HDR + offset + size], "little", signed=signed)


@pytest.mark.parametrize("kind, values, offsets", [
    (Ev.CREATE_SESSION, dict(initial_cmdsn=0x11223344, cmds_max=128, queue_depth=32),
     dict(initial_cmdsn=(16, 4), cmds_max=(20, 2), queue_depth=(22, 2))),
    (Ev.CREATE_BOUND_SESSION, dict(ep_handle=0x0102030405060708, initial_cmdsn=9, cmds_max=64, queue_depth=16),
     dict(ep_handle=(16, 8), initial_cmdsn=(24, 4), cmds_max=(28, 2), queue_depth=(30, 2))),
    (Ev.BIND_CONN, dict(sid=5, cid=1, transport_eph=0xDEADBEEF01, is_leading=1),
     dict(sid=(16, 4), cid=(20, 4), transport_eph=(24, 8), is_leading=(32, 4))),
    (Ev.SEND_PDU, dict(sid=5, cid=0, hdr_size=48, data_size=8192),
     dict(sid=(16, 4), cid=(20, 4), hdr_size=(24, 4), data_size=(28, 4))),
    (Ev.SET_PARAM, dict(sid=2, cid=0, param=15, len=9), dict(sid=(16, 4), cid=(20, 4), param=(24, 4), len=(28, 4))),
    (Ev.STOP_CONN, dict(sid=2, cid=0, conn_handle=0, flag=3),
     dict(sid=(16, 4), cid=(20, 4), conn_handle=(24, 8), flag=(32, 4))),
    (Ev.TRANSPORT_EP_POLL, dict(ep_handle=77, timeout_ms=500), dict(ep_handle=(16, 8), timeout_ms=(24, 4))),
    (Ev.TGT_DSCVR, dict(dscvr_type=1, host_no=3, enable=1), dict(dscvr_type=(16, 4), host_no=(20, 4), enable=(24, 4))),
    (Ev.SET_HOST_PARAM, dict(host_no=3, param=2, len=5), dict(host_no=(16, 4), param=(20, 4), len=(24, 4))),
])
def test_request_fields_sit_at_the_c_offsets(kind, values, offsets):
    data = encode(kind, 0xAABBCCDD00112233, **values)
    assert len(data) == HDR + 56
    assert _field(data, 0, 4) == kind and _field(data, 8, 8) == 0xAABBCCDD00112233
    assert int.from_bytes(data[4:6], "little") == kind          # nlmsg_type = ev.type
    for name, (off, size) in offsets.items():
        assert _field(data, off, size) == values[name], name


def _every_layout():
    for kind in netlink.REQUEST_FIELDS:
        yield kind, None
    for kind in netlink.RESULT_FIELDS:
        yield None, kind
        if kind in netlink.REQUEST_FIELDS:
            yield kind, kind


def test_every_declared_member_fits_its_union():
    for u, r in _every_layout():
        assert netlink.layout(u, r).codec.size == HDR + 56


@pytest.mark.parametrize("u, r", list(_every_layout()))
def test_layouts_match_pyroute2_nlmsg_built_from_the_same_table(u, r):
    """pyroute2's nlmsg is the reference codec: same rows, same bytes, both ways."""
    from pyroute2.netlink import nlmsg
    lay = netlink.layout(u, r)
    ref = type("ref", (nlmsg,), {"fields": lay.rows[len(netlink.NLMSGHDR):]})()
    values = {}
    for i, (name, fmt) in enumerate(lay.rows[len(netlink.NLMSGHDR):]):
        if not name.startswith("__"):
            bits = {"Q": 64, "H": 16}.get(fmt, 31)
            values[name] = (0x0102030405060708 * (i + 1)) % (1 << bits)
    ref["header"]["type"], ref["header"]["pid"] = int(u or r), 4242
    for name, value in values.items():
        ref[name] = value
    ref.encode()
    mine = dict(values, nlmsg_len=len(ref.data), nlmsg_type=int(u or r), nlmsg_flags=0, nlmsg_seq=0, nlmsg_pid=4242)
    assert lay.codec.pack(*(mine[n] for n in lay.names)) == bytes(ref.data)
    back = dict(zip(lay.names, lay.codec.unpack(bytes(ref.data))))
    assert {n: back[n] for n in values} == values


def test_payload_is_counted_in_nlmsg_len():
    data = encode(Ev.SET_PARAM, 1, b"iqn.x\0", sid=1, cid=0, param=15, len=6)
    assert int.from_bytes(data[:4], "little") == len(data) == HDR + 56 + 6
    assert decode(data, Ev.SET_PARAM).payload == b"iqn.x\0"


def test_unknown_field_is_refused():
    with pytest.raises(TypeError):
        encode(Ev.CREATE_CONN, 0, sid=1, cid=0, bogus=1)


def _reply(kind, r_values, iferror=0, ev_type=None, payload=b""):
    lay = netlink.layout(None, kind)
    values = dict(r_values, nlmsg_len=lay.codec.size + len(payload), nlmsg_type=0, nlmsg_flags=0, nlmsg_seq=0,
                  nlmsg_pid=0, type=ev_type if ev_type is not None else kind, iferror=iferror, transport_handle=0)
    return lay.codec.pack(*(values.get(n, 0) for n in lay.names)) + payload


def test_results_and_events_decode_at_r_offsets():
    data = _reply(KEv.CONN_ERROR, dict(sid=4, cid=0, error=1020))
    assert _field(data, 40, 4) == 4 and _field(data, 48, 4) == 1020
    ev = decode(data)
    assert ev.name == "CONN_ERROR" and ev.fields == {"sid": 4, "cid": 0, "error": 1020}
    # d_session puts host_no first, unlike every other member
    ev = decode(_reply(KEv.DESTROY_SESSION, dict(host_no=7, sid=3)))
    assert _field(_reply(KEv.DESTROY_SESSION, dict(host_no=7, sid=3)), 40, 4) == 7
    assert ev.fields == {"host_no": 7, "sid": 3}


def test_recv_pdu_keeps_its_trailing_pdu():
    pdu = bytes(range(48)) + b"data"
    ev = decode(_reply(KEv.RECV_PDU, dict(sid=1, cid=0, recv_handle=0), payload=pdu))
    assert ev.payload == pdu


def test_split_walks_aligned_messages_and_rejects_bad_lengths():
    a = _reply(KEv.CREATE_SESSION, dict(sid=1, host_no=2), payload=b"x")     # 73 bytes, padded to 76
    b = _reply(KEv.CREATE_SESSION, dict(sid=3, host_no=4))
    parts = split(a + b"\0\0\0" + b)
    assert [decode(p).fields["sid"] for p in parts] == [1, 3]
    with pytest.raises(ValueError):
        split(b"\x05\0\0\0" + b"\0" * 20)
    with pytest.raises(ValueError):
        decode(b"\0" * 30)


def test_kernel_error_carries_a_positive_errno():
    e = KernelError(Ev.DESTROY_SESSION, -16, "kernel returned")
    assert e.errno == 16 and "DESTROY_SESSION" in str(e) and "-16" in str(e)


def test_stats_layout_is_96_bytes_then_custom_entries():
    import struct as st
    from iscsikit.kernel.netlink import STATS_FIELDS, decode_stats
    values = list(range(1, len(STATS_FIELDS)))           # every counter distinct
    base = st.pack("<QQ" + "I" * (len(STATS_FIELDS) - 3) + "I", *values, 2)
    assert len(base) == 96
    custom = st.pack("<64sQ", b"tx_sendpage_failures", 7) + st.pack("<64sQ", b"eh_abort_cnt", 9)
    stats, extra = decode_stats(base + custom)
    assert stats["txdata_octets"] == 1 and stats["rxdata_octets"] == 2 and stats["noptx_pdus"] == 3
    assert stats["timeout_err"] == values[-1] and "custom_length" not in stats
    assert extra == [("tx_sendpage_failures", 7), ("eh_abort_cnt", 9)]
    # a custom_length larger than what arrived is bounded by the payload
    stats, extra = decode_stats(base[:-4] + st.pack("<I", 1000) + custom)
    assert len(extra) == 2
    with pytest.raises(ValueError):
        decode_stats(base[:50])


class _ScriptedSocket:
    """Stands for the kernel's side: records what is sent, answers with canned datagrams."""

    def __init__(self, datagrams):
        self.sent, self.datagrams = [], list(datagrams)

    def sendto(self, data, _addr):
        self.sent.append(data)

    def recv(self, _size):
        return self.datagrams.pop(0)


def test_batch_sends_one_datagram_and_matches_replies_in_order(monkeypatch):
    nl = netlink.IscsiNetlink.__new__(netlink.IscsiNetlink)
    nl.reply_timeout, nl.events, nl._lock = 1.0, netlink.collections.deque(), netlink.threading.Lock()
    ok = _reply(Ev.SET_PARAM, {})
    refused = _reply(Ev.SET_PARAM, {}, iferror=-107, ev_type=KEv.IF_ERROR)
    event = _reply(KEv.CONN_ERROR, dict(sid=9, cid=0, error=1011))
    # replies split over two datagrams, an unrelated event between them
    nl.sock = _ScriptedSocket([ok + refused, event + ok])
    monkeypatch.setattr(nl, "_recv", lambda timeout: nl.sock.recv(0))
    rows = [(netlink.Param.SESS_RECOVERY_TMO, 5), (netlink.Param.TARGET_NAME, "iqn.x"), (netlink.Param.PING_TMO, 7)]
    refusals = nl.set_params(3, 2, 0, rows)
    assert len(nl.sock.sent) == 1
    sent = split(nl.sock.sent[0])
    assert [decode(m, Ev.SET_PARAM)["param"] for m in sent] == [int(p) for p, _ in rows]
    assert decode(sent[1], Ev.SET_PARAM).payload == b"iqn.x\0"
    assert [(p, e.errno) for p, e in refusals] == [(netlink.Param.TARGET_NAME, 107)]
    assert [e.type for e in nl.events] == [KEv.CONN_ERROR]


def test_ep_connect_carries_the_portal_as_a_sockaddr_storage():
    """TRANSPORT_EP_CONNECT: the uevent, then struct sockaddr_in(6) padded to 128 bytes
    (family host-endian, port and address in network order)."""
    import socket
    import struct
    from iscsikit.kernel.constants import Ev
    from iscsikit.kernel.netlink import decode, encode, parse_sockaddr, sockaddr
    v4 = sockaddr("192.0.2.2", 3260)
    assert len(v4) == 128 and v4[:8] == struct.pack("<H", socket.AF_INET) + b"\x0c\xbc" + bytes([192, 0, 2, 2])
    assert parse_sockaddr(v4) == ("192.0.2.2", 3260)
    v6 = sockaddr("2001:db8::7", 3261)
    assert v6[:2] == struct.pack("<H", socket.AF_INET6) and v6[8:24] == socket.inet_pton(socket.AF_INET6, "2001:db8::7")
    assert parse_sockaddr(v6) == ("2001:db8::7", 3261)
    msg = encode(Ev.TRANSPORT_EP_CONNECT, 7, v4, non_blocking=1)
    ev = decode(msg, Ev.TRANSPORT_EP_CONNECT)
    assert ev["non_blocking"] == 1 and ev.payload == v4 and len(msg) == 16 + 56 + 128

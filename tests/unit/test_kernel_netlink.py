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


def test_every_declared_member_fits_its_union():
    for kind in list(netlink.REQUEST_FIELDS) + list(netlink.RESULT_FIELDS):
        cls = netlink.message_class(kind if kind in netlink.REQUEST_FIELDS else None,
                                    kind if kind in netlink.RESULT_FIELDS else None)
        m = cls()
        for name, _ in cls.fields:
            m[name] = 0
        m.encode()
        assert len(m.data) == HDR + 56


def test_payload_is_counted_in_nlmsg_len():
    data = encode(Ev.SET_PARAM, 1, b"iqn.x\0", sid=1, cid=0, param=15, len=6)
    assert int.from_bytes(data[:4], "little") == len(data) == HDR + 56 + 6
    assert decode(data, Ev.SET_PARAM).payload == b"iqn.x\0"


def test_unknown_field_is_refused():
    with pytest.raises(TypeError):
        encode(Ev.CREATE_CONN, 0, sid=1, cid=0, bogus=1)


def _reply(kind, r_values, iferror=0, ev_type=None, payload=b""):
    cls = netlink.message_class(None, kind)
    m = cls()
    m["header"]["type"] = 0
    m["type"] = ev_type if ev_type is not None else kind
    m["iferror"] = iferror
    m["transport_handle"] = 0
    for name, _ in cls.fields:
        if name not in ("type", "iferror", "transport_handle"):
            m[name] = r_values.get(name, 0)
    m.encode()
    data = bytes(m.data) + payload
    return len(data).to_bytes(4, "little") + data[4:]


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

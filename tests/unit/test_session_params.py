"""Session bring-up rules that do not need a kernel: ISID, parameter lists, transport table."""

import pytest

from iscsikit.initiator import session as S
from iscsikit.initiator.transports import TransportNotSupported, template
from iscsikit.kernel.constants import Param
from iscsikit.proto.chap import ChapCredentials


def test_isid_is_iscsids_from_the_sid():
    assert S.isid_for(1) == 0x00023D000001
    assert S.isid_for(0x1234567) == 0x00023D234567   # 24 bits of the sid


def test_list_a_in_iscsid_order_without_empty_strings():
    node = S.NodeConfig(target="iqn.2026-11.org.example:t", address="10.0.0.1", port=3260)
    rows = S._params_before_login(node, "iqn.2026-11.org.example:i")
    names = [p for p, _ in rows]
    assert names[:4] == [Param.TARGET_NAME, Param.PERSISTENT_ADDRESS, Param.PERSISTENT_PORT, Param.SESS_RECOVERY_TMO]
    assert Param.USERNAME not in names and Param.PASSWORD not in names       # no CHAP: not sent
    assert names[-1] == Param.DISCOVERY_SESS and dict(rows)[Param.DISCOVERY_SESS] == "0"
    assert dict(rows)[Param.INITIATOR_NAME] == "iqn.2026-11.org.example:i"


def test_list_a_carries_chap_to_the_kernel():
    chap = ChapCredentials("alice", b"alice-secret-12", "tgt", b"target-secret-34")
    node = S.NodeConfig(target="iqn.2026-11.org.example:t", address="10.0.0.1", chap=chap)
    rows = dict(S._params_before_login(node, "iqn.x"))
    assert rows[Param.USERNAME] == "alice" and rows[Param.PASSWORD] == "alice-secret-12"
    assert rows[Param.USERNAME_IN] == "tgt" and rows[Param.PASSWORD_IN] == "target-secret-34"


def test_flag_values():
    assert [S._flag(v) for v in (True, False, "Yes", "No", 8192)] == ["1", "0", "1", "0", "8192"]


def test_transport_table():
    assert template("tcp").module == "iscsi_tcp"
    assert template("iser").module == "ib_iser" and template("iser").rdma
    with pytest.raises(TransportNotSupported, match="not supported yet"):
        template("bnx2i")
    with pytest.raises(TransportNotSupported, match="unknown transport"):
        template("carrier-pigeon")


def test_a_stale_transport_handle_is_read_again_once():
    """The handle is kept once read; a module reloaded elsewhere in memory makes the kernel
    answer EINVAL, and the login asks sysfs for the new handle instead of failing."""
    import errno
    from iscsikit.kernel.constants import Ev
    from iscsikit.kernel.netlink import KernelError
    from iscsikit.kernel.sysfs import Transport

    class Sysfs:
        handle = 1111

        def transport(self, name):
            return Transport(name, self.handle, 0x39)

    tried = []

    class Netlink:
        def create_session(self, handle, **_):
            tried.append(handle)
            # the old handle is refused; the new one gets far enough to prove the retry
            raise KernelError(Ev.CREATE_SESSION, -errno.EINVAL if handle == 1111 else -errno.ENOMEM, "kernel returned")

    sysfs = Sysfs()
    ini = S.Initiator(sysfs, Netlink())
    assert ini.transport_handle("tcp") == 1111
    sysfs.handle = 2222                       # iscsi_tcp reloaded at another address
    assert ini.transport_handle("tcp") == 1111   # kept: no sysfs read per login
    with pytest.raises(KernelError) as e:
        ini.login(S.NodeConfig(target="iqn.2026-11.org.example:t", address="127.0.0.1"))
    assert e.value.errno == errno.ENOMEM and tried == [1111, 2222]


def test_iser_login_keys_follow_rfc7145_and_the_caps():
    """Over iser: RDMAExtensions=Yes, the two RFC 7145 declarations instead of
    MaxRecvDataSegmentLength (withdrawn from the offer), digests None (ib_iser's caps 0x89)."""
    from iscsikit.initiator import transports as T
    from iscsikit.proto.login import LoginConfig
    keys = T.login_keys(template("iser"), 0x89, {"HeaderDigest": "CRC32C,None", "DataDigest": "None",
                                                  "MaxRecvDataSegmentLength": "262144"})
    offer = dict(LoginConfig(initiator_name="iqn.2026-11.org.example:i", target_name="iqn.2026-11.org.example:t",
                             operational=keys).operational_offer())
    assert offer["RDMAExtensions"] == "Yes"
    # as iscsid: the record's MaxRecvDataSegmentLength, and 8192 for an xmit cap left at 0
    assert offer["InitiatorRecvDataSegmentLength"] == "262144" and offer["TargetRecvDataSegmentLength"] == "8192"
    assert "MaxRecvDataSegmentLength" not in offer
    assert offer["HeaderDigest"] == "None"
    # the record's MaxXmitDataSegmentLength is the TargetRecvDataSegmentLength offered
    # (rounded down to a multiple of 4; out of range: iscsid's 262144)
    for cap, offered in ((65538, "65536"), (100, "262144")):
        assert T.login_keys(template("iser"), 0x89, {"MaxRecvDataSegmentLength": "16384"}, cap) == {
            "MaxRecvDataSegmentLength": None, "InitiatorRecvDataSegmentLength": "16384",
            "TargetRecvDataSegmentLength": offered, "RDMAExtensions": "Yes"}
    # tcp: unchanged, digests kept (its caps 0x39 have them)
    tcp = T.login_keys(template("tcp"), 0x39, {"HeaderDigest": "CRC32C", "MaxRecvDataSegmentLength": "262144"})
    assert tcp == {"HeaderDigest": "CRC32C", "MaxRecvDataSegmentLength": "262144"}


def test_iser_data_segment_limits_take_the_smaller_declaration():
    from iscsikit.initiator import transports as T
    from iscsikit.proto.negotiation import Parameters
    p = Parameters(negotiated={"RDMAExtensions": True},
                   ours={"InitiatorRecvDataSegmentLength": 8192, "TargetRecvDataSegmentLength": 8192},
                   theirs={"InitiatorRecvDataSegmentLength": 4096, "TargetRecvDataSegmentLength": 262144,
                           "MaxRecvDataSegmentLength": 1 << 20})
    assert T.data_segment_limits(template("iser"), p) == (4096, 8192)
    assert T.data_segment_limits(template("tcp"), p) == (8192, 1 << 20)
    assert T.rdma_accepted(template("iser"), p)
    assert not T.rdma_accepted(template("iser"), Parameters(negotiated={"RDMAExtensions": False}, ours={}, theirs={}))


@pytest.mark.parametrize("key", ["net_ifacename", "hwaddress", "ipaddress"])
def test_an_iser_iface_with_a_binding_is_refused_not_ignored(key):
    """ib_iser's EP_CONNECT takes only the destination (iscsi_iser.c iscsi_iser_ep_connect):
    an iface that names a netdev, MAC or source address would be silently unrouted."""
    sent = []

    class Netlink:
        def ep_connect(self, *args):
            sent.append(args)
            return 1

    ini = S.Initiator(object(), Netlink())
    node = S.NodeConfig(target="iqn.2026-11.org.example:t", address="192.0.2.2", transport="iser",
                        iface_name="rdma0", **{key: "x"})
    with pytest.raises(S.SessionError) as e:
        ini._ep_connect(7, node, deadline=0)
    assert e.value.exit_code == 7 and f"iface.{key} x" in str(e.value) and "iface rdma0" in str(e.value)
    assert sent == []      # nothing reached the kernel

"""Iface binding on the host: the netdev found by name or MAC and checked, SO_BINDTODEVICE and
the source address on real sockets (loopback), and the errors that name the iface and netdev.
The guest test (tests/vm/test_multipath.py) proves the traffic leaves through the netdev."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from iscsikit.initiator.exitcodes import ExitCode
from iscsikit.initiator.login_io import Binding, LoginError, connect
from iscsikit.kernel.netdev import Netdevs

pytestmark = pytest.mark.timeout(20)


def _fake_net(root, name, *, mac="02:00:00:00:00:01", flags="0x1003", kind="1"):
    d = root / "class" / "net" / name
    d.mkdir(parents=True)
    (d / "address").write_text(mac + "\n")
    (d / "flags").write_text(flags + "\n")
    (d / "type").write_text(kind + "\n")


@pytest.fixture
def listener():
    srv = socket.create_server(("127.0.0.1", 0))
    peers = []

    def accept():
        while True:
            try:
                conn, peer = srv.accept()
            except OSError:
                return
            peers.append(peer)
            conn.close()
    threading.Thread(target=accept, daemon=True).start()
    yield srv.getsockname()[1], peers
    srv.close()


def test_hwaddress_names_the_ethernet_netdev_with_that_mac(tmp_path):
    _fake_net(tmp_path, "eth7", mac="52:54:00:AB:cd:01")
    _fake_net(tmp_path, "ib0", mac="52:54:00:ab:cd:02", kind="32")       # not Ethernet: skipped
    nd = Netdevs(str(tmp_path), str(tmp_path))
    assert nd.by_hwaddress("52:54:00:ab:CD:01") == "eth7"
    assert nd.by_hwaddress("52:54:00:ab:cd:02") is None
    assert nd.get("eth7").up and nd.get("nosuch0") is None
    _fake_net(tmp_path, "eth8", flags="0x1002")
    assert nd.get("eth8").up is False


@pytest.mark.parametrize("binding, message", [
    (Binding("pathA", net_ifacename="nosuch0"), "iface pathA: netdev nosuch0 does not exist"),
    (Binding("pathB", hwaddress="02:00:5e:00:53:99"), "iface pathB: no netdev has hwaddress 02:00:5e:00:53:99"),
])
def test_a_missing_netdev_is_named_with_its_iface_and_exit_code_4(listener, binding, message):
    port, peers = listener
    with pytest.raises(LoginError) as e:
        connect(("127.0.0.1", port), 5, binding)
    assert e.value.exit_code == ExitCode.TRANS and message in str(e.value)
    assert peers == []          # nothing was connected
    # an iface failure (stage bind): a recovery waits ISCSI_CONN_ERR_REOPEN_DELAY, as after a refused connect (reopen.py)
    assert e.value.stage == "bind"


def test_a_down_netdev_is_refused_before_any_connect(tmp_path):
    _fake_net(tmp_path, "veth9", flags="0x1002")
    with pytest.raises(LoginError) as e:
        Binding("pathC", net_ifacename="veth9").netdev(Netdevs(str(tmp_path), str(tmp_path)))
    assert e.value.exit_code == ExitCode.TRANS and "iface pathC: netdev veth9 is down" in str(e.value)


@pytest.mark.skipif(not os.path.isdir("/sys/class/net/lo"), reason="no loopback netdev in this sysfs")
def test_net_ifacename_binds_the_socket_to_the_device(listener):
    port, peers = listener
    sock = connect(("127.0.0.1", port), 5, Binding("lo-iface", net_ifacename="lo"))
    with sock:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, 16).rstrip(b"\0") == b"lo"
    unbound = connect(("127.0.0.1", port), 5)
    with unbound:
        assert unbound.getsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, 16).rstrip(b"\0") == b""


def test_ipaddress_is_the_connections_source_address(listener):
    port, peers = listener
    with connect(("127.0.0.1", port), 5, Binding("src", ipaddress="127.0.0.7")) as sock:
        assert sock.getsockname()[0] == "127.0.0.7"
    with pytest.raises(LoginError) as e:
        connect(("127.0.0.1", port), 5, Binding("bad", ipaddress="192.0.2.250"))
    assert e.value.exit_code == ExitCode.TRANS and "cannot bind source address 192.0.2.250" in str(e.value)

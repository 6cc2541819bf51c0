"""The blocking adapter against scripted targets on 127.0.0.1 sockets:
redirects, timeouts, dropped connections, exit codes."""

from __future__ import annotations

import socket
import threading

import pytest

from iscsikit.initiator.login_io import LoginError, as_portal, discover, login
from iscsikit.proto import pdu as P
from iscsikit.initiator.exitcodes import ExitCode
from iscsikit.proto.keys import encode_text
from iscsikit.proto.reader import PduReader
from iscsikit.proto.sendtargets import Portal

from proto_fake_target import FakeTarget

pytestmark = pytest.mark.timeout(20)


class ScriptedServer:
    """Accepts connections; `behaviour(conn)` runs for each in a thread."""

    def __init__(self, behaviour):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.behaviour = behaviour
        self.connections = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                try:
                    self.behaviour(conn)
                except OSError:
                    pass

    def close(self):
        self.sock.close()


@pytest.fixture
def server():
    made = []

    def make(behaviour):
        made.append(ScriptedServer(behaviour))
        return made[-1]
    yield make
    for s in made:
        s.close()


def serve_login(target_factory, text_responses=()):
    """Answer Login Requests with a FakeTarget, then Text Requests from a list."""
    def behaviour(conn):
        target = target_factory()
        reader = PduReader(accept=P.INITIATOR_OPCODES)
        responses = list(text_responses)
        while True:
            data = conn.recv(65536)
            if not data:
                return
            reader.feed(data)
            for pdu in reader:
                if isinstance(pdu, P.LoginRequest):
                    conn.sendall(target.handle(pdu).encode())
                elif isinstance(pdu, P.TextRequest) and responses:
                    conn.sendall(responses.pop(0)(pdu).encode())
                elif isinstance(pdu, P.LogoutRequest):
                    conn.sendall(P.LogoutResponse(itt=pdu.itt, statsn=200).encode())
    return behaviour


def test_plain_login_over_a_socket(server):
    srv = server(serve_login(FakeTarget))
    with login(("127.0.0.1", srv.port), "iqn.2024-01.org.example:t", login_timeout=5) as session:
        assert session.login.tsih == 0x1234
        assert session.sequencer.exp_statsn == session.login.statsn + 1
        session.logout()


def test_redirect_is_followed(server):
    final = server(serve_login(FakeTarget))
    first = server(serve_login(lambda: FakeTarget(redirect=f"127.0.0.1:{final.port},3")))
    with login(("127.0.0.1", first.port), "iqn.2024-01.org.example:t") as session:
        assert session.portal == Portal("127.0.0.1", final.port, 3)
    assert first.connections == 1 and final.connections == 1


def test_redirect_loop_is_cut(server):
    holder = {}
    loop = server(serve_login(lambda: FakeTarget(redirect=f"127.0.0.1:{holder['port']}")))
    holder["port"] = loop.port
    with pytest.raises(LoginError, match="redirects") as info:
        login(("127.0.0.1", loop.port), "iqn.2024-01.org.example:t", max_redirects=2)
    assert info.value.exit_code == ExitCode.LOGIN and loop.connections == 3


def test_silent_target_times_out(server):
    stop = threading.Event()
    srv = server(lambda conn: stop.wait(5))
    try:
        with pytest.raises(LoginError) as info:
            login(("127.0.0.1", srv.port), "iqn.2024-01.org.example:t", login_timeout=0.3)
        assert info.value.exit_code == ExitCode.TRANS_TIMEOUT
    finally:
        stop.set()


def test_target_hanging_up_is_a_transport_error(server):
    srv = server(lambda conn: conn.recv(100))
    with pytest.raises(LoginError, match="closed|reset") as info:
        login(("127.0.0.1", srv.port), "iqn.2024-01.org.example:t")
    assert info.value.exit_code == ExitCode.TRANS


def test_garbage_is_a_login_protocol_error(server):
    def garbage(conn):
        conn.recv(1000)
        conn.sendall(P.NopIn(itt=0).encode())
    srv = server(garbage)
    with pytest.raises(LoginError, match="protocol error") as info:
        login(("127.0.0.1", srv.port), "iqn.2024-01.org.example:t")
    assert info.value.exit_code == ExitCode.LOGIN


def test_oversized_pdu_is_refused_without_reading_it(server):
    def huge(conn):
        conn.recv(1000)
        header = bytearray(P.LoginResponse().encode())
        header[5:8] = ((1 << 24) - 1).to_bytes(3, "big")    # the largest 24-bit length
        conn.sendall(bytes(header))
    srv = server(huge)
    with pytest.raises(LoginError, match="MaxRecvDataSegmentLength 8192"):
        login(("127.0.0.1", srv.port), "iqn.2024-01.org.example:t")


def test_retryable_status_maps_to_exit_5(server):
    srv = server(serve_login(lambda: FakeTarget(status=(3, 1))))
    with pytest.raises(LoginError, match="service unavailable") as info:
        login(("127.0.0.1", srv.port), "iqn.2024-01.org.example:t")
    assert info.value.exit_code == 5


def test_discovery_over_a_socket_with_continuation(server):
    text = encode_text([("TargetName", "iqn.2024-01.org.example:a"), ("TargetAddress", "10.1.1.1:3260,1"),
                        ("TargetName", "iqn.2024-01.org.example:b")])
    first = lambda req: P.TextResponse(final=False, cont=True, itt=req.itt, ttt=77, statsn=5, data=text[:20])
    second = lambda req: P.TextResponse(final=True, itt=req.itt, ttt=0xFFFFFFFF, statsn=6, data=text[20:])
    srv = server(serve_login(FakeTarget, [first, second]))
    found = discover(f"127.0.0.1:{srv.port}", logout=True)
    assert [t.name for t in found] == ["iqn.2024-01.org.example:a", "iqn.2024-01.org.example:b"]
    assert found[1].portals == (Portal("127.0.0.1", srv.port, -1),)


def test_portal_arguments():
    assert as_portal("10.0.0.1:3270") == Portal("10.0.0.1", 3270)
    assert as_portal("[::1]") == Portal("::1", 3260)
    assert as_portal(("h", 1)) == Portal("h", 1)
    with pytest.raises(LoginError) as info:
        as_portal("bad host")
    assert info.value.exit_code == ExitCode.INVAL

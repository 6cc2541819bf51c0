"""The management protocol: framing, versions, errors, root-only serving (host; no kernel needed)."""

import asyncio
import json
import os
import socket
import threading
import time

import pytest

from iscsikit.initiator import mgmt, protocol
from iscsikit.initiator.daemon import Daemon, node_from_args
from iscsikit.kernel.constants import Ev
from iscsikit.kernel.fake import FakeKernel


def _dispatcher(root, ops, requests=None, monkeypatch=None):
    """A Daemon built by its constructor on kernel/fake.py, its request rows replaced by `ops`."""
    kernel = FakeKernel(root / "sys")
    d = Daemon(str(root / "d.sock"), kernel=kernel, workers=2)
    d.ops, d.streams = ops, {}
    if requests is not None:
        monkeypatch.setattr(protocol, "REQUESTS", {**protocol.REQUESTS, **requests})
    return d


async def _answer(d, line: bytes) -> dict:
    reply, _stream = await d.dispatch(line)
    return reply


def test_dispatch_answers_every_bad_request_with_a_code(tmp_path, monkeypatch):
    async def boom(args):
        raise RuntimeError("bug")

    async def echo(args):
        return args

    d = _dispatcher(tmp_path, {"echo": echo, "boom": boom},
                    {"echo": (protocol.Arg("x", (int,)),), "boom": ()}, monkeypatch)
    run = lambda line: asyncio.run(_answer(d, line))
    assert run(b'{"v": 2, "op": "echo", "args": {"x": 1}}') == mgmt.ok({"x": 1})
    assert run(b"{not json")["exit_code"] == 16
    assert run(b"[1, 2]")["exit_code"] == 16
    assert run(b'{"v": 99, "op": "echo"}') == mgmt.fail(16, "protocol version 99 not served (this is 2)")
    assert run(b'{"v": 2, "op": "format"}')["error"] == "unknown request 'format'"
    # an argument the request does not declare is refused, never dropped
    assert run(b'{"v": 2, "op": "echo", "args": {"x": 1, "y": 2}}') == \
        mgmt.fail(16, "echo: unknown argument(s) y")
    assert run(b'{"v": 2, "op": "echo", "args": {"x": "1"}}')["error"] == "echo: argument x must be int, not str"
    assert run(b'{"v": 2, "op": "echo", "args": {}}')["error"] == "echo: missing argument x"
    bug = run(b'{"v": 2, "op": "boom"}')
    assert bug["exit_code"] == 9 and "bug" in bug["error"]


def _serve_once(path, reply: bytes):
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)

    def run():
        conn, _ = srv.accept()
        conn.recv(65536)
        conn.sendall(reply)
        conn.close()
        srv.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_client_refuses_another_protocol_version(tmp_path):
    path = str(tmp_path / "s")
    _serve_once(path, b'{"v": 3, "ok": true, "result": null}\n')
    with pytest.raises(mgmt.MgmtError, match="protocol 3"):
        mgmt.call("version", path=path, timeout=5)


def test_client_carries_the_daemons_exit_code(tmp_path):
    path = str(tmp_path / "s")
    _serve_once(path, json.dumps(mgmt.fail(15, "session exists")).encode() + b"\n")
    with pytest.raises(mgmt.MgmtError) as e:
        mgmt.call("login", {}, path=path, timeout=5)
    assert e.value.exit_code == 15 and str(e.value) == "session exists"


def test_no_daemon_is_exit_20(tmp_path):
    with pytest.raises(mgmt.MgmtError) as e:
        mgmt.call("version", path=str(tmp_path / "none"), timeout=5)
    assert e.value.exit_code == 20


def test_peer_uid_reads_so_peercred():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        assert mgmt.peer_uid(a) == os.getuid()


def test_login_request_builds_chap_without_leaking_it():
    node = node_from_args({"target": "iqn.2026-11.org.example:t", "address": "127.0.0.1", "port": 3260,
                           "username": "u", "password": "pa55-word-xyz"})
    assert node.chap.username == "u" and node.chap.secret.reveal() == b"pa55-word-xyz"
    assert "pa55-word-xyz" not in repr(node) and "pa55-word-xyz" not in str(node)


def test_non_root_peer_reads_a_refusal_not_a_reset(tmp_path, monkeypatch):
    monkeypatch.setattr(mgmt, "peer_uid", lambda sock: 65534)
    path = str(tmp_path / "d.sock")
    d = _dispatcher(tmp_path / "d", {})
    started = threading.Event()
    stop = None

    def serve():
        nonlocal stop

        async def main():
            nonlocal stop
            stop = asyncio.Event()
            server = await asyncio.start_unix_server(d.on_client, path=path)
            started.set()
            async with server:
                await stop.wait()

        loop = asyncio.new_event_loop()
        serve.loop = loop
        loop.run_until_complete(main())

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    assert started.wait(5)
    try:
        for _ in range(20):   # the race between the refusal and the request is not left to luck
            with pytest.raises(mgmt.MgmtError) as e:
                mgmt.call("sessions", path=path, timeout=5)
            assert e.value.exit_code == 13 and "root only" in str(e.value)
    finally:
        serve.loop.call_soon_threadsafe(stop.set)
        t.join(5)


def test_call_many_collects_every_reply_in_request_order(tmp_path):
    """Replies come back in reverse order, one is a refusal and one connection closes unanswered."""
    path = str(tmp_path / "s")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(8)

    def run():
        conns = []
        for _ in range(4):
            conn, _ = srv.accept()
            conns.append((conn, json.loads(conn.makefile("rb").readline())))
        for conn, req in reversed(conns):
            n = req["args"]["n"]
            if n == 1:
                conn.sendall(json.dumps(mgmt.fail(15, "session exists")).encode() + b"\n")
            elif n != 2:    # n == 2: closed with no answer
                conn.sendall(json.dumps(mgmt.ok({"n": n})).encode() + b"\n")
            conn.close()
            time.sleep(0.1)    # one reply at a time, so the order of arrival is known
        srv.close()

    threading.Thread(target=run, daemon=True).start()
    done = []
    out = mgmt.call_many([("login", {"n": n}) for n in range(4)], path=path, timeout=10, on_done=done.append)
    assert out[0] == {"n": 0} and out[3] == {"n": 3}
    assert isinstance(out[1], mgmt.MgmtError) and out[1].exit_code == 15
    assert isinstance(out[2], mgmt.MgmtError) and out[2].exit_code == 18   # ISCSID_COMM_ERR
    assert done == [3, 2, 1, 0]                                             # as the replies arrived


def test_call_many_sends_each_request_as_the_iterable_yields_it(tmp_path):
    """-L all reads records lazily: request 0 must reach the daemon before request 1 is built."""
    path = str(tmp_path / "s")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(8)
    arrived = threading.Event()

    def run():
        for n in range(2):
            conn, _ = srv.accept()
            req = json.loads(conn.makefile("rb").readline())
            arrived.set()
            conn.sendall(json.dumps(mgmt.ok(req["args"])).encode() + b"\n")
            conn.close()
        srv.close()

    threading.Thread(target=run, daemon=True).start()
    seen_before_second = []

    def requests():
        yield "login", {"n": 0}
        seen_before_second.append(arrived.wait(5))
        yield "login", {"n": 1}

    assert mgmt.call_many(requests(), path=path, timeout=10) == [{"n": 0}, {"n": 1}]
    assert seen_before_second == [True]


def test_call_many_without_a_daemon_fails_each_request_with_20(tmp_path):
    out = mgmt.call_many([("logout", {"sid": 1}), ("logout", {"sid": 2})], path=str(tmp_path / "none"), timeout=5)
    assert [e.exit_code for e in out] == [20, 20]


def test_sessions_request_skips_a_session_gone_while_listed(tmp_path):
    """A logout in flight removes session2 between the listing and the read: no internal error."""
    from iscsikit.kernel.sysfs import Sysfs
    s1 = tmp_path / "class" / "iscsi_session" / "session1"
    s1.mkdir(parents=True)
    (s1 / "targetname").write_text("iqn.2026-11.org.example:t\n")
    (s1 / "state").write_text("LOGGED_IN\n")
    (tmp_path / "class" / "iscsi_session" / "session2").write_text("")   # listed, but no longer a session
    d = _dispatcher(tmp_path / "d", {})
    d.sysfs = Sysfs(tmp_path)
    out = asyncio.run(d.op_sessions({}))
    assert [(s["sid"], s["target"], s["kernel_state"]) for s in out] == [(1, "iqn.2026-11.org.example:t", "LOGGED_IN")]


def test_a_stopping_daemon_releases_logouts_waiting_for_kernel_events(tmp_path):
    """A logout's coroutine waits for the kernel's events; when the daemon stops, that wait
    must end at once (not at logout_timeout), and the session is still destroyed."""
    kernel = FakeKernel(tmp_path / "sys")

    async def scenario():
        d = Daemon(str(tmp_path / "d.sock"), kernel=kernel, workers=2)
        d.loop = asyncio.get_running_loop()     # what run() sets, without serving: nobody reads
        d.stopping = asyncio.Event()            # the events socket, so no UNBIND event reaches the waiter
        sid, _ = d.requests.create_session(kernel.transports["tcp"])
        t = time.monotonic()
        task = asyncio.ensure_future(d.op_logout({"sid": sid}))
        while Ev.UNBIND_SESSION not in kernel.kinds():
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        assert not task.done()
        d.stopping.set()
        d.release_logout_waiters()
        assert await asyncio.wait_for(task, 5) == {"sid": sid}
        d.requests.close()
        d.events.close()
        return time.monotonic() - t

    try:
        elapsed = asyncio.run(scenario())
    finally:
        kernel.close()
    assert elapsed < 5 and kernel.sessions == {} and kernel.kinds()[-1] == Ev.DESTROY_SESSION

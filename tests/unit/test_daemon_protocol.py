"""protocol.py, client.py, the daemon's event stream and the forwarding iscsiadm (host; no kernel).

The daemon's request path runs for real here (its asyncio server on a socket
in tmp_path); only the kernel side is absent. The C forwarder is built with
the host's gcc and run against that daemon, then with no daemon at all.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from iscsikit.cli import adm_served
from iscsikit.initiator import client as client_mod
from iscsikit.initiator import nodedb as ndb
from iscsikit.initiator import protocol, records
from iscsikit.initiator.daemon import CHAP_ARGS, Daemon, Managed, node_from_args
from iscsikit.initiator.mgmt import MgmtError
from iscsikit.kernel.fake import FakeKernel
from iscsikit.initiator.session import KernelSession, NodeConfig

REPO = Path(__file__).resolve().parents[2]
FORWARDER = REPO / "userspace" / "iscsiadm-forward" / "iscsiadm.c"
TARGET = "iqn.2026-11.org.example:t1"


# ---- the declarations agree with what reads them ----------------------------------
def test_every_request_row_has_exactly_one_handler(tmp_path):
    from iscsikit.kernel.fake import FakeKernel
    with FakeKernel(tmp_path / "sys") as kernel:     # a real Daemon: its netlink is the fake's
        d = Daemon(str(tmp_path / "d.sock"), kernel=kernel)
        d.pool.shutdown()
    ops, streams = set(d.ops), set(d.streams)
    assert ops | streams == set(protocol.REQUESTS) and not ops & streams
    assert all(d.ops[op].__name__ == f"op_{op}" for op in ops)
    assert all(d.streams[op].__name__ == f"stream_{op}" for op in streams)


def test_login_rows_are_node_config_fields():
    fields = {f.name for f in dataclasses.fields(NodeConfig)} - {"chap"}
    assert {a.name for a in protocol.LOGIN_ARGS} == fields | set(CHAP_ARGS)


def test_login_request_takes_open_iscsis_defaults_from_the_record_table():
    nid = ndb.NodeId(TARGET, "192.0.2.10", 3260, 1, "default")
    req = protocol.check_request("login", records.login_request(nid, {}, "iqn.2026-11.org.example:host"))
    # open-iscsi's defaults (iscsid.conf's commented values), not three disagreeing copies
    assert (req["login_timeout"], req["replacement_timeout"], req["noop_out_interval"],
            req["abort_timeout"], req["cmds_max"], req["queue_depth"], req["scan"]) == (30, 120, 5, 15, 128, 32, "auto")
    assert "username" not in req and req["operational"] == {}
    assert NodeConfig(TARGET, "192.0.2.10").login_timeout == 30
    chap = records.login_request(nid, {"node.session.auth.authmethod": "CHAP",
                                       "node.session.auth.username": "u", "node.session.auth.password": "p",
                                       "node.conn[0].timeo.login_timeout": "7"})
    assert (chap["username"], chap["password"], chap["login_timeout"]) == ("u", "p", 7)


def test_chap_algs_reach_the_login_in_the_records_order():
    nid = ndb.NodeId(TARGET, "192.0.2.10", 3260, 1, "default")
    chap = {"node.session.auth.authmethod": "CHAP", "node.session.auth.username": "u",
            "node.session.auth.password": "p" * 12}
    def algorithms(values):
        req = protocol.check_request("login", records.login_request(nid, {**chap, **values}))
        return req["chap_algs"], [a.name for a in node_from_args(req).chap.algorithms]
    # open-iscsi's record default is MD5 alone (facts §3.6): a record without the key offers only it
    assert algorithms({}) == ("MD5", ["MD5"])
    assert algorithms({"node.session.auth.chap_algs": "SHA3-256,SHA256,SHA1,MD5"}) == \
        ("SHA3-256,SHA256,SHA1,MD5", ["SHA3_256", "SHA256", "SHA1", "MD5"])
    assert algorithms({"node.session.auth.chap_algs": "SHA256,MD5,SHA256"}) == ("SHA256,MD5", ["SHA256", "MD5"])
    assert "chap_algs" not in records.login_request(nid, {"node.session.auth.chap_algs": "SHA256"})


def test_events_are_checked_against_their_rows():
    ev = protocol.event("state_changed", 3, 1.5, state="RECOVERING", previous="LOGGED_IN")
    assert ev == {"v": protocol.VERSION, "event": "state_changed", "sid": 3, "time": 1.5,
                  "state": "RECOVERING", "previous": "LOGGED_IN"}
    with pytest.raises(ValueError):
        protocol.event("state_changed", 3, 1.5, state="RECOVERING")


def test_the_client_refuses_a_bad_request_before_sending_it(tmp_path):
    c = client_mod.Client(str(tmp_path / "nowhere"))
    with pytest.raises(MgmtError) as e:
        c.call("logout", {"sid": "1"})
    assert e.value.exit_code == 16 and "sid must be int" in str(e.value)


# ---- a daemon's request path, served for real --------------------------------------
class Served:
    """A Daemon built by its constructor on kernel/fake.py, serving its mgmt socket in a thread."""

    def __init__(self, path: str, cli_runner=None):
        self.kernel = FakeKernel(Path(path).with_suffix(".sys"))
        self.daemon = Daemon(path, kernel=self.kernel, cli_runner=cli_runner, workers=4)
        self.thread = threading.Thread(target=asyncio.run, args=(self.daemon.run(),), daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while True:
            try:
                client_mod.Client(path, timeout=5).version()
                break
            except MgmtError:
                assert time.monotonic() < deadline, "the daemon did not start serving"
                time.sleep(0.005)

    def call_in_loop(self, fn, *args, **kw):
        done = threading.Event()
        self.daemon.loop.call_soon_threadsafe(lambda: (fn(*args, **kw), done.set()))
        assert done.wait(5)

    def stop(self):
        if self.thread.is_alive():
            self.daemon.loop.call_soon_threadsafe(self.daemon.stopping.set)
            self.thread.join(10)
        self.daemon.events.close()
        self.daemon.initiator.close()
        self.kernel.close()


@pytest.fixture
def served(tmp_path):
    made = []

    def make(cli_runner=None):
        s = Served(str(tmp_path / f"d{len(made)}.sock"), cli_runner)
        made.append(s)
        return s
    yield make
    for s in made:
        s.stop()


def _managed(sid: int) -> Managed:
    node = NodeConfig(TARGET, "192.0.2.10", 3260, 1)
    return Managed(KernelSession(sid, 5, 0, 1, node, {}))


def test_two_watchers_see_every_event_in_order(served):
    s = served()
    c = client_mod.Client(s.daemon.socket_path)
    w1, w2 = c.watch(timeout=5), c.watch(timeout=5)
    assert w1.sessions == [] and w2.sessions == []
    while len(s.daemon.watchers) < 2:        # both subscriptions registered in the loop
        time.sleep(0.01)
    m = _managed(7)
    s.call_in_loop(s.daemon.publish_added, m)
    s.call_in_loop(s.daemon.set_state, m, "RECOVERING")
    s.call_in_loop(s.daemon.publish, "session_removed", 7, target=TARGET, reason="logout")
    for w in (w1, w2):
        evs = [next(w) for _ in range(3)]
        assert [e["event"] for e in evs] == ["session_added", "state_changed", "session_removed"]
        assert evs[0]["target"] == TARGET and evs[0]["host_no"] == 5 and evs[0]["adopted"] is False
        assert (evs[1]["state"], evs[1]["previous"]) == ("RECOVERING", "LOGGED_IN")
        assert all(e["sid"] == 7 for e in evs)
    w1.close()
    deadline = time.monotonic() + 5
    while len(s.daemon.watchers) > 1 and time.monotonic() < deadline:
        s.call_in_loop(s.daemon.publish, "recovery_started", 7)   # a closed watcher is dropped
        time.sleep(0.05)
    assert len(s.daemon.watchers) == 1
    w2.close()


def test_an_unread_watcher_is_cut_off_not_buffered_forever(served, monkeypatch):
    from iscsikit.initiator import daemon as daemon_mod
    monkeypatch.setattr(daemon_mod, "WATCH_BACKLOG", 4096)
    s = served()
    w = client_mod.Client(s.daemon.socket_path).watch(timeout=5)
    while not s.daemon.watchers:
        time.sleep(0.01)
    for _ in range(2000):          # never read: the socket buffers fill, then the backlog
        s.call_in_loop(s.daemon.publish, "recovery_started", 1)
        if not s.daemon.watchers:
            break
    assert not s.daemon.watchers
    w.close()


def test_a_cli_run_streams_its_output_and_exit_code(served, tmp_path):
    seen = []

    def runner(argv, env, tty, write):
        seen.append((argv, env, tty))
        write(protocol.FRAME_OUT, b"line one\n")
        write(protocol.FRAME_ERR, b"iscsiadm: complaint\n")
        write(protocol.FRAME_OUT, b"x" * 200000)
        return 21
    s = served(runner)
    out, err = bytearray(), bytearray()
    env = {"ISCSIKIT_DB_ROOT": "/tmp/db", "PATH": "/usr/bin", "HOME": "/root"}
    rc = client_mod.Client(s.daemon.socket_path).run_cli(["iscsiadm", "-m", "node"], env, [False, True, False],
                                                         out.extend, err.extend)
    assert rc == 21 and bytes(out) == b"line one\n" + b"x" * 200000 and bytes(err) == b"iscsiadm: complaint\n"
    # only the keys a run reads travel (protocol.CLI_ENV)
    assert seen == [(["iscsiadm", "-m", "node"], {"ISCSIKIT_DB_ROOT": "/tmp/db"}, [False, True, False])]


def test_a_daemon_without_a_cli_runner_refuses_the_run(served):
    s = served(None)
    with pytest.raises(MgmtError) as e:
        client_mod.Client(s.daemon.socket_path).run_cli(["iscsiadm"], {}, [False] * 3, print, print)
    assert e.value.exit_code == 27


# ---- the served CLI: iscsikit-adm's own code, with its client's environment ----------
def _db(root: Path) -> None:
    root.mkdir()
    (root / "iscsid.conf").write_text("")
    (root / "initiatorname.iscsi").write_text("InitiatorName=iqn.2026-11.org.example:host\n")


def test_served_cli_uses_the_clients_database_not_the_daemons(tmp_path, monkeypatch):
    mine, daemons = tmp_path / "mine", tmp_path / "daemons"
    _db(mine), _db(daemons)
    monkeypatch.setenv("ISCSIKIT_DB_ROOT", str(daemons))
    frames = []
    rc = adm_served.run(["iscsiadm", "-m", "node", "-o", "new", "-T", TARGET, "-p", "192.0.2.10"],
                        {"ISCSIKIT_DB_ROOT": str(mine)}, [False] * 3, lambda k, d: frames.append((k, d)))
    assert rc == 0
    assert (mine / "nodes" / TARGET).is_dir() and not (daemons / "nodes").exists()
    assert b"".join(d for k, d in frames if k == protocol.FRAME_OUT).decode().startswith("New iSCSI node [tcp:")
    frames.clear()
    rc = adm_served.run(["iscsiadm", "-m", "bogus"], {"ISCSIKIT_DB_ROOT": str(mine)}, [False] * 3,
                        lambda k, d: frames.append((k, d)))
    assert rc == 7 and frames == [(protocol.FRAME_ERR, b"iscsiadm: mode -1 is not yet supported\n")]


# ---- the forwarding iscsiadm (C) --------------------------------------------------------
@pytest.fixture(scope="module")
def forwarder(tmp_path_factory):
    if not shutil.which("gcc"):
        pytest.skip("no gcc on this host (.ci/setup installs it)")
    bindir = tmp_path_factory.mktemp("bin")
    exe = bindir / "iscsiadm"
    subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(exe), str(FORWARDER)], check=True)
    # what it execs with the daemon down: a stand-in for the Python iscsikit-adm beside it
    fallback = bindir / "iscsikit-adm"
    fallback.write_text("#!/bin/sh\necho \"fallback argv0=$ISCSIKIT_ARGV0 args=$*\"\nexit 3\n")
    fallback.chmod(0o755)
    return exe


def test_forwarder_constants_are_the_protocols():
    src = FORWARDER.read_text()
    define = dict(re.findall(r"^#define (\w+) (.+)$", src, re.M))
    assert int(define["PROTOCOL_VERSION"]) == protocol.VERSION
    assert define["FRAME_OUT"] == f"'{chr(protocol.FRAME_OUT)}'"
    assert define["FRAME_ERR"] == f"'{chr(protocol.FRAME_ERR)}'"
    assert define["FRAME_EXIT"] == f"'{chr(protocol.FRAME_EXIT)}'"
    assert int(define["FRAME_HEADER"]) == protocol.FRAME_HEADER
    assert eval(define["MAX_FRAME"]) == protocol.MAX_FRAME
    from iscsikit.initiator import mgmt
    assert define["DEFAULT_SOCKET"] == f'"{mgmt.DEFAULT_SOCKET}"'
    env = re.search(r"cli_env\[\] = \{(.*?)NULL\}", src, re.S).group(1)
    assert tuple(re.findall(r'"(\w+)"', env)) == protocol.CLI_ENV


def test_forwarder_runs_the_command_in_the_daemon(served, forwarder, tmp_path):
    seen = []

    def runner(argv, env, tty, write):
        seen.append((argv, env, tty))
        write(protocol.FRAME_OUT, "tcp: [1] 192.0.2.10:3260,1 iqn.x \"quoted\" é\n".encode())
        write(protocol.FRAME_ERR, b"warn\n")
        return 15
    s = served(runner)
    env = {"ISCSIKIT_SOCKET": s.daemon.socket_path, "ISCSIKIT_DB_ROOT": "/tmp/a\"b\\c\td", "PATH": "/usr/bin"}
    p = subprocess.run([str(forwarder), "-m", "session", "-T", "ö"], env=env, capture_output=True, timeout=30)
    assert p.returncode == 15
    assert p.stdout.decode() == "tcp: [1] 192.0.2.10:3260,1 iqn.x \"quoted\" é\n" and p.stderr == b"warn\n"
    [(argv, fenv, tty)] = seen
    assert argv == [str(forwarder), "-m", "session", "-T", "ö"]
    assert fenv == {"ISCSIKIT_SOCKET": s.daemon.socket_path, "ISCSIKIT_DB_ROOT": "/tmp/a\"b\\c\td"}
    assert tty == [False, False, False]


def test_forwarder_falls_back_to_the_python_cli_without_a_daemon(forwarder, tmp_path):
    env = {"ISCSIKIT_SOCKET": str(tmp_path / "none.sock"), "PATH": "/usr/bin:/bin"}
    p = subprocess.run([str(forwarder), "-m", "node"], env=env, capture_output=True, text=True, timeout=30)
    assert p.returncode == 3 and p.stdout == f"fallback argv0={forwarder} args=-m node\n"


def test_forwarder_falls_back_when_the_daemon_refuses(served, forwarder):
    s = served(None)     # an iscsikitd that does not serve CLI runs
    env = {"ISCSIKIT_SOCKET": s.daemon.socket_path, "PATH": "/usr/bin:/bin"}
    p = subprocess.run([str(forwarder), "-m", "iface"], env=env, capture_output=True, text=True, timeout=30)
    assert p.returncode == 3 and p.stdout == f"fallback argv0={forwarder} args=-m iface\n"


def test_k_0_stops_the_daemon_and_its_own_run_still_gets_exit_0(served):
    # iscsiadm -k 0 through the forwarder runs inside the daemon it stops
    s = served(lambda argv, env, tty, write: adm_served.run(argv, env, tty, write))
    out, err = bytearray(), bytearray()
    rc = client_mod.Client(s.daemon.socket_path).run_cli(
        ["iscsiadm", "-k", "0"], {"ISCSIKIT_SOCKET": s.daemon.socket_path}, [False] * 3, out.extend, err.extend)
    assert (rc, bytes(out), bytes(err)) == (0, b"", b"")
    s.thread.join(15)
    assert not s.thread.is_alive()        # the daemon stopped


def test_k_0_without_a_daemon_says_what_iscsiadm_says(tmp_path):
    frames = []
    rc = adm_served.run(["iscsiadm", "-k", "0"], {"ISCSIKIT_SOCKET": str(tmp_path / "none")}, [False] * 3,
                        lambda k, d: frames.append(d))
    assert rc == 0 and b"".join(frames).decode().splitlines() == [
        "iscsiadm: can not connect to iSCSI daemon (111)!",
        "iscsiadm: initiator reported error (20 - could not connect to iscsid)",
        "iscsiadm: Could not stop iscsid. Trying sending iscsid SIGTERM or SIGKILL signals manually"]


# ---- the warm daemon: what it holds in memory and what a forwarded call may still import ----
def _function_level_imports(path: Path) -> set[str]:
    """Absolute names of the modules imported inside functions of one source file
    (`from pkg import name` counts pkg.name when that is a module, else pkg)."""
    import ast
    import importlib.util
    tree = ast.parse(path.read_text())
    package = "iscsikit." + ".".join(path.relative_to(Path(adm_served.__file__).parents[1]).parts[:-1])

    def is_module(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:
            return False
    names = set()
    for fn in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
        for node in ast.walk(fn):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
                for a in node.names:
                    names.add(f"{base}.{a.name}" if is_module(f"{base}.{a.name}") else base)
    return names


def test_warm_imports_everything_a_forwarded_command_would_import_on_first_use():
    """A first-use import inside a forwarded call costs it 0.1-0.2 s in the guest (bench_adm_calls):
    warm() must cover every mode's module and every import the CLI's functions make when they run."""
    adm_dir = Path(adm_served.__file__).parent / "adm"
    lazy = set().union(*(_function_level_imports(p) for p in adm_dir.glob("*.py")))
    lazy |= _function_level_imports(Path(adm_served.__file__).parents[1] / "initiator" / "nodedb.py")
    lazy -= {"traceback"}        # only when a bug is being reported with ISCSIKIT_DEBUG
    code = ("import sys; from iscsikit.cli import adm_served; adm_served.warm(); "
            f"print(sorted(m for m in {sorted(lazy)!r} if m not in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert p.stdout.strip() == "[]", f"not imported by warm(): {p.stdout.strip()}"
    code = ("import sys; from iscsikit.cli import adm_served; from iscsikit.cli.adm.main import MODES; "
            "adm_served.warm(); print(sorted(m for m, _ in MODES.values() if 'iscsikit.cli.adm.' + m not in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert p.stdout.strip() == "[]"


def test_the_daemon_maps_no_tls_or_openssl_until_chap_needs_it():
    """iscsid's RSS is the goal (bench_login_all): ssl (through asyncio) and hashlib each map
    OpenSSL, about 5 and 3.7 MB resident; the daemon needs neither until a CHAP login."""
    code = ("import sys; sys.argv = ['iscsikitd']; import iscsikit.cli.daemon; "
            "import iscsikit.initiator.daemon; from iscsikit.cli import adm_served; adm_served.warm(); "
            "print(sorted(m for m in ('ssl', '_ssl', 'hashlib', '_hashlib', 'hmac', 'ctypes.util') "
            "if sys.modules.get(m)))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert p.stdout.strip() == "[]"
    # and CHAP still works once it is needed: hashlib comes in on first use
    from iscsikit.proto.chap import ChapAlgorithm, chap_response
    from iscsikit.proto.secret import Secret
    import hashlib
    assert chap_response(ChapAlgorithm.SHA256, 7, Secret("s3cret"), b"c") == \
        hashlib.sha256(b"\x07s3cretc").digest()


def test_keys_iscsid_only_stores_stay_out_of_the_login():
    """iscsid 2.1.8 stores node.conn[0].timeo.auth_timeout and err_timeo.host_reset_timeout and
    acts on neither for a session: auth_timeout arms only the alarm of the userspace-socket
    login (usr/io.c iscsi_io_send_pdu/recv_pdu, `if (!session->use_ipc)`: discovery), and
    host_reset_timeout is copied to the session (usr/initiator.c) and never read nor sent
    (no ISCSI_PARAM_HOST_RESET_TMO). So the login request is the same whatever they hold,
    while -o update still stores them (test_adm's record tests)."""
    nid = ndb.NodeId(TARGET, "192.0.2.10", 3260, 1, "default")
    plain = records.login_request(nid, {}, "iqn.2026-11.org.example:host")
    stored = records.login_request(nid, {"node.conn[0].timeo.auth_timeout": "3",
                                         "node.session.err_timeo.host_reset_timeout": "9"},
                                   "iqn.2026-11.org.example:host")
    assert stored == plain
    # the keys issue 14 made real do change it
    keyed = records.login_request(nid, {"node.conn[0].iscsi.MaxXmitDataSegmentLength": "16384",
                                        "node.session.initial_login_retry_max": "0",
                                        "node.session.iscsi.DefaultTime2Wait": "5",
                                        "node.session.iscsi.DefaultTime2Retain": "7"},
                                  "iqn.2026-11.org.example:host")
    assert (keyed["max_xmit_dlength"], keyed["initial_login_retry_max"]) == (16384, 0)
    assert (keyed["operational"]["DefaultTime2Wait"], keyed["operational"]["DefaultTime2Retain"]) == ("5", "7")
    assert (plain["max_xmit_dlength"], plain["initial_login_retry_max"]) == (0, 4)

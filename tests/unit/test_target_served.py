"""The warm iscsikit-target: the C forwarder (-DFORWARD_TARGET) against a real iscsikit-targetd.

The server runs here for real (cli/targetd.py's accept loop on a socket in a
temporary directory, in a thread of this process); an empty directory stands in
for configfs, as in test_target_cli.py. Every command runs twice, through the
forwarder with the server up and through the Python iscsikit-target-local in its
own process: stdout, stderr and the exit code must be the same bytes, and the
server must have run exactly the commands it serves (a refused one is the
fallback's). The guest does the same against LIO (tests/vm/test_target_warm_server.py).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import tomllib
from pathlib import Path

import pytest

from iscsikit.cli import target_served, targetd
from iscsikit.initiator import protocol

from test_daemon_protocol import FORWARDER, forwarder_defines

REPO = Path(__file__).resolve().parents[2]
LOCAL = Path(sys.executable).parent / "iscsikit-target-local"


def test_target_forwarder_constants_are_the_servers():
    define = forwarder_defines("-DFORWARD_TARGET")
    assert define["SERVED_PATH"] == "TARGET_SOCKET" and define["TARGET_SOCKET"] == f'"{target_served.DEFAULT_SOCKET}"'
    assert define["SOCKET_ENV"] == f'"{target_served.SOCKET_ENV}"'
    assert tuple(re.findall(r'"(\w+)"', define["CLI_ENV_KEYS"])) == protocol.TARGET_CLI_ENV
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts[define["FALLBACK"].strip('"')] == scripts["iscsikit-target"] == "iscsikit.cli.target:main"
    assert scripts["iscsikit-targetd"] == "iscsikit.cli.targetd:main"


@pytest.fixture(scope="module")
def world():
    """A 0755 directory (a non-root caller must reach it): the forwarder, its fallback
    beside it, a configfs stand-in, the server's socket."""
    if not shutil.which("gcc"):
        pytest.skip("no gcc on this host (.ci/setup installs it)")
    top = Path(tempfile.mkdtemp(prefix="tserved-"))
    top.chmod(0o755)
    exe = top / "iscsikit-target"
    subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-DFORWARD_TARGET", "-o", str(exe),
                    str(FORWARDER)], check=True)
    # a copy, not a symlink: the kernel's protected_symlinks stops nobody following root's link in /tmp
    shutil.copy(LOCAL, top / "iscsikit-target-local")
    (top / "configfs").mkdir()
    yield top
    shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def server(world, monkeypatch):
    """iscsikit-targetd serving on world/s.sock; .runs counts the commands it ran."""
    path = str(world / "s.sock")
    sock = targetd.listen(path)
    stop = threading.Event()
    runs: list[list[str]] = []
    real = target_served.run

    def counting(argv, *a, **k):
        runs.append(list(argv))
        return real(argv, *a, **k)
    monkeypatch.setattr(target_served, "run", counting)
    t = threading.Thread(target=targetd.serve, args=(sock, stop), daemon=True)
    t.start()
    yield type("Server", (), {"path": path, "runs": runs})
    stop.set()
    t.join(5)
    sock.close()
    os.unlink(path)


def run(world, argv0: str, *args: str, socket_path: str, cwd=None, user=None):
    env = {"PATH": "/usr/bin:/bin", "ISCSIKIT_TARGET_SOCKET": socket_path, "NO_COLOR": "",
           "ISCSIKIT_TARGET_SAVEFILE": str(world / "default.json")}
    pre = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if user == "nobody" else []
    p = subprocess.run([*pre, str(world / argv0), "--configfs", str(world / "configfs"), *args],
                       capture_output=True, env=env, cwd=cwd or world, timeout=60)
    return p.returncode, p.stdout, p.stderr


SERVED = [
    ("ls", "/"), ("ls", "/iscsi"), ("/iscsi", "ls"), ("ls", "/no/such"),
    ("/iscsi", "create", "iqn.2026-11.test:x"),                    # 2: not a valid IQN
    ("/iscsi", "create", "iqn.2024-01.com.ex_ample:x"),
    ("/iscsi", "delete", "iqn.2024-01.com.example:none"),          # 3
    ("/backstores/fileio", "create", "f", "/no/such/dir/f.img", "1M"),
    ("/backstores/ramdisk", "create", "r1", "1000"),
    ("/iscsi/iqn.2024-01.com.example:t/tpg1/luns", "create", "/backstores/fileio/none"),
    ("/iscsi/iqn.2024-01.com.example:t/tpg1/acls", "create", "iqn.2024-01.com.example:h", "bogus=1"),
    ("restoreconfig", "/no/such/file.json"), ("restoreconfig", "a", "b", "c", "d", "e"),
    ("clearconfig",), ("saveconfig", "x", "y"), ("sessions",),
]
NOT_SERVED = [("--json", "ls", "/"), ("/backstores/ramdisk", "delete", "nope"), ("/iscsi", "frobnicate"), ("--help",), ("sessions", "--follow", "--bogus")]


@pytest.mark.parametrize("args", SERVED + NOT_SERVED, ids=lambda a: " ".join(a))
def test_the_warm_path_gives_the_in_process_bytes_and_exit_code(world, server, args):
    before = len(server.runs)
    warm = run(world, "iscsikit-target", *args, socket_path=server.path)
    local = run(world, "iscsikit-target-local", *args, socket_path=server.path)
    assert warm == local
    # the served ones ran in the server, the others in their own process (the fallback)
    assert len(server.runs) - before == (1 if args in SERVED else 0), server.runs[before:]


def test_relative_paths_and_the_save_file_are_the_clients(world, server, tmp_path):
    """saveconfig's relative file is the client's working directory; ISCSIKIT_TARGET_SAVEFILE
    is the client's environment, not the server's."""
    for sub in ("warm", "local"):
        (world / sub).mkdir(exist_ok=True)
        rc, out, err = run(world, "iscsikit-target" if sub == "warm" else "iscsikit-target-local",
                           "saveconfig", "out.json", socket_path=server.path, cwd=world / sub)
        assert rc == 0 and out == b"Configuration saved to out.json\n", err
    assert (world / "warm" / "out.json").read_bytes() == (world / "local" / "out.json").read_bytes()
    rc, out, _ = run(world, "iscsikit-target", "saveconfig", socket_path=server.path)
    assert rc == 0 and out == f"Configuration saved to {world / 'default.json'}\n".encode()
    assert len(server.runs) == 2 and os.environ.get("ISCSIKIT_TARGET_SAVEFILE") is None
    assert os.getcwd() != str(world / "warm")


def test_it_falls_back_in_process_when_the_server_is_down(world):
    args = ("/iscsi", "delete", "iqn.2024-01.com.example:none")
    want = run(world, "iscsikit-target-local", *args, socket_path="/nonexistent")
    assert want[0] == 3 and b"no target" in want[2]
    assert run(world, "iscsikit-target", *args, socket_path=str(world / "none.sock")) == want
    stale = world / "stale.sock"          # a socket file nobody listens on (a killed server)
    targetd.listen(str(stale)).close()
    assert run(world, "iscsikit-target", *args, socket_path=str(stale)) == want


def test_it_serves_root_only(world, server):
    """A non-root caller past the file mode is refused by SO_PEERCRED: its command runs in its
    own process, as itself (a stand-in fallback here: this host's Python may not be nobody's)."""
    os.chmod(server.path, 0o666)
    alone = Path(tempfile.mkdtemp(prefix="tserved-nobody-"))
    try:
        alone.chmod(0o755)
        shutil.copy(world / "iscsikit-target", alone / "iscsikit-target")
        (alone / "iscsikit-target-local").write_text('#!/bin/sh\necho "fallback as $(id -u): $*"\nexit 2\n')
        (alone / "iscsikit-target-local").chmod(0o755)
        got = run(alone, "iscsikit-target", "/iscsi", "create", "iqn.bad", socket_path=server.path, user="nobody")
        assert got == (2, f"fallback as 65534: --configfs {alone / 'configfs'} /iscsi create iqn.bad\n".encode(), b"")
        assert server.runs == []
        assert run(world, "iscsikit-target", "/iscsi", "create", "iqn.bad", socket_path=server.path)[0] == 2
        assert len(server.runs) == 1                  # root is served on the same socket
    finally:
        shutil.rmtree(alone, ignore_errors=True)


def test_a_bad_request_is_refused_and_the_server_goes_on(world, server):
    import socket as socketlib
    for line in (b"not json\n", b'{"v":2,"op":"login","args":{}}\n', b'{"v":1,"op":"cli"}\n',
                 b'{"v":2,"op":"cli","args":{"argv":["x"],"env":{},"tty":[false,false,false],"what":1}}\n',
                 b'{"v":2,"op":"cli","args":{"argv":["x"],"env":{},"tty":[false,false,false]}}\n'):
        with socketlib.socket(socketlib.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(server.path)
            s.sendall(line)
            reply = s.makefile("rb").readline()
            assert b'"ok":false' in reply, (line, reply)
    assert server.runs == []
    assert run(world, "iscsikit-target", "ls", "/", socket_path=server.path)[0] == 0 and len(server.runs) == 1


def test_an_output_larger_than_a_frame_arrives_whole(world, server, monkeypatch):
    """`ls /iscsi` of 1000 targets is more than protocol.MAX_FRAME in one print: it goes in
    frames the forwarder takes (one frame of it made the forwarder give up, exit 18)."""
    from iscsikit.cli import target as cli
    text = "".join(f"o- volume-{i:06d} {'.' * 100} [é {i}]\n" for i in range(30000))
    assert len(text.encode()) > 3 * protocol.MAX_FRAME

    def big(_argv):
        print(text, end="")
        print("warned", file=sys.stderr)
        return 0
    monkeypatch.setattr(cli, "main", big)
    rc, out, err = run(world, "iscsikit-target", "ls", "/", socket_path=server.path)
    assert (rc, out.decode(), err) == (0, text, b"warned\n") and len(server.runs) == 1


def test_ls_on_the_clients_terminal_runs_in_its_own_process(world, server):
    """Colours depend on the client's stdout: `ls` on its terminal goes through configshell,
    which the server never runs; a create on a terminal is still served."""
    import pty

    def on_pty(argv0: str, *args: str, env_extra=None):
        master, slave = pty.openpty()
        env = {"PATH": "/usr/bin:/bin", "ISCSIKIT_TARGET_SOCKET": server.path, "COLUMNS": "100",
               "TERM": "xterm", **(env_extra or {})}
        p = subprocess.run([str(world / argv0), "--configfs", str(world / "configfs"), *args], stdout=slave,
                           stderr=subprocess.PIPE, env=env, cwd=world, timeout=120)
        os.close(slave)
        out = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        os.close(master)
        return p.returncode, out, p.stderr
    before = len(server.runs)
    warm = on_pty("iscsikit-target", "ls", "/")
    assert warm == on_pty("iscsikit-target-local", "ls", "/") and warm[0] == 0
    assert b"\x1b[" in warm[1] and len(server.runs) == before        # coloured, and not served
    plain = on_pty("iscsikit-target", "ls", "/", env_extra={"NO_COLOR": "1"})
    assert b"\x1b[" not in plain[1] and len(server.runs) == before + 1   # no colours: served
    assert on_pty("iscsikit-target", "/iscsi", "create", "iqn.bad")[0] == 2 and len(server.runs) == before + 2

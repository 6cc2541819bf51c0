"""The guest agent's request handling, run on the host (it is plain stdlib code)."""

import base64
import json
import time

from iscsikit.lab import agent


def _b(s):
    return base64.b64decode(s)


def test_run_keeps_rc_stdout_stderr_apart():
    r = agent.run({"sh": "echo out; echo err >&2; exit 3", "timeout": 10})
    assert r["rc"] == 3 and _b(r["stdout"]) == b"out\n" and _b(r["stderr"]) == b"err\n"
    assert r["timed_out"] is False


def test_run_argv_stdin_env_cwd(tmp_path):
    r = agent.run({"argv": ["sh", "-c", 'cat; echo "$X"; pwd'], "stdin": base64.b64encode(b"in\n").decode(),
                   "env": {"X": "y"}, "cwd": str(tmp_path), "timeout": 10})
    assert _b(r["stdout"]).decode().split() == ["in", "y", str(tmp_path)]


def test_timeout_kills_the_whole_process_group():
    t0 = time.monotonic()
    r = agent.run({"sh": "sleep 60 & sleep 60", "timeout": 0.5})
    assert r["timed_out"] is True and r["rc"] != 0
    assert time.monotonic() - t0 < 10


def test_missing_program_is_rc_127():
    r = agent.run({"argv": ["/nonexistent/prog"], "timeout": 5})
    assert r["rc"] == 127 and b"No such file" in _b(r["stderr"])


class FakeChannel:
    def __init__(self):
        self.sent = []

    def send(self, obj):
        self.sent.append(json.loads(json.dumps(obj)))


def test_bad_requests_are_answered_not_fatal():
    chan = FakeChannel()
    agent.serve(chan, b"{not json")
    agent.serve(chan, json.dumps({"id": 7, "op": "format-disk"}).encode())
    agent.serve(chan, json.dumps({"id": 8, "op": "run", "sh": "echo ok", "timeout": 5}).encode())
    assert "error" in chan.sent[0]
    assert chan.sent[1]["id"] == 7 and "KeyError" in chan.sent[1]["error"]
    assert chan.sent[2]["id"] == 8 and _b(chan.sent[2]["stdout"]) == b"ok\n"


def test_spawn_returns_at_once_and_logs(tmp_path):
    log = tmp_path / "log"
    t0 = time.monotonic()
    r = agent.spawn({"sh": "echo started; sleep 0.2; echo done", "log": str(log)})
    assert r["pid"] > 0 and time.monotonic() - t0 < 1
    for _ in range(50):
        if log.exists() and "done" in log.read_text():
            break
        time.sleep(0.1)
    assert log.read_text() == "started\ndone\n"

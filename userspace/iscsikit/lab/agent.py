"""The guest agent: runs commands for the host over a virtio-serial port.

It runs inside the guest as the child of PID 1, with the host's Python and
only the standard library (it starts under `python -I -S`, before anything
else is set up). Protocol, one JSON object per line each way:

  host → guest  {"id": N, "op": "run", "argv": [...] | "sh": "...", "timeout": s,
                 "stdin": b64?, "env": {..}?, "cwd": "..."?}
                {"id": N, "op": "spawn", "argv"|"sh", "log": "/path"?, "env"?, "cwd"?}
                {"id": N, "op": "poweroff"}
  guest → host  {"ready": true, "uptime": s, "kernel": "..."}            (once, first)
                {"id": N, "rc": int, "stdout": b64, "stderr": b64,
                 "timed_out": bool, "seconds": s}                        (run)
                {"id": N, "pid": int}                                    (spawn)
                {"id": N, "error": "..."}                                (a request it cannot serve)

Requests are served concurrently, each in its own thread, so a test can run
a daemon and its client at once; replies carry the request's id.
"""

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time

PORT_NAME = "iscsikit.agent"
# After a timeout the process group is killed; a grandchild that left the group
# may still hold the pipes, so reading what is left is bounded too.
DRAIN_SECONDS = 5
MAX_OUTPUT = 256 << 20


def find_port(name=PORT_NAME):
    base = "/sys/class/virtio-ports"
    for entry in sorted(os.listdir(base)):
        try:
            with open(os.path.join(base, entry, "name")) as f:
                if f.read().strip() == name:
                    return "/dev/" + entry
        except OSError:
            continue
    raise SystemExit("iscsikit agent: no virtio port named " + name)


class Channel:
    def __init__(self, path):
        self.fd = os.open(path, os.O_RDWR)
        self.lock = threading.Lock()
        self.buf = b""

    def send(self, obj):
        data = (json.dumps(obj, separators=(",", ":")) + "\n").encode()
        with self.lock:
            view = memoryview(data)
            while view:
                n = os.write(self.fd, view)
                view = view[n:]

    def lines(self):
        while True:
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                if line.strip():
                    yield line
            chunk = os.read(self.fd, 65536)
            if not chunk:
                # the host closed its end; virtio-serial reports that as EOF until it reconnects
                time.sleep(0.05)
                continue
            self.buf += chunk


def _command(req):
    if "argv" in req:
        return req["argv"], False
    return req["sh"], True


def _env(req):
    env = dict(os.environ)
    env.update(req.get("env") or {})
    return env


def run(req):
    cmd, shell = _command(req)
    timeout = req.get("timeout")
    stdin = base64.b64decode(req["stdin"]) if req.get("stdin") is not None else None
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            cmd, shell=shell, cwd=req.get("cwd") or "/", env=_env(req),
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        )
    except OSError as e:
        return {"rc": 127, "stdout": "", "stderr": base64.b64encode(f"{e}\n".encode()).decode(),
                "timed_out": False, "seconds": 0.0}
    timed_out = False
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            out, err = proc.communicate(timeout=DRAIN_SECONDS)
        except subprocess.TimeoutExpired:
            for pipe in (proc.stdout, proc.stderr):
                pipe.close()
            out, err = b"", b""
            proc.wait()
    return {
        "rc": proc.returncode, "timed_out": timed_out, "seconds": round(time.monotonic() - start, 6),
        "stdout": base64.b64encode(out[:MAX_OUTPUT]).decode(),
        "stderr": base64.b64encode(err[:MAX_OUTPUT]).decode(),
    }


def spawn(req):
    cmd, shell = _command(req)
    log = open(req.get("log") or "/dev/null", "ab")
    try:
        proc = subprocess.Popen(cmd, shell=shell, cwd=req.get("cwd") or "/", env=_env(req),
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    finally:
        log.close()
    # PID 1 reaps it once it exits; the agent does not wait for it.
    threading.Thread(target=proc.wait, daemon=True).start()
    return {"pid": proc.pid}


def poweroff(_req):
    os.sync()
    with open("/proc/sysrq-trigger", "w") as f:
        f.write("o")
    return {}


OPS = {"run": run, "spawn": spawn, "poweroff": poweroff}


def serve(chan, line):
    req = {}
    try:
        req = json.loads(line)
        reply = OPS[req["op"]](req)
    except Exception as e:  # any bad request is answered, never fatal to the agent
        reply = {"error": f"{type(e).__name__}: {e}"}
    reply["id"] = req.get("id") if isinstance(req, dict) else None
    chan.send(reply)


def main():
    chan = Channel(find_port())
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    chan.send({"ready": True, "uptime": uptime, "kernel": os.uname().release})
    for line in chan.lines():
        threading.Thread(target=serve, args=(chan, line), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())

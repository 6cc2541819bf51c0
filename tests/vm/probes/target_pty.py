"""Guest side of proof 6: iscsikit-target's interactive shell on a real pseudo-terminal.

One Python process (each start costs seconds under TCG) forks the shell on a
pty, types at it as a user would (TAB included, so readline's completion
runs for real rather than a completer called by hand), and reports what the
terminal showed as one JSON line.  It removes what it made before reporting.
"""

import fcntl
import json
import os
import pty
import re
import select
import shutil
import stat
import sys
import time

WORK = "/tmp/ikpty"
SAVE = f"{WORK}/saveconfig.json"
SHELL = os.path.join(os.path.dirname(sys.executable), "iscsikit-target")   # this venv's, shared with the guest
LOCK = "/run/lock/iscsikit-target.lock"
ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x08")


class Term:
    """The controlling side of the pty, with an expect-like wait on the screen text."""

    def __init__(self, argv, env):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.environ.update(env)
            os.execv(argv[0], argv)
        self.raw = b""
        self.mark = 0            # waits look only at what came after the last match

    def pump(self, timeout):
        r, _, _ = select.select([self.fd], [], [], timeout)
        if not r:
            return True
        try:
            data = os.read(self.fd, 65536)
        except OSError:          # EIO: the child closed its side
            return False
        self.raw += data
        return bool(data)

    def text(self):
        return ANSI.sub(b"", self.raw).decode(errors="replace")

    def expect(self, pattern, timeout=120.0):
        end = time.monotonic() + timeout
        rx = re.compile(pattern)
        while True:
            m = rx.search(self.text(), self.mark)
            if m:
                self.mark = m.end()
                return m
            if time.monotonic() > end or not self.pump(min(0.5, max(0.0, end - time.monotonic()))):
                m = rx.search(self.text(), self.mark)
                if m:
                    self.mark = m.end()
                    return m
                raise AssertionError(f"no {pattern!r} on the terminal; last output: {self.text()[-600:]!r}")

    def send(self, s):
        os.write(self.fd, s.encode())

    def line_now(self):
        """The text after the last prompt: what readline shows as the edited line."""
        return self.text().rsplit("> ", 1)[-1]

    def finish(self, timeout=120.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end and self.pump(0.5):
            pass
        _, status = os.waitpid(self.pid, 0)
        return os.waitstatus_to_exitcode(status)


def main():
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(f"{WORK}/home")
    out = {}
    env = {"TERM": "xterm", "ISCSIKIT_TARGET_HOME": f"{WORK}/home", "COLUMNS": "120", "LINES": "40"}
    t = Term([SHELL, "--save-file", SAVE], env)
    try:
        t.expect(r"/> $")
        # Path completion: readline rewrites the line in place, so the screen
        # shows the completed word once the TAB is handled.
        t.send("cd /backs\t")
        t.expect(r"cd /backstores/")
        out["path_completion"] = t.line_now()
        t.send("fil\t")
        t.expect(r"fileio")
        t.send("\r")
        t.expect(r"/backstores/fileio> $")
        # Command completion at the new node.
        t.send("cre\t")
        t.expect(r"create ")
        out["command_completion"] = t.line_now()
        t.send(f"p6 {WORK}/p6.img 1M write_back=false\r")
        t.expect(r"Created fileio p6")
        t.expect(r"/backstores/fileio> $")
        # Completion of an object the shell just made (the tree was rebuilt),
        # through our own completer for delete's name.  (`cd p<TAB>` would
        # ring the bell: configshell also offers the keyword `path=` there.)
        t.send("delete p\t")
        t.expect(r"delete p6 ")
        out["object_completion"] = t.line_now()
        t.send("\x15")          # ^U: drop the line, nothing is deleted
        # An idle shell holds no lock: automation can take the manager's lock now.
        fd = os.open(LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            out["lock_free_while_idle"] = True
        except BlockingIOError:
            out["lock_free_while_idle"] = False
        finally:
            os.close(fd)
        out["saved_before_exit"] = os.path.exists(SAVE)
        t.send("exit\r")
        t.expect(r"Saving the configuration to " + re.escape(SAVE))
        out["exit_code"] = t.finish()
    finally:
        if t.pid:
            try:
                os.kill(t.pid, 9)
                os.waitpid(t.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        cleanup()
    st = os.stat(SAVE)
    out["save_mode"] = oct(stat.S_IMODE(st.st_mode))
    saved = json.load(open(SAVE))
    out["saved_objects"] = [(so.get("plugin"), so.get("name"), so.get("dev"), so.get("write_back"))
                            for so in saved.get("storage_objects", [])]
    out["history"] = open(f"{WORK}/home/history.txt").read() if os.path.exists(f"{WORK}/home/history.txt") else ""
    print(json.dumps(out))


def cleanup():
    """Remove p6 (and only it): other vm tests share this guest's LIO."""
    from iscsikit.target.manager import Manager
    Manager().edit(lambda cfg: cfg.storage_objects.pop(("fileio", "p6"), None))


if __name__ == "__main__":
    sys.exit(main())

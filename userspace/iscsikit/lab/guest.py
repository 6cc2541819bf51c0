"""Boot a QEMU guest on the lab kernel and run commands in it through the agent.

    with Guest() as g:                  # boots; always stops QEMU on the way out
        r = g.run("uname -r")           # Result: rc, stdout, stderr apart
        g.run(["modprobe", "iscsi_tcp"], check=True, timeout=60)

QEMU runs in its own session (a Ctrl-C in the terminal reaches us, not it)
and with PR_SET_PDEATHSIG, so even a SIGKILL of this process takes QEMU
with it. Create the Guest in the thread that lives longest (pytest's main
thread): the death signal follows the thread that started QEMU.

    with Guest(init="systemd") as g:    # systemd is PID 1 on the overlay root
        g.run("systemctl start iscsikitd.socket", check=True)
        print(g.journal())              # the journal lines since the last call
        console = g.shutdown()          # a clean `systemctl poweroff`; the console, journal included

    with Guest(init="systemd", root_disk=True) as g:   # what the guest writes lives on a disk
        g.run("systemctl enable some.service", check=True)
        console = g.reboot()            # a clean `systemctl reboot` into a new QEMU, same root
        g.run("systemctl is-active some.service")

With init="systemd" the services the host itself enables (/etc/systemd/system/*.wants)
are masked in the guest: they are the host's, not the lab's (a database, open-iscsi's
iscsid, tgtd ...), and would only slow the boot and hold the kernel's iSCSI.
"""

from __future__ import annotations

import base64
import ctypes
import itertools
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from . import agent as agent_module
from . import cache, initramfs
from .errors import GuestCommandError, GuestError, LabError
from .kernel import Kernel, resolve

PR_SET_PDEATHSIG = 1
# The host waits this much longer than a command's own timeout before it
# decides the agent itself is stuck.
AGENT_GRACE = 30.0
CONSOLE_TAIL = 15
INITS = ("shell", "systemd")
# the root disk's image in the Guest's work folder (Guest(root_disk=True))
ROOT_DISK = "root.img"
# the kernel's command line is at most 2048 bytes on x86 (COMMAND_LINE_SIZE)
CMDLINE_MAX = 2048
# where Guest.journal() keeps its place in the guest's journal
JOURNAL_CURSOR = "/run/iscsikit-lab-journal.cursor"
# masked in a systemd guest besides the host's own services: a console login, and boot
# bookkeeping that costs seconds under TCG and that no test reads; and tmp.mount (a tmpfs
# on /tmp where the distribution enables it): the guest's /tmp is the host's, as under the shell
# init, so that a checkout or pytest folder under /tmp stays visible (initramfs.COVERED)
LAB_MASKED = ("console-getty.service", "systemd-binfmt.service", "proc-sys-fs-binfmt_misc.automount",
              "systemd-update-utmp.service", "systemd-update-utmp-runlevel.service", "tmp.mount")


def host_enabled_services(root: Path = Path("/etc/systemd/system")) -> list[str]:
    """The services, sockets, timers and paths the host's admin enabled (its *.wants and
    *.requires folders), but none of iscsikit's own: the lab masks these under systemd."""
    names = set()
    for folder in list(root.glob("*.wants")) + list(root.glob("*.requires")):
        for unit in folder.iterdir():
            if unit.suffix in (".service", ".socket", ".timer", ".path") and not unit.name.startswith("iscsikit"):
                names.add(unit.name)
    return sorted(names)


@dataclass
class Result:
    command: str
    rc: int
    stdout: bytes
    stderr: bytes
    seconds: float
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.rc == 0 and not self.timed_out

    @property
    def out(self) -> str:
        return self.stdout.decode(errors="replace")

    @property
    def err(self) -> str:
        return self.stderr.decode(errors="replace")


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # The parent may have died between fork and prctl; then nobody would kill us.
    if os.getppid() == 1:
        os._exit(1)


@dataclass
class Guest:
    kernel: Kernel | str | None = None
    memory_mb: int = 2048
    cpus: int = 2
    # TCG by default: /dev/kvm exists on these machines but nested guests hang
    # silently there (-cpu host dies on MSR 0x10a); kvm is for real hosts.
    accel: str = os.environ.get("ISCSIKIT_LAB_ACCEL", "tcg")
    boot_timeout: float = 240.0
    share: Path | None = None           # a host folder the guest may write, at the same path
    extra_append: str = ""
    init: str = "shell"                 # PID 1: a shell (fast), or "systemd" (units, journal, udev)
    # ACPI tables (files, header included) the firmware hands the guest, as a boot ROM leaves
    # an iBFT for iscsi_ibft (QEMU's -acpitable file=)
    acpi_tables: tuple[str, ...] = ()
    # the overlay's upper layer (all the guest writes over the host's root, the guest kernel's
    # modules' included) on an ext4 image in the Guest's work folder instead of a tmpfs, so that
    # reboot() boots the same root again; the image is sparse, removed by close()
    root_disk: bool = False
    root_disk_mb: int = 2048
    qemu: str = "qemu-system-x86_64"

    boots: int = field(default=0, init=False)                 # boots of this Guest (reboot() adds one)
    boot_seconds: float = field(default=0.0, init=False)      # wall time, QEMU start to agent ready
    guest_uptime: float = field(default=0.0, init=False)      # the guest's own uptime at agent ready
    accel_used: str = field(default="", init=False)

    def __post_init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._sock: socket.socket | None = None
        self._workdir: Path | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, Future] = {}
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self._dead: str | None = None

    # ---- lifecycle -------------------------------------------------------
    def __enter__(self) -> "Guest":
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def console_log(self) -> Path | None:
        return self._workdir / "console.log" if self._workdir else None

    def _argv(self, kernel: Kernel, initrd: Path, sock: Path) -> list[str]:
        accel = self.accel
        if accel not in ("tcg", "kvm"):
            raise LabError(f"unknown accelerator {accel!r}", "use tcg or kvm")
        self.accel_used = accel
        if self.init not in INITS:
            raise LabError(f"unknown init {self.init!r}", "use shell or systemd")
        systemd = []
        if self.init == "systemd":
            # the journal also goes to the console (kept by shutdown()), so the lines of a
            # shutdown, after the agent has gone, can still be read from the host
            masks = ",".join([*host_enabled_services(), *LAB_MASKED])
            systemd = ["ik.init=systemd", "systemd.unit=multi-user.target", "systemd.journald.forward_to_console=1",
                       f"ik.mask={masks}"]
        agent = Path(agent_module.__file__).resolve()
        self._check_visible(agent)
        append = " ".join([
            "console=ttyS0", "quiet", "panic=-1", "mitigations=off",
            f"ik.modules={kernel.modules}",
            f"ik.python={sys.executable}",
            f"ik.agent={agent}",
            *( [f"ik.share={self.share}"] if self.share else [] ),
            *systemd,
            *( ["ik.upper=disk"] if self.root_disk else [] ),
            self.extra_append,
        ]).strip()
        if len(append) >= CMDLINE_MAX:
            raise LabError(f"the guest's kernel command line is {len(append)} bytes (at most {CMDLINE_MAX - 1})",
                           "enable fewer services on the host, or boot with init='shell'")
        for value in (str(kernel.modules), sys.executable, str(self.share or "")):
            if any(c.isspace() for c in value):
                raise LabError(f"path {value!r} has white space, which the kernel command line cannot carry",
                               "use a cache folder, Python and share path without spaces")
        argv = [
            self.qemu, "-accel", accel, "-cpu", "host" if accel == "kvm" else "max",
            "-m", str(self.memory_mb), "-smp", str(self.cpus),
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-serial", f"file:{self._workdir / 'console.log'}",
            "-kernel", str(kernel.image), "-initrd", str(initrd), "-append", append,
            "-virtfs", f"local,path=/,mount_tag={initramfs.ROOT_TAG},security_model=none,readonly=on,multidevs=remap",
            "-device", "virtio-serial-pci",
            "-chardev", f"socket,id=ikagent,path={sock},server=on,wait=off",
            "-device", f"virtserialport,chardev=ikagent,name={agent_module.PORT_NAME}",
            "-device", "virtio-rng-pci",
        ]
        for table in self.acpi_tables:
            if "," in str(table):
                raise LabError(f"ACPI table path {table!r} has a comma, which QEMU's -acpitable cannot carry",
                               "write the table to a path without commas")
            argv += ["-acpitable", f"file={table}"]
        if self.root_disk:
            # cache=unsafe: the guest's flushes stop at QEMU's host file; a QEMU that ends
            # (the guest rebooted or powered off) has written everything into it
            argv += ["-drive", f"file={self._workdir / ROOT_DISK},format=raw,if=virtio,cache=unsafe"]
        if self.share:
            argv += ["-virtfs", f"local,path={self.share},mount_tag={initramfs.SHARE_TAG},security_model=none,multidevs=remap"]
        return argv

    @staticmethod
    def _check_visible(agent: Path) -> None:
        """Refuse, before booting, a Python or agent the guest would not see: one under a
        folder where the guest's /init mounts a filesystem of its own (initramfs.COVERED)."""
        for what, path in (("the Python", sys.executable), ("the Python", os.path.realpath(sys.executable)),
                           ("the lab agent", str(agent))):
            top = initramfs.covered(path)
            if top is not None:
                raise LabError(f"{what} {path} lies under {top}, which the guest mounts a filesystem of its own over",
                               f"run the lab from a checkout and a Python outside {', '.join(initramfs.COVERED)}")

    def start(self) -> None:
        if shutil.which(self.qemu) is None:
            raise LabError(f"{self.qemu} not found", "install Debian's qemu-system-x86 package")
        kernel = self.kernel if isinstance(self.kernel, Kernel) else resolve(self.kernel)
        self.kernel = kernel
        self._initrd = initramfs.build(kernel)
        self._workdir = Path(tempfile.mkdtemp(prefix="iscsikit-lab-"))
        if self.root_disk:
            self._make_root_disk()
        self._boot()

    def _make_root_disk(self) -> None:
        """An empty ext4 filesystem in a sparse file (mke2fs needs no root for a file)."""
        mkfs = shutil.which("mkfs.ext4") or shutil.which("mkfs.ext4", path="/usr/sbin:/sbin")
        if mkfs is None:
            raise LabError("mkfs.ext4 not found (needed for Guest(root_disk=True))", "install Debian's e2fsprogs package")
        image = self._workdir / ROOT_DISK
        with open(image, "wb") as f:
            f.truncate(self.root_disk_mb << 20)
        # inode tables and journal written now, on the host (lazy init would be a kernel thread
        # zeroing them in the guest, under TCG); a small journal, few inodes: the upper layer
        # holds what the tests change, not a system
        proc = subprocess.run([mkfs, "-q", "-F", "-N", "65536", "-J", "size=16", "-E",
                               "lazy_itable_init=0,lazy_journal_init=0", "-L", "iscsikit-lab", str(image)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise LabError(f"mkfs.ext4 {image} failed: {proc.stderr.strip()}", "check free space in the temporary folder")

    def _boot(self) -> None:
        """Start QEMU on the Guest's kernel, initramfs and work folder; wait for the agent."""
        sock = self._workdir / "agent.sock"
        sock.unlink(missing_ok=True)
        argv = self._argv(self.kernel, self._initrd, sock)
        self._ids = itertools.count(1)
        self._pending, self._dead = {}, None
        t0 = time.monotonic()
        self._proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(self._workdir / "qemu.stderr", "wb"),
            start_new_session=True, preexec_fn=_die_with_parent,
        )
        self._connect(sock, t0)
        ready = self._read_ready(t0)
        self.boot_seconds = time.monotonic() - t0
        self.guest_uptime = float(ready.get("uptime", 0.0))
        self.boots += 1
        self._reader = threading.Thread(target=self._read_replies, name="lab-agent-reader", daemon=True)
        self._reader.start()

    def _failure(self, cause: str) -> GuestError:
        """An error whose first line is the cause and where the guest's last words are kept."""
        tail, kept = "", ""
        for name in ("qemu.stderr", "console.log"):
            try:
                text = (self._workdir / name).read_text(errors="replace")
            except (OSError, TypeError):
                continue
            kept += f"--- {name} ---\n{text}\n"
            lines = [l for l in text.strip().splitlines() if l.strip()][-CONSOLE_TAIL:]
            if lines:
                tail += f"\n--- {name} (last lines) ---\n" + "\n".join(lines)
        fix = "see the guest's console"
        if kept:
            log = cache.cache_root() / "logs" / "last-failed-guest.log"
            try:
                log.parent.mkdir(parents=True, exist_ok=True)
                log.write_text(kept)
                fix = f"see the guest's console in {log}"
            except OSError:
                pass
        err = GuestError(cause, fix)
        err.args = (str(err) + tail,)
        return err

    def _exited(self, grace: float = 3.0) -> bool:
        try:
            self._proc.wait(timeout=grace)
            return True
        except subprocess.TimeoutExpired:
            return False

    def _connect(self, sock: Path, t0: float) -> None:
        while True:
            if self._proc.poll() is not None:
                raise self._failure(f"QEMU exited with {self._proc.returncode} before the guest booted")
            if sock.exists():
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    s.connect(str(sock))
                    self._sock = s
                    return
                except OSError:
                    s.close()
            if time.monotonic() - t0 > 30:
                raise self._failure("QEMU did not open the agent socket within 30 s")
            time.sleep(0.02)

    def _read_ready(self, t0: float) -> dict:
        self._buf = b""
        self._sock.settimeout(1.0)
        while True:
            if b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                msg = json.loads(line)
                if msg.get("ready"):
                    return msg
                continue
            if self._proc.poll() is not None:
                raise self._failure(f"the guest stopped (QEMU exit {self._proc.returncode}) before its agent answered")
            failed = self._agent_unit_failed()
            if failed:
                raise self._failure(f"the guest's {initramfs.AGENT_UNIT} failed: {failed}")
            if time.monotonic() - t0 > self.boot_timeout:
                raise self._failure(f"the guest's agent did not answer within {self.boot_timeout:.0f} s "
                                    f"(kernel {self.kernel.version}, accel {self.accel_used})")
            try:
                chunk = self._sock.recv(65536)
            except socket.timeout:
                continue
            except OSError as e:
                chunk = b""
                why = str(e)
            else:
                why = "closed"
            if not chunk:
                if self._exited():
                    raise self._failure(f"the guest stopped (QEMU exit {self._proc.returncode}) "
                                        "before its agent answered")
                raise self._failure(f"the agent socket broke during boot ({why})")
            self._buf += chunk

    def _agent_unit_failed(self) -> str:
        """Under systemd, the console's line saying the agent's unit could not start (its
        journal is forwarded there), so that the boot fails at once, not after boot_timeout."""
        if self.init != "systemd":
            return ""
        try:
            text = (self._workdir / "console.log").read_text(errors="replace")
        except OSError:
            return ""
        if f"{initramfs.AGENT_UNIT}: Failed with result" not in text:
            return ""
        lines = [l.strip() for l in text.splitlines() if initramfs.AGENT_UNIT in l and "Started" not in l]
        return " / ".join(lines[:3])

    def _read_replies(self) -> None:
        self._sock.settimeout(None)
        buf = self._buf
        try:
            while True:
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    msg = json.loads(line)
                    with self._lock:
                        fut = self._pending.pop(msg.get("id"), None)
                    if fut is not None:
                        fut.set_result(msg)
                chunk = self._sock.recv(1 << 20)
                if not chunk:
                    break
                buf += chunk
        except (OSError, ValueError) as e:
            self._dead = f"agent channel broke: {e}"
        self._dead = self._dead or "the guest closed the agent channel"
        with self._lock:
            pending, self._pending = self._pending, {}
        for fut in pending.values():
            fut.set_exception(self._failure(self._dead))

    def close(self) -> None:
        """Stop QEMU for sure: ask the guest to power off, then kill what is left."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            if self._sock is not None and self._dead is None:
                try:
                    self._request({"op": "poweroff"}, wait=False)
                    proc.wait(timeout=5)
                except Exception:
                    pass
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    # ---- commands --------------------------------------------------------
    def _request(self, req: dict, wait: bool = True, timeout: float | None = None) -> dict | None:
        if self._dead:
            raise self._failure(self._dead)
        if self._sock is None:
            raise GuestError("the guest is not running")
        req["id"] = next(self._ids)
        fut: Future = Future()
        with self._lock:
            self._pending[req["id"]] = fut
        data = (json.dumps(req) + "\n").encode()
        self._sock.sendall(data)
        if not wait:
            return None
        try:
            reply = fut.result(timeout=timeout)
        except TimeoutError:
            with self._lock:
                self._pending.pop(req["id"], None)
            raise self._failure(f"the guest agent did not answer {req.get('op')} within {timeout:.0f} s") from None
        if "error" in reply:
            raise GuestError(f"the guest agent refused {req.get('op')}: {reply['error']}")
        return reply

    @staticmethod
    def _command(cmd: str | list[str]) -> dict:
        return {"sh": cmd} if isinstance(cmd, str) else {"argv": [str(a) for a in cmd]}

    def run(self, cmd: str | list[str], *, timeout: float = 120.0, check: bool = False,
            input: bytes | str | None = None, env: dict | None = None, cwd: str | None = None) -> Result:
        """Run a command (a list: exec; a string: /bin/sh -c) and return its exit code and output."""
        req = {"op": "run", "timeout": timeout, "env": env, "cwd": cwd, **self._command(cmd)}
        if input is not None:
            req["stdin"] = base64.b64encode(input.encode() if isinstance(input, str) else input).decode()
        reply = self._request(req, timeout=timeout + AGENT_GRACE)
        res = Result(
            command=cmd if isinstance(cmd, str) else shlex.join(cmd),
            rc=reply["rc"], stdout=base64.b64decode(reply["stdout"]), stderr=base64.b64decode(reply["stderr"]),
            seconds=reply["seconds"], timed_out=reply["timed_out"],
        )
        if check and not res.ok:
            raise GuestCommandError(res)
        return res

    def run_probe(self, script: str | os.PathLike, *, timeout: float = 900.0, env: dict | None = None) -> dict:
        """Run a Python script of the host's tree with the host's interpreter and return the
        JSON object its last stdout line holds (many checks for one Python start).
        GuestCommandError (its .result keeps the whole stderr) if the script fails."""
        r = self.run([sys.executable, str(script)], timeout=timeout, env=env, check=True)
        return json.loads(r.out.strip().splitlines()[-1])

    def spawn(self, cmd: str | list[str], *, log: str | None = None, env: dict | None = None,
              cwd: str | None = None) -> int:
        """Start a background process in the guest (its output to `log`); return its pid."""
        reply = self._request({"op": "spawn", "log": log, "env": env, "cwd": cwd, **self._command(cmd)}, timeout=60)
        return reply["pid"]

    def journal(self, *args: str, timeout: float = 60.0) -> str:
        """The guest's journal (init="systemd") since the previous call, or since this boot on the first;
        `args` go to journalctl (e.g. "-u", "iscsikit-login.service")."""
        if self.init != "systemd":
            raise GuestError("the journal needs Guest(init='systemd')")
        # this boot's lines only, unless the caller names a boot: the journal is persistent
        # (the host's /var/log/journal is in the lower layer, its own boots' lines with it, and
        # a root disk keeps the guest's earlier boots')
        boot = [] if any(a in ("-b", "--boot") or a.startswith(("-b", "--boot=")) for a in args) else ["-b"]
        r = self.run(["journalctl", "--no-pager", "-o", "short-monotonic", "--cursor-file", JOURNAL_CURSOR,
                      *boot, *args],
                     timeout=timeout)
        if r.rc not in (0, 1):   # 1: nothing new since the cursor
            raise GuestCommandError(r)
        return r.out

    def shutdown(self, timeout: float = 180.0) -> str:
        """Power the guest off cleanly (`systemctl poweroff`: every unit is stopped in order) and
        return its console, which holds the journal up to the end; the Guest is closed after."""
        if self.init != "systemd":
            raise GuestError("a clean shutdown needs Guest(init='systemd')")
        self.spawn(["systemctl", "poweroff", "--no-block"])
        try:
            self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise self._failure(f"the guest did not power off within {timeout:.0f} s") from None
        text = (self._workdir / "console.log").read_text(errors="replace")
        self.close()
        return text

    def reboot(self, timeout: float = 180.0) -> str:
        """Reboot cleanly (`systemctl reboot`: every unit is stopped in order) into the same root,
        and return the console of the boot that ended (its journal up to the end, shutdown included).

        QEMU runs with -no-reboot, so the guest's reboot ends it; the next boot is a new QEMU on
        the same kernel, initramfs and root disk (Guest(root_disk=True)), its agent ready when
        this returns. On a tmpfs upper layer a reboot would lose all the guest wrote: refused."""
        if self.init != "systemd":
            raise GuestError("a clean reboot needs Guest(init='systemd')")
        if not self.root_disk:
            raise GuestError("a reboot would lose what the guest wrote: its overlay's upper layer is a tmpfs",
                             "boot it with Guest(root_disk=True)")
        self.spawn(["systemctl", "reboot", "--no-block"])
        try:
            self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise self._failure(f"the guest did not reboot within {timeout:.0f} s") from None
        if self._proc.returncode != 0:
            raise self._failure(f"QEMU exited with {self._proc.returncode} on the guest's reboot")
        # the agent channel is gone with QEMU: the reader fails what was pending, then ends
        self._reader.join(timeout=10)
        self._sock.close()
        self._sock = None
        console = self._workdir / "console.log"
        text = console.read_text(errors="replace")
        console.rename(self._workdir / f"console-{self.boots}.log")
        self._boot()
        return text

    def uptime(self) -> float:
        return float(self.run(["cat", "/proc/uptime"], check=True).out.split()[0])

    def modprobe(self, *modules: str, timeout: float = 120.0) -> None:
        """Load modules; mount configfs once it is loaded (systemd would, the lab has none)."""
        self.run(["modprobe", "-a", *modules], check=True, timeout=timeout)
        if "configfs" in modules or any(m.startswith(("target_core", "iscsi_target")) for m in modules):
            self.run("mountpoint -q /sys/kernel/config || mount -t configfs configfs /sys/kernel/config",
                     check=True)

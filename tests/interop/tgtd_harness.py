"""Run a private tgtd on 127.0.0.1 and configure it with tgtadm (interop-facts.md §4).

Used by tests/interop (a module-scoped fixture) and by bench/. The daemon gets
its own IPC socket and a free port (never 3260, where LIO listens), and is
killed by PID however the caller exits.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "vm", "probes"))
import matrix  # noqa: E402

from iscsikit.initiator import nodedb as ndb, records  # noqa: E402
from iscsikit.initiator.login_io import login  # noqa: E402

TGTD = shutil.which("tgtd") or "/usr/sbin/tgtd"
TGTADM = shutil.which("tgtadm") or "/usr/sbin/tgtadm"
IQN_PREFIX = "iqn.2024-01.org.iscsikit.test"


def available() -> bool:
    return os.path.exists(TGTD) and os.path.exists(TGTADM)


def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port != 3260:
            return port


class Tgtd:
    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.env = dict(os.environ, TGT_IPC_SOCKET=str(self.workdir / "tgtd.sock"))
        self.proc: subprocess.Popen | None = None
        self.log = self.workdir / "tgtd.log"

    @property
    def portal(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def start(self, timeout: float = 10.0) -> "Tgtd":
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [TGTD, "-f", "--iscsi", f"portal=127.0.0.1:{self.port}"], env=self.env,
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tgtd exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                socket.create_connection(self.portal, timeout=0.2).close()
                if self._tgtadm("--op", "show", "--mode", "target", check=False).returncode == 0:
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"tgtd did not come up on {self.portal}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self._tgtadm("--op", "delete", "--mode", "system", check=False, timeout=3)
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self.proc = None

    def __enter__(self) -> "Tgtd":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _tgtadm(self, *args: str, check: bool = True, timeout: float = 10) -> subprocess.CompletedProcess:
        proc = subprocess.run([TGTADM, "--lld", "iscsi", *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"tgtadm {' '.join(args)}: {proc.stderr.strip()}")
        return proc

    # -- configuration recipes (facts §4.2, §4.3) ------------------------------

    def add_target(self, tid: int, name: str, *, lun_size: int = 16 << 20, **params: str) -> str:
        iqn = f"{IQN_PREFIX}:{name}"
        self._tgtadm("--op", "new", "--mode", "target", "--tid", str(tid), "-T", iqn)
        if lun_size:
            image = self.workdir / f"lun-{tid}.img"
            with open(image, "wb") as f:
                f.truncate(lun_size)
            self._tgtadm("--op", "new", "--mode", "logicalunit", "--tid", str(tid), "--lun", "1",
                         "-b", str(image))
        self._tgtadm("--op", "bind", "--mode", "target", "--tid", str(tid), "-I", "ALL")
        for key, value in params.items():
            self.set_param(tid, key, value)
        return iqn

    def set_param(self, tid: int, name: str, value: str) -> None:
        self._tgtadm("--op", "update", "--mode", "target", "--tid", str(tid), "-n", name, "-v", value)

    def add_account(self, user: str, password: str) -> None:
        self._tgtadm("--op", "new", "--mode", "account", "--user", user, "--password", password)

    def bind_account(self, user: str, tid: int | None = None, *, outgoing: bool = False) -> None:
        """Without `tid` the account guards discovery (tgt's global TID)."""
        args = ["--op", "bind", "--mode", "account", "--user", user]
        if tid is not None:
            args += ["--tid", str(tid)]
        if outgoing:
            args.append("--outgoing")
        self._tgtadm(*args)

    def unbind_account(self, user: str, tid: int | None = None, *, outgoing: bool = False) -> None:
        args = ["--op", "unbind", "--mode", "account", "--user", user]
        if tid is not None:
            args += ["--tid", str(tid)]
        if outgoing:
            args.append("--outgoing")
        self._tgtadm(*args)


# -- issue 14's negotiation matrix against tgtd ------------------------------------

TEST_UNIT_READY = bytes(6)


def _rw10(opcode: int, offset: int, length: int) -> bytes:
    lba, blocks = offset // 512, length // 512
    return bytes([opcode, 0]) + lba.to_bytes(4, "big") + b"\x00" + blocks.to_bytes(2, "big") + b"\x00"


def _negotiated(session) -> dict:
    """The session's parameters, by the names the initiator's sysfs gives them."""
    p = session.parameters
    n = p.negotiated
    yes_no = {True: "Yes", False: "No"}
    return {"initial_r2t": yes_no[n["InitialR2T"]], "immediate_data": yes_no[n["ImmediateData"]],
            "first_burst_len": n["FirstBurstLength"], "max_burst_len": n["MaxBurstLength"],
            "max_recv_dlength": p.max_recv_data_segment, "max_xmit_dlength": p.max_xmit_data_segment}


def matrix_row(tgtd, iqn: str, tid: int, row: dict, seed: int) -> dict:
    """One row of issue 14's negotiation matrix (tests/vm/probes/matrix.py): the row's target
    values set on tid, its initiator values in a node record that records.login_request
    turns into the offer; log in (userspace), write 8 MiB in mixed block sizes through
    proto's WriteExchange, read it back. What happened, as data."""
    sides = matrix.sides(row)
    for key, value in sides["target"].items():
        tgtd.set_param(tid, key, str(value))
    nid = ndb.NodeId(iqn, "127.0.0.1", tgtd.port, 1, "default")
    values = {matrix.RECORD_KEYS[k]: str(v) for k, v in sides["initiator"].items()}
    offer = records.login_request(nid, values)["operational"]
    res = {"extents": 0, "bad": []}
    with login(tgtd.portal, iqn, operational=offer) as session:
        res["negotiated"] = _negotiated(session)
        session.scsi(TEST_UNIT_READY, lun=1)          # the power-on unit attention
        t0 = time.monotonic()
        for off, length in matrix.extents():
            data = matrix.pattern(seed, off, length)
            result = session.write(_rw10(0x2A, off, length), data, lun=1)
            if result.status != 0:
                res["bad"].append(off)
            res["extents"] += 1
        t1 = time.monotonic()
        for off, length in matrix.extents():
            result = session.scsi(_rw10(0x28, off, length), lun=1, expected_length=length)
            if result.status != 0 or result.data != matrix.pattern(seed, off, length):
                res["bad"].append(off)
        res["write_s"], res["read_s"] = round(t1 - t0, 3), round(time.monotonic() - t1, 3)
        session.logout()
    return res

"""A hostile iSCSI target for tests: a TCP server on 127.0.0.1 whose every connection is
played by one scripted case (issue 20). Used on the host (discovery, and logins through a
daemon on kernel/fake.py) and in the guest (logins through the real kernel), where it also
stands in front of LIO as a redirector (0x0101, then 0x0102) and as a proxy that corrupts
one header digest right after the login.

    python tests/unit/hostile_target.py CASE PORT [UPSTREAM_PORT]    # serves until killed

The good parts of a login (negotiation) are proto_fake_target.FakeTarget's; each case says
where it stops being good. Nothing here is iscsikit's own initiator code.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from iscsikit.proto.keys import encode_text  # noqa: E402
from iscsikit.proto.pdu import (INITIATOR_OPCODES, LoginRequest, LoginResponse, NopIn,  # noqa: E402
                                TextRequest, TextResponse)
from iscsikit.proto.reader import PduReader  # noqa: E402

from proto_fake_target import FakeTarget  # noqa: E402

TARGET = "iqn.2026-11.org.example:hostile"


class Peer:
    """One initiator connection, PDU by PDU."""

    def __init__(self, conn: socket.socket, server: "HostileTarget"):
        self.conn, self.server = conn, server
        self.reader = PduReader(accept=INITIATOR_OPCODES, max_data_segment=1 << 20)
        self.statsn = 1000

    def recv(self, timeout: float = 60):
        self.conn.settimeout(timeout)
        while (pdu := self.reader.next_pdu()) is None:
            chunk = self.conn.recv(65536)
            if not chunk:
                raise EOFError
            self.reader.feed(chunk)
        return pdu

    def send(self, pdu_or_bytes) -> None:
        self.conn.sendall(pdu_or_bytes if isinstance(pdu_or_bytes, bytes) else pdu_or_bytes.encode())

    def login_response(self, req: LoginRequest, *, status=(0, 0), data=b"", **fields) -> LoginResponse:
        self.statsn += 1
        return LoginResponse(**{"transit": False, "csg": req.csg, "nsg": 0, "isid": req.isid, "tsih": 0,
                                "itt": req.itt, "statsn": self.statsn, "expcmdsn": req.cmdsn,
                                "maxcmdsn": req.cmdsn + 1, "status_class": status[0],
                                "status_detail": status[1], "data": data, **fields})

    def good_login(self, **script) -> LoginRequest:
        """A correct login (FakeTarget's) up to Full Feature Phase; the last request."""
        target = FakeTarget(**script)
        while True:
            req = self.recv()
            rsp = target.handle(req)
            self.send(rsp)
            if rsp.transit and rsp.nsg == 3 and rsp.status_class == 0:
                self.statsn = rsp.statsn
                return req

    def text_request(self) -> TextRequest:
        while not isinstance(pdu := self.recv(), TextRequest):
            pass
        return pdu

    def text_response(self, req: TextRequest, data=b"", *, final=True, ttt=0xFFFFFFFF) -> TextResponse:
        self.statsn += 1
        return TextResponse(final=final, itt=req.itt, ttt=ttt, statsn=self.statsn,
                            expcmdsn=req.cmdsn + 1, maxcmdsn=req.cmdsn + 8, data=data)

    def nop_in(self) -> NopIn:
        # unsolicited, asking for an answer (TTT set): RFC 7143 §11.19
        return NopIn(itt=0xFFFFFFFF, ttt=0x77, statsn=self.statsn + 1, expcmdsn=0, maxcmdsn=8)

    def hold(self) -> None:
        """Say nothing until the initiator goes away."""
        self.conn.settimeout(None)
        while self.conn.recv(65536):
            pass


# ---- the cases: what the target does on each connection -----------------------------------
def _silent(p: Peer) -> None:
    p.hold()


def _close(p: Peer) -> None:
    p.recv()


def _garbage(p: Peer) -> None:
    p.recv()
    p.send(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n" * 4)
    p.hold()


def _huge_segment(p: Peer) -> None:
    req = p.recv()
    wire = bytearray(p.login_response(req).encode())
    wire[5:8] = (0xFFFFFF).to_bytes(3, "big")      # "16 MiB of login text follow"
    p.send(bytes(wire))
    p.hold()


def _trickle(p: Peer) -> None:
    """A valid first Login Response, one byte every 0.5 s (each byte restarts a per-read timer)."""
    req = p.recv()
    for b in p.login_response(req, data=encode_text([("TargetPortalGroupTag", "1")])).encode():
        p.send(bytes([b]))
        time.sleep(0.5)
    p.hold()


def _never_final(p: Peer) -> None:
    """Every request answered with an empty T=0 response: the login never ends by itself."""
    while True:
        p.send(p.login_response(p.recv()))


def _nop_during_login(p: Peer) -> None:
    p.recv()
    while True:
        p.send(p.nop_in())
        time.sleep(0.01)


def _redirect(address: str):
    def case(p: Peer) -> None:
        req = p.recv()
        p.send(p.login_response(req, status=(1, 1), data=encode_text([("TargetAddress", address)])))
        p.hold()
    return case


def _redirect_loop(p: Peer) -> None:
    _redirect(f"127.0.0.1:{p.server.port},1")(p)


def _bad_key(p: Peer) -> None:
    """MaxRecvDataSegmentLength written with a superscript digit (str.isdigit() says yes, int() no)."""
    p.good_login(declare={"MaxRecvDataSegmentLength": "8\u00b2"})
    p.hold()


def _chap_bad_ident(p: Peer) -> None:
    """CHAP_I of "²" (the case that ended in exit 16 inside the daemon)."""
    def reply(target, req, keys):
        keys = dict(keys)
        if "AuthMethod" in keys:
            return target._rsp(req, encode_text([("AuthMethod", "CHAP")]))
        return target._rsp(req, encode_text([("CHAP_A", "5"), ("CHAP_I", "\u00b2"), ("CHAP_C", "0x" + "11" * 16)]))
    p.good_login(target_reply=reply)
    p.hold()


def _after_login(then):
    def case(p: Peer) -> None:
        p.good_login()
        then(p, p.text_request())
    return case


def _st_continue_forever(p: Peer, req: TextRequest) -> None:
    while True:
        p.send(p.text_response(req, final=False, ttt=0x1234))
        req = p.text_request()


def _st_nop_flood(p: Peer, _req: TextRequest) -> None:
    while True:
        p.send(p.nop_in())
        time.sleep(0.01)


def _st_nop_slow(p: Peer, _req: TextRequest) -> None:
    """A NOP-In every second and never the answer: each would restart a per-PDU timer."""
    while True:
        p.send(p.nop_in())
        time.sleep(1)


def _st_oversize(p: Peer, req: TextRequest) -> None:
    piece = encode_text([("TargetName", "iqn.2026-11.org.example:" + "x" * 180)] * 40)
    while True:
        p.send(p.text_response(req, piece, final=False, ttt=0x99))
        req = p.text_request()


def _st_reply(pairs):
    def then(p: Peer, req: TextRequest) -> None:
        p.send(p.text_response(req, encode_text(pairs)))
        p.hold()
    return then


def _st_wrong_itt(p: Peer, req: TextRequest) -> None:
    p.statsn += 1
    p.send(TextResponse(final=True, itt=req.itt ^ 0x5A5A, ttt=0xFFFFFFFF, statsn=p.statsn,
                        expcmdsn=req.cmdsn + 1, maxcmdsn=req.cmdsn + 8,
                        data=encode_text([("TargetName", TARGET)])))
    p.hold()


CASES = {
    "silent": _silent,
    "close": _close,
    "garbage": _garbage,
    "huge_segment": _huge_segment,
    "trickle": _trickle,
    "never_final": _never_final,
    "nop_during_login": _nop_during_login,
    "redirect_loop": _redirect_loop,
    "redirect_bad_port": _redirect("127.0.0.1:70000,1"),
    "redirect_nonascii_port": _redirect("127.0.0.1:3\u00b260,1"),
    "redirect_bad_host": _redirect("-bad-.example..:3260,1"),
    "bad_key": _bad_key,
    "chap_bad_ident": _chap_bad_ident,
    "st_continue_forever": _after_login(_st_continue_forever),
    "st_nop_flood": _after_login(_st_nop_flood),
    "st_nop_slow": _after_login(_st_nop_slow),
    "st_oversize": _after_login(_st_oversize),
    "st_nonascii_port": _after_login(_st_reply([("TargetName", TARGET), ("TargetAddress", "127.0.0.1:3\u00b260,1")])),
    "st_address_first": _after_login(_st_reply([("TargetAddress", "127.0.0.1:3260,1"), ("TargetName", TARGET)])),
    "st_bad_tag": _after_login(_st_reply([("TargetName", TARGET), ("TargetAddress", "127.0.0.1:3260,99999")])),
    "st_wrong_itt": _after_login(_st_wrong_itt),
}


# What an initiator must answer to each case that fails in the login phase, on the host (a
# daemon on kernel/fake.py) and in the guest (the real kernel) alike: (open-iscsi's exit code,
# words of the reason, the bound in seconds beyond the test's own allowance; None: the login
# timer's). 8 is open-iscsi's code for a login that timed out (bench/results/hostile.md).
LOGIN_PHASE = {
    "silent": (8, "timed out during login", None),
    "trickle": (8, "timed out during login", None),
    "close": (4, "closed the connection during login", 1),
    "garbage": (5, "protocol error", 1),
    "huge_segment": (5, "exceeds our MaxRecvDataSegmentLength", 1),
    "never_final": (5, "did not finish in 32 exchanges", 2),
    "nop_during_login": (5, "unexpected PDU during login", 1),
    "redirect_loop": (5, "more than 4 redirects", 2),
    "redirect_bad_port": (5, "bad port", 1),
    "redirect_nonascii_port": (5, "bad port", 1),
    "bad_key": (5, "MaxRecvDataSegmentLength: bad numerical value", 1),
}


def bounds(table: dict, timer: float) -> dict:
    """`table` with each None bound replaced by the login timer the test set."""
    return {case: (code, words, timer if bound is None else bound) for case, (code, words, bound) in table.items()}


def check_refusal(case: str, table: dict, code: int, text: str, seconds: float, allowance: float) -> None:
    """The checks every hostile case shares, wherever it ran: open-iscsi's exit code, within
    its bound plus `allowance` (the host's slack, or the guest's measured CLI cost), a message
    naming the fault, and never a traceback."""
    want_code, words, bound = table[case]
    assert (code, seconds <= bound + allowance) == (want_code, True), (case, code, round(seconds, 2), text)
    assert words in text, (case, text)
    assert "Traceback" not in text and "internal error" not in text, (case, text)


class HostileTarget:
    """Serve `case` on 127.0.0.1:`port` (0: any free port), one thread per connection."""

    def __init__(self, case, port: int = 0, host: str = "127.0.0.1"):
        self.case = CASES[case] if isinstance(case, str) else case
        self.listener = socket.create_server((host, port), reuse_port=False)
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            self._open.append(conn)
            threading.Thread(target=self._serve, args=(conn, self.connections), daemon=True).start()

    def _serve(self, conn: socket.socket, n: int) -> None:
        with conn:
            try:
                peer = Peer(conn, self)
                peer.n = n
                self.case(peer)
            except (OSError, EOFError, ValueError):
                pass

    def close(self) -> None:
        # shutdown first: close() alone leaves a listener that a thread blocks in accept() on
        # still listening (Linux), and the port taken
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        for c in self._open:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> "HostileTarget":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---- in front of a real target (the guest's LIO) ------------------------------------------------
def redirector(upstream: str):
    """The first connection is redirected temporarily (0x0101), every later one permanently
    (0x0102), to `upstream` (host:port,tag). The socket stays open until the initiator closes it."""
    def case(p: Peer) -> None:
        req = p.recv()
        detail = 1 if p.n == 1 else 2
        p.send(p.login_response(req, status=(1, detail), data=encode_text([("TargetAddress", upstream)])))
        p.hold()
    return case


def _pdu_length(bhs: bytes, digests: tuple[bool, bool]) -> int:
    ahs, data = bhs[4] * 4, int.from_bytes(bhs[5:8], "big")
    header_digest, data_digest = digests
    return 48 + ahs + (4 if header_digest else 0) + ((data + 3) & ~3) + (4 if data and data_digest else 0)


def digest_corrupter(upstream_port: int, corrupt: int = 1):
    """A byte-for-byte proxy to 127.0.0.1:`upstream_port` that, on its first `corrupt` connections,
    flips a bit in the header digest of the first PDU the target sends after the login
    (the initiator must have negotiated HeaderDigest=CRC32C): the kernel sees a header digest
    error right after the login, during the scan."""
    def case(p: Peer) -> None:
        up = socket.create_connection(("127.0.0.1", upstream_port))
        damage = p.n <= corrupt

        def forward_up():
            try:
                while chunk := p.conn.recv(65536):
                    up.sendall(chunk)
            except OSError:
                pass
            finally:
                up.close()
        threading.Thread(target=forward_up, daemon=True).start()
        buf = b""
        logged_in = False
        try:
            while chunk := up.recv(65536):
                if not damage:
                    p.conn.sendall(chunk)
                    continue
                buf += chunk
                while len(buf) >= 48:
                    if not logged_in:
                        n = _pdu_length(buf, (False, False))
                        if len(buf) < n:
                            break
                        # Login Response with T=1, NSG=3 (Full Feature), Status-Class 0
                        logged_in = buf[0] & 0x3F == 0x23 and buf[1] & 0x83 == 0x83 and buf[36] == 0
                        p.conn.sendall(buf[:n])
                        buf = buf[n:]
                        continue
                    at = 48 + buf[4] * 4
                    if len(buf) <= at:
                        break
                    bad = bytearray(buf)
                    bad[at] ^= 0x01
                    p.conn.sendall(bytes(bad))
                    buf, damage = b"", False
                    break
            if buf:
                p.conn.sendall(buf)
        except OSError:
            pass
        finally:
            up.close()
    return case


def main(argv: list[str]) -> int:
    case, port = argv[0], int(argv[1])
    if case == "redirector":
        play = redirector(f"127.0.0.1:{argv[2]},1")
    elif case == "digest_corrupter":
        play = digest_corrupter(int(argv[2]))
    else:
        play = CASES[case]
    HostileTarget(play, port)
    print("listening", flush=True)
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

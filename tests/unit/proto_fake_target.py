"""A scripted iSCSI target for unit tests: answers Login Requests from bytes.

CHAP responses are computed here with hashlib directly, so the tests do not
check iscsikit's CHAP against itself.
"""

from __future__ import annotations

import hashlib

from iscsikit.proto.keys import decode_text, encode_text
from iscsikit.proto.negotiation import Negotiation, Role
from iscsikit.proto.keys import Stage
from iscsikit.proto.pdu import INITIATOR_OPCODES, LoginResponse
from iscsikit.proto.reader import decode_one

HASHES = {5: "md5", 6: "sha1", 7: "sha256", 8: "sha3_256"}


def chap_hash(alg: int, ident: int, secret: bytes, challenge: bytes) -> bytes:
    return hashlib.new(HASHES[alg], bytes([ident]) + secret + challenge).digest()


class FakeTarget:
    def __init__(self, *, user: str | None = None, secret: bytes | None = None,
                 mutual_user: str = "tgt", mutual_secret: bytes | None = None,
                 algorithms=(5,), policy=None, declare=None, split: int | None = None,
                 status: tuple[int, int] | None = None, redirect: str | None = None,
                 tsih: int = 0x1234, target_reply=None, bad_mutual=False, reflect=False,
                 extra_security=()) -> None:
        self.user, self.secret = user, secret
        self.mutual_user, self.mutual_secret = mutual_user, mutual_secret
        self.algorithms = algorithms
        self.neg = Negotiation(Role.TARGET, policy=policy or {})
        self.declare = list((declare or {}).items())
        self.split = split
        self.status, self.redirect = status, redirect
        self.tsih = tsih
        self.target_reply = target_reply
        self.bad_mutual, self.reflect = bad_mutual, reflect
        self.extra_security = list(extra_security)
        self.statsn = 100
        self._in = b""
        self._pieces: list[bytes] = []
        self._flags = (False, 0, 0)
        self.challenge = b"\x11" * 16
        self.ident = 7
        self.alg = 5
        self.requests = []
        self.authenticated = False

    def wire(self, wire: bytes) -> bytes:
        return self.handle(decode_one(wire, accept=INITIATOR_OPCODES)).encode()

    def _rsp(self, req, data=b"", transit=False, cont=False, nsg=0, status=(0, 0), tsih=0):
        self.statsn += 1
        return LoginResponse(transit=transit, cont=cont, csg=req.csg, nsg=nsg if transit else 0,
                             isid=req.isid, tsih=tsih, itt=req.itt, statsn=self.statsn,
                             expcmdsn=req.cmdsn, maxcmdsn=req.cmdsn + 1,
                             status_class=status[0], status_detail=status[1], data=data)

    def handle(self, req):
        self.requests.append(req)
        if self._pieces:
            assert req.data == b"" and not req.cont
            return self._send_piece(req)
        if req.cont:
            self._in += req.data
            return self._rsp(req)
        text, self._in = self._in + req.data, b""
        if self.status:
            return self._rsp(req, status=self.status)
        if self.redirect:
            return self._rsp(req, encode_text([("TargetAddress", self.redirect)]), status=(1, 1))
        keys = decode_text(text)
        if self.target_reply is not None:
            return self.target_reply(self, req, keys)
        if req.csg == 0:
            return self._security(req, dict(keys))
        if self.secret is not None and not self.authenticated:
            return self._rsp(req, status=(2, 1))
        answers = self.neg.receive(Stage.OPERATIONAL, [kv for kv in keys if kv[0] not in
                                                         ("InitiatorName", "TargetName", "SessionType", "InitiatorAlias")])
        answers += self.declare
        self.declare = []
        transit = req.transit
        return self._reply(req, encode_text(answers), transit, req.nsg)

    def _reply(self, req, data, transit, nsg):
        tsih = self.tsih if transit and nsg == 3 else 0
        if self.split and len(data) > self.split:
            self._pieces = [data[i:i + self.split] for i in range(0, len(data), self.split)]
            self._flags = (transit, nsg, tsih)
            return self._send_piece(req)
        return self._rsp(req, data, transit=transit, nsg=nsg, tsih=tsih)

    def _send_piece(self, req):
        piece = self._pieces.pop(0)
        if self._pieces:
            return self._rsp(req, piece, cont=True)
        transit, nsg, tsih = self._flags
        return self._rsp(req, piece, transit=transit, nsg=nsg, tsih=tsih)

    def _security(self, req, keys):
        if "AuthMethod" in keys:
            offered = keys["AuthMethod"].split(",")
            if self.secret is None:
                method = "None" if "None" in offered else "Reject"
                return self._rsp(req, encode_text([("AuthMethod", method)]), transit=req.transit, nsg=req.nsg)
            if "CHAP" not in offered:
                return self._rsp(req, status=(2, 1))
            return self._rsp(req, encode_text([("AuthMethod", "CHAP")] + self.extra_security))
        if "CHAP_A" in keys:
            for alg in (int(a) for a in keys["CHAP_A"].split(",")):
                if alg in self.algorithms:
                    self.alg = alg
                    return self._rsp(req, encode_text([("CHAP_A", str(alg)), ("CHAP_I", str(self.ident)),
                                                       ("CHAP_C", "0x" + self.challenge.hex())]))
            return self._rsp(req, encode_text([("CHAP_A", "Reject")]))
        if "CHAP_R" in keys:
            response = bytes.fromhex(keys["CHAP_R"][2:])
            if keys.get("CHAP_N") != self.user or response != chap_hash(self.alg, self.ident, self.secret, self.challenge):
                return self._rsp(req, status=(2, 1))
            self.authenticated = True
            out = []
            if "CHAP_C" in keys:
                ident, challenge = int(keys["CHAP_I"]), bytes.fromhex(keys["CHAP_C"][2:])
                secret = self.secret if self.reflect else self.mutual_secret
                if self.bad_mutual:
                    secret = b"not-the-right-secret"
                out = [("CHAP_N", self.mutual_user),
                       ("CHAP_R", "0x" + chap_hash(self.alg, ident, secret, challenge).hex())]
            return self._rsp(req, encode_text(out), transit=req.transit, nsg=req.nsg)
        return self._rsp(req, transit=req.transit, nsg=req.nsg)


def run_login(machine, target, limit=100):
    """Drive `machine` against `target` through encoded bytes; return the final event."""
    event = machine.start()
    for _ in range(limit):
        if not hasattr(event, "LAYOUT"):
            return event
        event = machine.receive(decode_one(target.wire(event.encode())))
    raise AssertionError("login did not finish")

"""CHAP for the initiator (RFC 7143 §12.1.3, RFC 1994), sans-IO.

Algorithms are the CHAP_A numbers open-iscsi knows (facts §3.6). The default
offer is MD5 alone: some targets reject a list of algorithms outright.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import enum
import logging
import os
from typing import Callable, Mapping

from .errors import AuthenticationFailure, LocalProtocolError, RemoteProtocolError
from .secret import Secret, constant_time_equal

log = logging.getLogger(__name__)

MAX_CHALLENGE = 1024
MAX_NAME = 256
MAX_SECRET = 256
MIN_RECOMMENDED_SECRET = 12
CHAP_KEYS = frozenset({"CHAP_A", "CHAP_I", "CHAP_C", "CHAP_N", "CHAP_R"})


class ChapAlgorithm(enum.IntEnum):
    MD5 = 5
    SHA1 = 6
    SHA256 = 7
    SHA3_256 = 8

    @property
    def hashlib_name(self) -> str:
        return _HASHLIB_NAMES[self]

    @property
    def digest_size(self) -> int:
        return _new_digest(self).digest_size

    @classmethod
    def from_name(cls, name: str) -> "ChapAlgorithm":
        """open-iscsi spells these MD5, SHA1, SHA256, SHA3-256 in chap_algs."""
        try:
            return _BY_CONFIG_NAME[name.strip().upper()]
        except KeyError:
            raise LocalProtocolError(f"unknown CHAP algorithm {name!r}") from None


_HASHLIB_NAMES = {ChapAlgorithm.MD5: "md5", ChapAlgorithm.SHA1: "sha1",
                  ChapAlgorithm.SHA256: "sha256", ChapAlgorithm.SHA3_256: "sha3_256"}
_BY_CONFIG_NAME = {"MD5": ChapAlgorithm.MD5, "SHA1": ChapAlgorithm.SHA1,
                   "SHA256": ChapAlgorithm.SHA256, "SHA3-256": ChapAlgorithm.SHA3_256}


def _new_digest(algorithm: ChapAlgorithm):
    # hashlib maps OpenSSL's libcrypto, about 3.7 MB of the daemon's resident memory:
    # imported when a CHAP exchange first needs it, not by every process that may log in
    import hashlib
    return hashlib.new(algorithm.hashlib_name)


def chap_response(algorithm: ChapAlgorithm, identifier: int, secret: Secret,
                  challenge: bytes) -> bytes:
    """HASH(identifier byte || secret || challenge), RFC 1994 §4.1."""
    digest = _new_digest(algorithm)
    digest.update(bytes((identifier,)))
    digest.update(secret.reveal())
    digest.update(challenge)
    return digest.digest()


def encode_binary(value: bytes) -> str:
    return "0x" + value.hex()


def decode_binary(text: str, what: str) -> bytes:
    """RFC 7143 §6.1 binary value: 0x hex (odd digit count allowed) or 0b base64."""
    prefix, body = text[:2], text[2:]
    try:
        if prefix in ("0x", "0X"):
            if len(body) % 2:
                body = "0" + body
            return bytes.fromhex(body)
        if prefix in ("0b", "0B"):
            return base64.b64decode(body, validate=True)
    except (ValueError, binascii.Error):
        pass
    raise RemoteProtocolError(f"{what} is not a 0x-hex or 0b-base64 value")


@dataclasses.dataclass(frozen=True)
class ChapCredentials:
    """What the initiator authenticates with; `secret_in` makes CHAP mutual."""

    username: str
    secret: Secret
    username_in: str | None = None
    secret_in: Secret | None = None
    algorithms: tuple[ChapAlgorithm, ...] = (ChapAlgorithm.MD5,)

    def __post_init__(self) -> None:
        object.__setattr__(self, "secret", Secret(self.secret))
        if self.secret_in is not None:
            object.__setattr__(self, "secret_in", Secret(self.secret_in))
        algorithms = tuple(ChapAlgorithm(a) if isinstance(a, int) else ChapAlgorithm.from_name(a)
                           for a in self.algorithms)
        object.__setattr__(self, "algorithms", algorithms)
        if not algorithms or len(set(algorithms)) != len(algorithms) or len(algorithms) > 5:
            raise LocalProtocolError("CHAP algorithms must be 1-5 distinct entries")
        if not self.username or len(self.username.encode()) > MAX_NAME:
            raise LocalProtocolError(f"CHAP username must be 1-{MAX_NAME} bytes")
        if self.username_in is not None and len(self.username_in.encode()) > MAX_NAME:
            raise LocalProtocolError(f"incoming CHAP username must be at most {MAX_NAME} bytes")
        if self.username_in is not None and self.secret_in is None:
            raise LocalProtocolError("an incoming CHAP username needs an incoming secret")
        for label, secret in (("outgoing", self.secret), ("incoming", self.secret_in)):
            if secret is None:
                continue
            if not secret or len(secret) > MAX_SECRET:
                raise LocalProtocolError(f"{label} CHAP secret must be 1-{MAX_SECRET} bytes")
            if len(secret) < MIN_RECOMMENDED_SECRET:
                log.warning("%s CHAP secret for %r is shorter than %d bytes; many targets "
                            "(LIO among them) refuse it", label, self.username,
                            MIN_RECOMMENDED_SECRET)

    @property
    def mutual(self) -> bool:
        return self.secret_in is not None


class ChapState(enum.Enum):
    AWAIT_METHOD = "waiting for the target's AuthMethod"
    AWAIT_CHALLENGE = "waiting for CHAP_A/CHAP_I/CHAP_C"
    AWAIT_ACCEPT = "waiting for the target to accept CHAP_R"
    AWAIT_TARGET_PROOF = "waiting for the target's CHAP_N/CHAP_R"
    DONE = "authenticated"


class ChapInitiator:
    """The initiator's half of the security stage.

    `receive()` takes the target's security keys and returns the keys to send
    back plus whether the initiator may now ask to leave the stage (T=1).
    `check_may_transit()` is called when the target leaves the stage, so a
    target that skips proving itself in mutual CHAP cannot slip through.
    """

    def __init__(self, credentials: ChapCredentials,
                 random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        self.credentials = credentials
        self.state = ChapState.AWAIT_METHOD
        self.algorithm: ChapAlgorithm | None = None
        self._random = random_bytes
        self._challenge_id = 0
        self._challenge = b""
        self._reflected = b""

    def auth_method_offer(self) -> str:
        # One-way CHAP also offers None, as iscsid does: a target that wants no
        # authentication may skip it. Mutual CHAP insists on CHAP.
        return "CHAP" if self.credentials.mutual else "CHAP,None"

    def first_transit(self) -> bool:
        return not self.credentials.mutual

    def receive(self, keys: Mapping[str, str]) -> tuple[list[tuple[str, str]], bool]:
        handler = _HANDLERS[self.state]
        return handler(self, dict(keys))

    def check_may_transit(self) -> None:
        if self.state is ChapState.DONE or self.state is ChapState.AWAIT_ACCEPT:
            self.state = ChapState.DONE
            return
        if self.credentials.mutual:
            raise AuthenticationFailure(
                "target left the security stage without proving its identity (mutual CHAP)")
        raise RemoteProtocolError(f"target left the security stage while {self.state.value}")

    # -- per-state handlers (the table _HANDLERS below) --------------------

    def _on_method(self, keys: dict[str, str]) -> tuple[list[tuple[str, str]], bool]:
        method = keys.pop("AuthMethod", None)
        _no_more(keys, "AuthMethod response")
        if method is None:
            raise RemoteProtocolError("target did not answer AuthMethod")
        if method == "CHAP":
            self.state = ChapState.AWAIT_CHALLENGE
            offer = ",".join(str(int(a)) for a in self.credentials.algorithms)
            return [("CHAP_A", offer)], False
        if method == "None" and not self.credentials.mutual:
            self.state = ChapState.DONE
            return [], True
        if method in ("Reject", "None"):
            raise AuthenticationFailure(f"target answered AuthMethod={method}")
        raise RemoteProtocolError(f"target chose AuthMethod={method[:32]!r}, which was not offered")

    def _on_challenge(self, keys: dict[str, str]) -> tuple[list[tuple[str, str]], bool]:
        raw_a, raw_i, raw_c = keys.pop("CHAP_A", None), keys.pop("CHAP_I", None), keys.pop("CHAP_C", None)
        _no_more(keys, "CHAP challenge")
        if raw_a == "Reject":
            raise AuthenticationFailure("target supports none of the offered CHAP algorithms")
        if raw_a is None or raw_i is None or raw_c is None:
            raise RemoteProtocolError("CHAP challenge lacks CHAP_A, CHAP_I or CHAP_C")
        try:
            algorithm = ChapAlgorithm(int(raw_a)) if raw_a.isascii() and raw_a.isdigit() and len(raw_a) < 4 else None
        except ValueError:
            algorithm = None
        if algorithm not in self.credentials.algorithms:
            raise RemoteProtocolError(f"target chose CHAP_A={raw_a[:16]!r}, which was not offered")
        # isascii: "²".isdigit() is true, and int() refuses it
        if not (raw_i.isascii() and raw_i.isdigit()) or len(raw_i) > 3 or int(raw_i) > 255:
            raise RemoteProtocolError(f"CHAP_I={raw_i[:16]!r} is not 0..255")
        challenge = decode_binary(raw_c, "CHAP_C")
        if not 0 < len(challenge) <= MAX_CHALLENGE:
            raise RemoteProtocolError(f"CHAP_C of {len(challenge)} bytes (allowed 1..{MAX_CHALLENGE})")
        self.algorithm = algorithm
        creds = self.credentials
        reply = [("CHAP_N", creds.username),
                 ("CHAP_R", encode_binary(chap_response(algorithm, int(raw_i), creds.secret, challenge)))]
        if not creds.mutual:
            self.state = ChapState.AWAIT_ACCEPT
            return reply, True
        self._challenge_id = self._random(1)[0]
        self._challenge = self._random(algorithm.digest_size)
        # What a target that merely echoes our own computation back would send:
        self._reflected = chap_response(algorithm, self._challenge_id, creds.secret, self._challenge)
        reply += [("CHAP_I", str(self._challenge_id)), ("CHAP_C", encode_binary(self._challenge))]
        self.state = ChapState.AWAIT_TARGET_PROOF
        return reply, True

    def _on_target_proof(self, keys: dict[str, str]) -> tuple[list[tuple[str, str]], bool]:
        name, raw_r = keys.pop("CHAP_N", None), keys.pop("CHAP_R", None)
        _no_more(keys, "target CHAP response")
        if name is None or raw_r is None:
            raise AuthenticationFailure("target did not send CHAP_N and CHAP_R (mutual CHAP)")
        creds = self.credentials
        if creds.username_in is not None and name != creds.username_in:
            raise AuthenticationFailure("target's CHAP_N does not match the configured name")
        response = decode_binary(raw_r, "CHAP_R")
        assert self.algorithm is not None and creds.secret_in is not None
        if constant_time_equal(response, self._reflected):
            raise AuthenticationFailure(
                "target's CHAP_R equals our own outgoing response (identical secrets or reflection)")
        expected = chap_response(self.algorithm, self._challenge_id, creds.secret_in, self._challenge)
        if not constant_time_equal(response, expected):
            raise AuthenticationFailure("invalid CHAP_R from the target")
        self.state = ChapState.DONE
        return [], True

    def _on_late(self, keys: dict[str, str]) -> tuple[list[tuple[str, str]], bool]:
        _no_more(keys, f"security stage ({self.state.value})")
        return [], True


_HANDLERS = {
    ChapState.AWAIT_METHOD: ChapInitiator._on_method,
    ChapState.AWAIT_CHALLENGE: ChapInitiator._on_challenge,
    ChapState.AWAIT_ACCEPT: ChapInitiator._on_late,
    ChapState.AWAIT_TARGET_PROOF: ChapInitiator._on_target_proof,
    ChapState.DONE: ChapInitiator._on_late,
}


def _no_more(keys: dict[str, str], where: str) -> None:
    if keys:
        names = ", ".join(sorted(keys))[:80]
        raise RemoteProtocolError(f"unexpected security keys in {where}: {names}")

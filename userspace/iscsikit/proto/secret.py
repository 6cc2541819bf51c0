"""A wrapper that keeps secrets out of repr, str, logs, exceptions and pickles."""

from __future__ import annotations


def constant_time_equal(a: bytes, b: bytes) -> bool:
    """hmac.compare_digest, imported on first use: hmac imports hashlib, which maps
    OpenSSL's libcrypto (about 3.7 MB resident) into every process that imports it."""
    import hmac
    return hmac.compare_digest(a, b)


class Secret:
    """An opaque secret; `reveal()` is the only way to the bytes.

    Every textual form prints a fixed mask, so a Secret passed by mistake to a
    log call or an f-string, or held in a dataclass whose repr is printed,
    gives nothing away (not even its length).
    """

    __slots__ = ("_value",)
    MASK = "Secret('********')"

    def __init__(self, value: "str | bytes | Secret") -> None:
        if isinstance(value, Secret):
            value = value._value
        elif isinstance(value, str):
            value = value.encode("utf-8")
        elif not isinstance(value, (bytes, bytearray)):
            raise TypeError("a Secret is made from str or bytes")
        object.__setattr__(self, "_value", bytes(value))

    def reveal(self) -> bytes:
        return self._value

    def __len__(self) -> int:
        return len(self._value)

    def __repr__(self) -> str:
        return self.MASK

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return self.MASK

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return constant_time_equal(self._value, other._value)

    __hash__ = None  # type: ignore[assignment]

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Secret is immutable")

    def __reduce__(self):
        raise TypeError("a Secret cannot be pickled")

    def __bool__(self) -> bool:
        return bool(self._value)

"""Login/text keys (RFC 7143 §13, RFC 7144 §2) declared once, as data, and the
`key=value\\0` text codec.

`KEYS` is the single table of every key iscsikit understands: its value type,
range or allowed values, RFC default, result rule, who may send it, in which
stages, whether it is leading-connection-only, and what open-iscsi 2.1.8
offers by default (open-iscsi-facts.md §3.4). The negotiation engine, and
later the node database and the CLI, read this table; nothing restates it.
"""

from __future__ import annotations

import enum
import re
from collections import namedtuple
from collections.abc import Iterable

from .errors import LocalProtocolError, RemoteProtocolError


class Rule(enum.Enum):
    LIST = "first offered value the responder supports"
    MIN = "numerical minimum"
    MAX = "numerical maximum"
    AND = "boolean AND"
    OR = "boolean OR"
    DECLARATIVE = "declarative (no response)"
    IRRELEVANT = "always answered Irrelevant (obsolete key)"
    CHAP = "driven by the CHAP exchange, not generic negotiation"
    REQUEST = "a request for the other side to act (SendTargets)"


class Kind(enum.Enum):
    TEXT = "text"
    NUMBER = "number"
    BOOLEAN = "boolean"
    LIST = "list of values"
    BINARY = "binary (0x hex / 0b base64)"


class Sender(enum.Flag):
    INITIATOR = enum.auto()
    TARGET = enum.auto()
    BOTH = INITIATOR | TARGET


class Stage(enum.IntEnum):
    """Login stage codes as carried in CSG/NSG; FULL_FEATURE also means Text PDUs."""

    SECURITY = 0
    OPERATIONAL = 1
    FULL_FEATURE = 3

    @property
    def rfc_name(self) -> str:
        return _RFC_STAGE_NAMES[self]


_RFC_STAGE_NAMES = {Stage.SECURITY: "SecurityNegotiation",
                    Stage.OPERATIONAL: "LoginOperationalNegotiation",
                    Stage.FULL_FEATURE: "FullFeaturePhase"}


SEC = frozenset({Stage.SECURITY})
LOGIN = frozenset({Stage.SECURITY, Stage.OPERATIONAL})
ANY = frozenset(Stage)
FFP = frozenset({Stage.FULL_FEATURE})

SPECIAL_VALUES = frozenset({"NotUnderstood", "Irrelevant", "Reject"})
MAX_KEY_NAME = 63
MAX_VALUE = 255
MAX_ANY_VALUE = 8192  # bound for values of keys we do not know


# a namedtuple, not typing.NamedTuple: iscsikit-adm imports this table, and typing costs its start-up
Key = namedtuple("Key", (
    "name",                  # str
    "kind",                  # Kind
    "rule",                  # Rule
    "default",               # str | None: the RFC default
    "senders",               # Sender
    "stages",                # frozenset[Stage]
    "leading_only",          # bool
    "session_wide",          # bool
    "values",                # tuple[str, ...]: allowed tokens (LIST/BOOLEAN/declarative enums)
    "low", "high",           # int: numeric range, inclusive
    "discovery_irrelevant",  # bool
    "max_len",               # int
    "open_iscsi",            # str | None: what open-iscsi 2.1.8 offers in a normal session when nothing is configured
), defaults=(False, True, (), 0, 0, False, MAX_VALUE, None))


_YES_NO = ("Yes", "No")
_DIGESTS = ("CRC32C", "None")
_LEN = dict(low=512, high=(1 << 24) - 1)

KEYS: tuple[Key, ...] = (
    # -- security stage
    Key("AuthMethod", Kind.LIST, Rule.LIST, "None", Sender.BOTH, SEC, session_wide=False,
        values=("KRB5", "SPKM1", "SPKM2", "SRP", "CHAP", "None")),
    Key("CHAP_A", Kind.LIST, Rule.CHAP, None, Sender.BOTH, SEC, session_wide=False),
    Key("CHAP_I", Kind.NUMBER, Rule.CHAP, None, Sender.BOTH, SEC, session_wide=False, high=255),
    Key("CHAP_C", Kind.BINARY, Rule.CHAP, None, Sender.BOTH, SEC, session_wide=False, max_len=4096),
    Key("CHAP_N", Kind.TEXT, Rule.CHAP, None, Sender.BOTH, SEC, session_wide=False),
    Key("CHAP_R", Kind.BINARY, Rule.CHAP, None, Sender.BOTH, SEC, session_wide=False, max_len=4096),
    # -- declarations
    Key("SessionType", Kind.TEXT, Rule.DECLARATIVE, "Normal", Sender.INITIATOR, LOGIN,
        leading_only=True, values=("Discovery", "Normal")),
    Key("InitiatorName", Kind.TEXT, Rule.DECLARATIVE, None, Sender.INITIATOR, LOGIN),
    Key("InitiatorAlias", Kind.TEXT, Rule.DECLARATIVE, None, Sender.INITIATOR, ANY),
    Key("TargetName", Kind.TEXT, Rule.DECLARATIVE, None, Sender.BOTH, ANY),
    Key("TargetAlias", Kind.TEXT, Rule.DECLARATIVE, None, Sender.TARGET, ANY),
    Key("TargetAddress", Kind.TEXT, Rule.DECLARATIVE, None, Sender.TARGET, ANY),
    Key("TargetPortalGroupTag", Kind.NUMBER, Rule.DECLARATIVE, None, Sender.TARGET, LOGIN,
        high=65535),
    Key("SendTargets", Kind.TEXT, Rule.REQUEST, None, Sender.INITIATOR, FFP),
    # -- operational (the order of open-iscsi's first operational PDU)
    Key("HeaderDigest", Kind.LIST, Rule.LIST, "None", Sender.BOTH, LOGIN, session_wide=False,
        values=_DIGESTS, open_iscsi="None"),
    Key("DataDigest", Kind.LIST, Rule.LIST, "None", Sender.BOTH, LOGIN, session_wide=False,
        values=_DIGESTS, open_iscsi="None"),
    Key("DefaultTime2Wait", Kind.NUMBER, Rule.MAX, "2", Sender.BOTH, LOGIN, leading_only=True,
        high=3600, open_iscsi="2"),
    Key("DefaultTime2Retain", Kind.NUMBER, Rule.MIN, "20", Sender.BOTH, LOGIN, leading_only=True,
        high=3600, open_iscsi="0"),
    Key("IFMarker", Kind.BOOLEAN, Rule.AND, "No", Sender.BOTH, LOGIN, session_wide=False,
        values=_YES_NO, open_iscsi="No"),
    Key("OFMarker", Kind.BOOLEAN, Rule.AND, "No", Sender.BOTH, LOGIN, session_wide=False,
        values=_YES_NO, open_iscsi="No"),
    Key("ErrorRecoveryLevel", Kind.NUMBER, Rule.MIN, "0", Sender.BOTH, LOGIN, leading_only=True,
        high=2, open_iscsi="0"),
    Key("InitialR2T", Kind.BOOLEAN, Rule.OR, "Yes", Sender.BOTH, LOGIN, leading_only=True,
        values=_YES_NO, discovery_irrelevant=True, open_iscsi="No"),
    Key("ImmediateData", Kind.BOOLEAN, Rule.AND, "Yes", Sender.BOTH, LOGIN, leading_only=True,
        values=_YES_NO, discovery_irrelevant=True, open_iscsi="Yes"),
    Key("MaxBurstLength", Kind.NUMBER, Rule.MIN, "262144", Sender.BOTH, LOGIN, leading_only=True,
        discovery_irrelevant=True, open_iscsi="16776192", **_LEN),
    Key("FirstBurstLength", Kind.NUMBER, Rule.MIN, "65536", Sender.BOTH, LOGIN, leading_only=True,
        discovery_irrelevant=True, open_iscsi="262144", **_LEN),
    Key("MaxOutstandingR2T", Kind.NUMBER, Rule.MIN, "1", Sender.BOTH, LOGIN, leading_only=True,
        low=1, high=65535, discovery_irrelevant=True, open_iscsi="1"),
    Key("MaxConnections", Kind.NUMBER, Rule.MIN, "1", Sender.BOTH, LOGIN, leading_only=True,
        low=1, high=65535, discovery_irrelevant=True, open_iscsi="1"),
    Key("DataPDUInOrder", Kind.BOOLEAN, Rule.OR, "Yes", Sender.BOTH, LOGIN, leading_only=True,
        values=_YES_NO, discovery_irrelevant=True, open_iscsi="Yes"),
    Key("DataSequenceInOrder", Kind.BOOLEAN, Rule.OR, "Yes", Sender.BOTH, LOGIN,
        leading_only=True, values=_YES_NO, discovery_irrelevant=True, open_iscsi="Yes"),
    Key("MaxRecvDataSegmentLength", Kind.NUMBER, Rule.DECLARATIVE, "8192", Sender.BOTH, ANY,
        session_wide=False, open_iscsi="262144", **_LEN),
    # -- not offered by open-iscsi, answered when a target offers them
    Key("TaskReporting", Kind.LIST, Rule.LIST, "RFC3720", Sender.BOTH, LOGIN, leading_only=True,
        values=("RFC3720", "ResponseFence", "FastAbort"), discovery_irrelevant=True),
    Key("iSCSIProtocolLevel", Kind.NUMBER, Rule.MIN, "1", Sender.BOTH, LOGIN, leading_only=True,
        high=31, discovery_irrelevant=True),
    Key("IFMarkInt", Kind.TEXT, Rule.IRRELEVANT, None, Sender.BOTH, LOGIN, session_wide=False),
    Key("OFMarkInt", Kind.TEXT, Rule.IRRELEVANT, None, Sender.BOTH, LOGIN, session_wide=False),
    # -- iSER (RFC 7145 §6): offered only over an RDMA transport (initiator/transports.py), where
    # the two RecvDataSegmentLength declarations take MaxRecvDataSegmentLength's place
    Key("RDMAExtensions", Kind.BOOLEAN, Rule.AND, "No", Sender.BOTH, LOGIN, leading_only=True,
        values=_YES_NO, discovery_irrelevant=True),
    Key("InitiatorRecvDataSegmentLength", Kind.NUMBER, Rule.DECLARATIVE, "8192", Sender.BOTH, LOGIN,
        session_wide=False, discovery_irrelevant=True, **_LEN),
    Key("TargetRecvDataSegmentLength", Kind.NUMBER, Rule.DECLARATIVE, "8192", Sender.BOTH, LOGIN,
        session_wide=False, discovery_irrelevant=True, **_LEN),
)

KEY_BY_NAME: dict[str, Key] = {key.name: key for key in KEYS}

# open-iscsi's first operational PDU, in its order (facts §3.4, §3.7)
NORMAL_OFFER: tuple[str, ...] = tuple(k.name for k in KEYS if k.open_iscsi is not None)
DISCOVERY_OFFER: tuple[str, ...] = (
    "HeaderDigest", "DataDigest", "DefaultTime2Wait", "DefaultTime2Retain", "IFMarker",
    "OFMarker", "ErrorRecoveryLevel", "MaxRecvDataSegmentLength")
DISCOVERY_MAX_RECV_DATA_SEGMENT = 32768

_KEY_NAME = re.compile(r"[A-Za-z0-9.\-+@_]+\Z")


# -- value parsing ----------------------------------------------------------

def parse_number(text: str) -> int:
    """RFC 7143 §6.1 numerical value: decimal, or hex with a 0x prefix."""
    try:
        if text[:2] in ("0x", "0X"):
            if not 2 < len(text) <= 18:
                raise ValueError
            return int(text[2:], 16)
        # isascii: str.isdigit() also says yes to "²" and other digits int() refuses
        if not (text.isascii() and text.isdigit()) or len(text) > 20:
            raise ValueError
        return int(text)
    except ValueError:
        raise RemoteProtocolError(f"bad numerical value {text[:40]!r}") from None


def parse_value(key: Key, text: str) -> int | bool | str:
    """Check a single received value against its key row; return it typed."""
    if key.kind is Kind.NUMBER:
        try:
            value = parse_number(text)
        except RemoteProtocolError:
            raise RemoteProtocolError(f"{key.name}: bad numerical value {text[:40]!r}") from None
        if not key.low <= value <= key.high:
            raise RemoteProtocolError(f"{key.name}={value} out of range {key.low}..{key.high}")
        return value
    if key.kind is Kind.BOOLEAN:
        if text not in _YES_NO:
            raise RemoteProtocolError(f"{key.name}={text[:40]!r} is not Yes or No")
        return text == "Yes"
    if key.values and text not in key.values:
        raise RemoteProtocolError(f"{key.name}={text[:40]!r} is not one of {','.join(key.values)}")
    return text


def format_value(value: int | bool | str) -> str:
    if isinstance(value, bool):
        return "Yes" if value else "No"
    return str(value)


def default_value(key: Key) -> int | bool | str | None:
    if key.default is None:
        return None
    return parse_value(key, key.default)


# -- text codec -------------------------------------------------------------

def _check_key_name(name: str, error: type) -> None:
    if not name or len(name) > MAX_KEY_NAME or not _KEY_NAME.match(name):
        raise error(f"bad key name {name[:70]!r}")


def encode_text(pairs: Iterable[tuple[str, str]]) -> bytes:
    """`key=value\\0` for each pair (the caller's values, checked, not trusted)."""
    out = []
    for name, value in pairs:
        _check_key_name(name, LocalProtocolError)
        limit = KEY_BY_NAME[name].max_len if name in KEY_BY_NAME else MAX_VALUE
        raw = value.encode("utf-8")
        if b"\0" in raw or len(raw) > limit:
            raise LocalProtocolError(f"bad value for {name} ({len(raw)} bytes)")
        out.append(name.encode("ascii") + b"=" + raw + b"\0")
    return b"".join(out)


def decode_text(data: bytes) -> list[tuple[str, str]]:
    """Split a complete text segment into (key, value) pairs, in order."""
    if not data:
        return []
    if not data.endswith(b"\0"):
        raise RemoteProtocolError("text does not end with a NUL")
    items = data[:-1].split(b"\0")
    while items and not items[-1]:  # tolerate NUL padding some targets leave in
        items.pop()
    pairs = []
    for item in items:
        name_raw, sep, value_raw = item.partition(b"=")
        if not sep:
            raise RemoteProtocolError(f"text item without '=': {item[:40]!r}")
        try:
            name = name_raw.decode("ascii")
            value = value_raw.decode("utf-8")
        except UnicodeDecodeError:
            raise RemoteProtocolError(f"text item is not valid UTF-8: {item[:40]!r}") from None
        _check_key_name(name, RemoteProtocolError)
        key = KEY_BY_NAME.get(name)
        limit = key.max_len if key else MAX_ANY_VALUE
        if len(value_raw) > limit:
            raise RemoteProtocolError(f"value of {name} is {len(value_raw)} bytes (limit {limit})")
        pairs.append((name, value))
    return pairs

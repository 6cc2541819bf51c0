"""Every node, iface and discovery record key of open-iscsi 2.1.8, declared once.

A row says: the key as iscsiadm spells it, its type, its default, the values
it accepts, whether it is a secret (masked as ******** unless -S), whether
`-o update` may change it, and whether iscsid.conf may seed it for new
records. The node database, the iscsiadm-compatible CLI (show, update,
--json) and, later, the daemon and D-Bus API all read these tables.

Row order is iscsiadm's print order (`# BEGIN RECORD 2.1.8` ... `# END
RECORD`), observed with Debian's /usr/sbin/iscsiadm 2.1.8 (facts §4.5, §4.6).
The iSCSI operational defaults (`node.session.iscsi.*`, `node.conn[0].iscsi.*`)
come from proto/keys.py's `open_iscsi` column, not restated here.
"""

from __future__ import annotations

import enum
import itertools
from collections import namedtuple

from ..proto import keys as _proto
from .errors import IscsiError

VERSION = "2.1.8"
BEGIN = f"# BEGIN RECORD {VERSION}"
END = "# END RECORD"
EMPTY = "<empty>"
MASK = "********"


class Type(enum.Enum):
    STR = "string"
    INT = "integer (C atoi: junk reads as 0)"
    ENUM = "one of a fixed set of tokens (case-sensitive)"
    LIST = "comma-separated subset of a fixed set; unknown tokens are dropped with a warning"


class Update(enum.Enum):
    """What `-o update` may do with a key (iscsiadm's wording for each refusal)."""
    YES = "modifiable"
    LOOKUP = "It is used to look up the record and cannot be changed."
    IFACE = "Use iface mode to update this value."


# a namedtuple, not typing.NamedTuple: the CLI imports this module and typing costs its start-up
Field = namedtuple("Field", (
    "key",        # str
    "type",       # Type
    "default",    # str: as text, exactly as iscsiadm prints it ("" = <empty>)
    "values",     # tuple[str, ...]
    "secret",     # bool
    "update",     # Update
    "seeded",     # bool: iscsid.conf may set it for new records
), defaults=("", (), False, Update.YES, True))


class RecordError(IscsiError, ValueError):
    """A key or value iscsiadm would refuse; `lines` are its stderr lines, `code` its exit code."""

    def __init__(self, lines: list[str], code: int = 7, summary: bool = True) -> None:
        super().__init__(code, *lines)
        # iscsiadm ends a multi-record update with "Could not execute operation on
        # all records" except when it refuses at once (iface keys in node mode)
        self.summary = summary


def _s(key, default="", **kw):
    return Field(key, Type.STR, default, **kw)


def _i(key, default=0, **kw):
    return Field(key, Type.INT, str(default), **kw)


def _e(key, default, values, **kw):
    return Field(key, Type.ENUM, default, tuple(values), **kw)


_YES_NO = ("Yes", "No")
_STARTUP = ("manual", "automatic", "onboot")
_AUTH = ("None", "CHAP")
CHAP_ALGS = ("MD5", "SHA1", "SHA256", "SHA3-256")
DISCOVERY_TYPES = ("static", "send_targets", "isns", "offload_send_targets", "slp", "fw")


def _digest_values() -> tuple[str, ...]:
    # A record may hold one token or an ordered pair of proto's digest tokens.
    tokens = _proto.KEY_BY_NAME["HeaderDigest"].values
    return tokens + tuple(",".join(p) for p in itertools.permutations(tokens, 2))


def _iscsi(prefix: str, name: str, record_name: str | None = None) -> Field:
    """A record key whose default is open-iscsi's offer in proto/keys.py."""
    key = _proto.KEY_BY_NAME[name]
    full = f"{prefix}.{record_name or name}"
    if key.kind is _proto.Kind.NUMBER:
        return Field(full, Type.INT, key.open_iscsi)
    if key.kind is _proto.Kind.BOOLEAN:
        return Field(full, Type.ENUM, key.open_iscsi, _YES_NO)
    return Field(full, Type.ENUM, key.open_iscsi, _digest_values())


# -- iface.* (ifaces/<name>, and embedded in every node record) -----------------
_IFACE_STR_INT = (
    ("iscsi_ifacename", "s"), ("net_ifacename", "s"), ("ipaddress", "s"), ("prefix_len", "i"),
    ("hwaddress", "s"), ("transport_name", "s"), ("initiatorname", "s"), ("state", "s"),
    ("vlan_id", "i"), ("vlan_priority", "i"), ("vlan_state", "s"), ("iface_num", "i"),
    ("mtu", "i"), ("port", "i"), ("bootproto", "s"), ("subnet_mask", "s"), ("gateway", "s"),
    ("dhcp_alt_client_id_state", "s"), ("dhcp_alt_client_id", "s"), ("dhcp_dns", "s"),
    ("dhcp_learn_iqn", "s"), ("dhcp_req_vendor_id_state", "s"), ("dhcp_vendor_id_state", "s"),
    ("dhcp_vendor_id", "s"), ("dhcp_slp_da", "s"), ("fragmentation", "s"), ("gratuitous_arp", "s"),
    ("incoming_forwarding", "s"), ("tos_state", "s"), ("tos", "i"), ("ttl", "i"),
    ("delayed_ack", "s"), ("tcp_nagle", "s"), ("tcp_wsf_state", "s"), ("tcp_wsf", "i"),
    ("tcp_timer_scale", "i"), ("tcp_timestamp", "s"), ("redirect", "s"),
    ("def_task_mgmt_timeout", "i"), ("header_digest", "s"), ("data_digest", "s"),
    ("immediate_data", "s"), ("initial_r2t", "s"), ("data_seq_inorder", "s"),
    ("data_pdu_inorder", "s"), ("erl", "i"), ("max_receive_data_len", "i"),
    ("first_burst_len", "i"), ("max_outstanding_r2t", "i"), ("max_burst_len", "i"),
    ("chap_auth", "s"), ("bidi_chap", "s"), ("strict_login_compliance", "s"),
    ("discovery_auth", "s"), ("discovery_logout", "s"),
)
# The offload-HBA keys are free text here: open-iscsi checks them only in the
# driver, and none of them matters to iscsi_tcp.
IFACE_FIELDS: tuple[Field, ...] = tuple(
    (_i if kind == "i" else _s)(f"iface.{name}", seeded=False) for name, kind in _IFACE_STR_INT)

BUILTIN_IFACES: dict[str, dict[str, str]] = {
    "default": {"iface.iscsi_ifacename": "default", "iface.transport_name": "tcp"},
    "iser": {"iface.iscsi_ifacename": "iser", "iface.transport_name": "iser"},
}
DEFAULT_IFACE = "default"

# -- node records ----------------------------------------------------------------
_SI = "node.session.iscsi"
_CI = "node.conn[0].iscsi"
_LOOKUP = dict(update=Update.LOOKUP, seeded=False)

NODE_FIELDS: tuple[Field, ...] = (
    _s("node.name", **_LOOKUP),
    _i("node.tpgt", -1, **_LOOKUP),
    _e("node.startup", "manual", _STARTUP),
    _e("node.leading_login", "No", _YES_NO),
    *(f._replace(update=Update.IFACE) for f in IFACE_FIELDS),
    _s("node.discovery_address", seeded=False),
    _i("node.discovery_port", 0, seeded=False),
    _e("node.discovery_type", "static", DISCOVERY_TYPES, seeded=False),
    _i("node.session.initial_cmdsn", 0),
    _i("node.session.initial_login_retry_max", 4),
    _i("node.session.xmit_thread_priority", -20),
    _i("node.session.cmds_max", 128),
    _i("node.session.queue_depth", 32),
    _i("node.session.nr_sessions", 1),
    _e("node.session.auth.authmethod", "None", _AUTH),
    _s("node.session.auth.username"),
    _s("node.session.auth.password", secret=True),
    _s("node.session.auth.username_in"),
    _s("node.session.auth.password_in", secret=True),
    Field("node.session.auth.chap_algs", Type.LIST, "MD5", CHAP_ALGS),
    _i("node.session.timeo.replacement_timeout", 120),
    _i("node.session.err_timeo.abort_timeout", 15),
    _i("node.session.err_timeo.lu_reset_timeout", 30),
    _i("node.session.err_timeo.tgt_reset_timeout", 30),
    _i("node.session.err_timeo.host_reset_timeout", 60),
    # FastAbort is a kernel tunable, not a negotiated iSCSI key: proto has no row for it
    _e(f"{_SI}.FastAbort", "Yes", _YES_NO),
    _iscsi(_SI, "InitialR2T"),
    _iscsi(_SI, "ImmediateData"),
    _iscsi(_SI, "FirstBurstLength"),
    _iscsi(_SI, "MaxBurstLength"),
    _iscsi(_SI, "DefaultTime2Retain"),
    _iscsi(_SI, "DefaultTime2Wait"),
    _iscsi(_SI, "MaxConnections"),
    _iscsi(_SI, "MaxOutstandingR2T"),
    _iscsi(_SI, "ErrorRecoveryLevel", "ERL"),
    _e("node.session.scan", "auto", ("auto", "manual")),
    _i("node.session.reopen_max", 0),
    _s("node.conn[0].address", **_LOOKUP),
    _i("node.conn[0].port", 3260, **_LOOKUP),
    _e("node.conn[0].startup", "manual", _STARTUP),
    _i("node.conn[0].tcp.window_size", 524288),
    _i("node.conn[0].tcp.type_of_service", 0),
    _i("node.conn[0].timeo.logout_timeout", 15),
    _i("node.conn[0].timeo.login_timeout", 30),
    _i("node.conn[0].timeo.auth_timeout", 45),
    _i("node.conn[0].timeo.noop_out_interval", 5),
    _i("node.conn[0].timeo.noop_out_timeout", 5),
    # 0 = "use what the target declares"; not a text key of its own, so not in proto
    _i(f"{_CI}.MaxXmitDataSegmentLength", 0),
    _iscsi(_CI, "MaxRecvDataSegmentLength"),
    _iscsi(_CI, "HeaderDigest"),
    _iscsi(_CI, "DataDigest"),
    _iscsi(_CI, "IFMarker"),
    _iscsi(_CI, "OFMarker"),
)

# -- discovery records (send_targets/<addr>,<port>/st_config, isns/.../isns_config) ---
_ST = "discovery.sendtargets"
_DISC_HEAD = (
    _e("discovery.startup", "manual", ("manual", "automatic")),
    _e("discovery.type", "sendtargets", ("sendtargets", "isns"), update=Update.LOOKUP, seeded=False),
    _s(f"{_ST}.address", update=Update.LOOKUP, seeded=False),
    _i(f"{_ST}.port", 3260, update=Update.LOOKUP, seeded=False),
)
SENDTARGETS_FIELDS: tuple[Field, ...] = _DISC_HEAD + (
    _e(f"{_ST}.auth.authmethod", "None", _AUTH),
    _s(f"{_ST}.auth.username"),
    _s(f"{_ST}.auth.password", secret=True),
    _s(f"{_ST}.auth.username_in"),
    _s(f"{_ST}.auth.password_in", secret=True),
    # open-iscsi stores the discovery CHAP algorithms under the node key name
    Field("node.session.auth.chap_algs", Type.LIST, "MD5", CHAP_ALGS, seeded=False),
    _i(f"{_ST}.timeo.login_timeout", 15),
    _e(f"{_ST}.use_discoveryd", "No", _YES_NO),
    _i(f"{_ST}.discoveryd_poll_inval", 30),
    _i(f"{_ST}.reopen_max", 5),
    _i(f"{_ST}.timeo.auth_timeout", 45),
    _i(f"{_ST}.timeo.active_timeout", 30),
    _i(f"{_ST}.iscsi.MaxRecvDataSegmentLength", _proto.DISCOVERY_MAX_RECV_DATA_SEGMENT),
)
ISNS_FIELDS: tuple[Field, ...] = _DISC_HEAD + (
    _e("discovery.isns.use_discoveryd", "No", _YES_NO),
    _i("discovery.isns.discoveryd_poll_inval", -1),
)

FIELD_BY_KEY: dict[str, Field] = {f.key: f for f in NODE_FIELDS}
IFACE_BY_KEY: dict[str, Field] = {f.key: f for f in IFACE_FIELDS}
DISCOVERY_FIELDS: dict[str, tuple[Field, ...]] = {"sendtargets": SENDTARGETS_FIELDS,
                                                  "isns": ISNS_FIELDS}
# a discovery record's type -> node.discovery_type of the node records it finds
NODE_DISCOVERY_TYPE = {"sendtargets": "send_targets", "isns": "isns"}


# -- values ------------------------------------------------------------------------

def atoi(text: str) -> int:
    """C atoi: optional blanks and sign, then digits; anything else stops (or gives 0)."""
    s = text.lstrip(" \t\n\r\f\v")
    sign, digits = 1, ""
    if s[:1] in "+-" and s[:1]:
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    for ch in s:
        if not ch.isdigit() or not ch.isascii():
            break
        digits += ch
    value = sign * int(digits) if digits else 0
    return max(-(1 << 31), min((1 << 31) - 1, value))


def check_value(field: Field, value: str) -> tuple[str, list[str]]:
    """Normalise a value as iscsiadm stores it: (stored text, warning lines)."""
    if field.type is Type.INT:
        return str(atoi(value)), []
    if field.type is Type.ENUM:
        if value not in field.values:
            raise RecordError([f"unknown value format '{value}' for parameter name '{field.key}'",
                               f"Unknown parameter {field.key}."])
        return value, []
    if field.type is Type.LIST:
        kept, warnings = [], []
        for token in value.split(","):
            if token in field.values:
                kept.append(token)
            else:
                warnings.append(f"Ignoring unknown value '{token}' for '{field.key}'")
        return ",".join(kept), warnings
    return value, []


def defaults(fields: tuple[Field, ...]) -> dict[str, str]:
    return {f.key: f.default for f in fields}


def render(fields: tuple[Field, ...], values: dict[str, str], *, for_file: bool,
           show_secrets: bool = False) -> list[str]:
    """The record's lines. A file keeps only non-empty values; show prints every key."""
    out = [BEGIN]
    for f in fields:
        value = values.get(f.key, "")
        if for_file:
            if value != "":
                out.append(f"{f.key} = {value}")
            continue
        if value == "":
            value = EMPTY
        elif f.secret and not show_secrets:
            value = MASK
        out.append(f"{f.key} = {value}")
    out.append(END)
    return out


def as_json(fields: tuple[Field, ...], values: dict[str, str], show_secrets: bool = False) -> dict:
    out: dict[str, object] = {}
    for f in fields:
        value = values.get(f.key, "")
        if f.secret and value and not show_secrets:
            out[f.key] = MASK
        elif f.type is Type.INT:
            out[f.key] = atoi(value)
        else:
            out[f.key] = value or None
    return out


def parse_lines(text: str) -> dict[str, str]:
    """`key = value` lines of a record file (split on the first '=', blanks trimmed)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or len(line) > 2047:
            continue
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


# -- the login request ---------------------------------------------------------------
# protocol.LOGIN_ARGS name -> the node record key it comes from. Every default is
# the record table's (open-iscsi's), so a record missing a key logs in as open-iscsi
# would (login_timeout 30, replacement_timeout 120, ...).
_LOGIN_KEYS = {
    "header_digest": f"{_CI}.HeaderDigest", "data_digest": f"{_CI}.DataDigest",
    "replacement_timeout": "node.session.timeo.replacement_timeout",
    "noop_out_interval": "node.conn[0].timeo.noop_out_interval",
    "noop_out_timeout": "node.conn[0].timeo.noop_out_timeout",
    "abort_timeout": "node.session.err_timeo.abort_timeout",
    "lu_reset_timeout": "node.session.err_timeo.lu_reset_timeout",
    "tgt_reset_timeout": "node.session.err_timeo.tgt_reset_timeout",
    "cmds_max": "node.session.cmds_max", "queue_depth": "node.session.queue_depth",
    "scan": "node.session.scan", "login_timeout": "node.conn[0].timeo.login_timeout",
    "logout_timeout": "node.conn[0].timeo.logout_timeout",
    # recovery: reconnect attempts after a connection error (0: until logged out)
    "reopen_max": "node.session.reopen_max",
    # the first login is tried again for initial_login_retry_max x login_timeout seconds
    "initial_login_retry_max": "node.session.initial_login_retry_max",
    # the cap on what this side sends in one data segment (0: the target's declaration)
    "max_xmit_dlength": f"{_CI}.MaxXmitDataSegmentLength",
    # where the iface's connections leave from (login_io.Binding)
    "net_ifacename": "iface.net_ifacename", "hwaddress": "iface.hwaddress", "ipaddress": "iface.ipaddress",
}
# operational keys offered as the record says (the others: proto/keys.py's defaults)
_OPERATIONAL = ((_CI, "MaxRecvDataSegmentLength"), (_SI, "FirstBurstLength"), (_SI, "MaxBurstLength"),
                (_SI, "ImmediateData"), (_SI, "InitialR2T"), (_SI, "MaxOutstandingR2T"),
                # RFC 7143 §13.15-13.16: offered as open-iscsi offers them (usr/login.c
                # add_params_normal_session); the negotiated DefaultTime2Wait is the wait
                # before a recovery's first reconnect (daemon.recover)
                (_SI, "DefaultTime2Wait"), (_SI, "DefaultTime2Retain"))


def _login_value(name: str, values: dict[str, str]):
    """Login request field `name`, typed, from record `values` or else the table's default."""
    f = FIELD_BY_KEY[_LOGIN_KEYS[name]]
    text = values.get(f.key) or f.default
    return atoi(text) if f.type is Type.INT else text


def nr_sessions(values: dict[str, str]) -> int:
    """node.session.nr_sessions of a record: how many sessions a login makes (at least one)."""
    return max(1, atoi(values.get("node.session.nr_sessions") or FIELD_BY_KEY["node.session.nr_sessions"].default))


def login_default(name: str):
    """A login request field's default, typed: the record table's default for its key."""
    return _login_value(name, {})


def login_request(nid, values: dict[str, str], initiator_name: str | None = None) -> dict:
    """The daemon's login request (protocol.LOGIN_ARGS) for node `nid` with record `values`:
    the only mapping from a node record to a login. `initiator_name`: the host's, used when
    the record's iface names none."""
    req = {
        "target": nid.target, "address": nid.address, "port": int(nid.port),
        "tpgt": None if nid.tpgt < 0 else nid.tpgt,
        "initiator_name": values.get("iface.initiatorname") or initiator_name or None,
        "iface_name": nid.iface, "transport": values.get("iface.transport_name") or "tcp",
        **{name: _login_value(name, values) for name in _LOGIN_KEYS},
        "fast_abort": (values.get(f"{_SI}.FastAbort") or FIELD_BY_KEY[f"{_SI}.FastAbort"].default) == "Yes",
        "operational": {k: values[f"{p}.{k}"] for p, k in _OPERATIONAL if values.get(f"{p}.{k}")},
    }
    # iscsid authenticates when the record holds a secret, whatever authmethod says
    # (usr/initiator_common.c iscsi_setup_authentication); a boot target's record is made so
    # (idbm_create_rec_from_boot_context copies the iBFT's CHAP strings, authmethod untouched)
    a = "node.session.auth"
    if (values.get(f"{a}.authmethod") == "CHAP" and values.get(f"{a}.username")) or values.get(f"{a}.password"):
        req.update(username=values.get(f"{a}.username") or "",
                   password=values.get("node.session.auth.password", ""),
                   username_in=values.get("node.session.auth.username_in") or "",
                   password_in=values.get("node.session.auth.password_in") or "",
                   chap_algs=_chap_algs(values))
    return req


def _chap_algs(values: dict[str, str]) -> str:
    """The record's chap_algs, in its order (open-iscsi offers CHAP_A in that order), each once;
    the table's default (MD5) when the record names none it knows."""
    f = FIELD_BY_KEY["node.session.auth.chap_algs"]
    kept = [a for a in (values.get(f.key) or "").split(",") if a in f.values]
    return ",".join(dict.fromkeys(kept)) or f.default

"""Every rule an input must pass before configfs is touched, in one place.

Each checker returns the normalised value or raises ValidationError with one
line that names the offending value.  The tables below (TPG attributes, TPG
parameters, ACL attributes) are the single source for the shell's
completion, the restore planner and the importers.
"""

from __future__ import annotations

import ipaddress
import re

from .errors import ValidationError


class _LazyPattern:
    """A regular expression compiled when first matched: a one-shot command uses two or
    three of this module's patterns, and compiling all of them cost ~0.1 s in the lab guest."""
    __slots__ = ("source", "_compiled")

    def __init__(self, source: str):
        self.source, self._compiled = source, None

    def match(self, text: str):
        if self._compiled is None:
            self._compiled = re.compile(self.source)
        return self._compiled.match(text)


# ---- names and WWNs -------------------------------------------------------

# RFC 3720/3722: lower-case letters, digits, '-', '.', ':'.  Two domain labels
# are required because rtslib (and so Debian's targetcli) rejects fewer, and a
# file we write must restore there too.  Underscores are rejected for the same
# reason (rtslib #135).
_IQN = _LazyPattern(r"^iqn\.(\d{4})-(\d{2})\.[a-z0-9][a-z0-9-]*(\.[a-z0-9-]+)+(:[a-z0-9.:-]*)?$")
_NAA = _LazyPattern(r"^naa\.[125c-f][0-9a-f]{15}$")
_EUI = _LazyPattern(r"^eui\.[0-9a-f]{16}$")
MAX_ISCSI_NAME = 223


def wwn(value: str, what: str = "WWN") -> str:
    """An iSCSI name (iqn./naa./eui.), lower-cased as the kernel tree stores it."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{what} is empty")
    name = value.strip().lower()
    if len(name.encode()) > MAX_ISCSI_NAME:
        raise ValidationError(f"{what} {value!r} is longer than {MAX_ISCSI_NAME} bytes")
    if name.startswith("iqn."):
        m = _IQN.match(name)
        if not m:
            hint = " (underscores are not allowed)" if "_" in name else ""
            raise ValidationError(f"{what} {value!r} is not a valid IQN: expected "
                                  f"iqn.YYYY-MM.reversed.domain[:id]{hint}")
        if not 1 <= int(m.group(2)) <= 12:
            raise ValidationError(f"{what} {value!r} has month {m.group(2)}, not 01-12")
        return name
    if name.startswith("naa."):
        if not _NAA.match(name):
            raise ValidationError(f"{what} {value!r} is not a valid NAA name: expected naa. and 16 hex digits")
        return name
    if name.startswith("eui."):
        if not _EUI.match(name):
            raise ValidationError(f"{what} {value!r} is not a valid EUI-64 name: expected eui. and 16 hex digits")
        return name
    raise ValidationError(f"{what} {value!r} must start with iqn., naa. or eui.")


_SO_NAME = _LazyPattern(r"^[A-Za-z0-9_.:+@-]+$")


def so_name(value: str) -> str:
    """A storage object name; it becomes a configfs directory and a shell path element."""
    if not isinstance(value, str) or not value:
        raise ValidationError("storage object name is empty")
    if value in (".", "..") or len(value) > 128 or not _SO_NAME.match(value):
        raise ValidationError(f"storage object name {value!r} may only use letters, digits "
                              f"and _ . : + @ - (at most 128 characters)")
    return value


_UNIT_SERIAL = _LazyPattern(r"^[\x21-\x7e]{1,254}$")


def unit_serial(value: str) -> str:
    """The T10 unit serial (VPD 0x80) written to wwn/vpd_unit_serial."""
    if not isinstance(value, str) or not _UNIT_SERIAL.match(value):
        raise ValidationError(f"unit serial (wwn) {value!r} must be 1-254 printable ASCII characters without spaces")
    return value


_ALIAS = _LazyPattern(r"^[A-Za-z0-9_.:-]{1,64}$")


def alias(value: str) -> str:
    """A LUN or mapped-LUN symlink name."""
    if not isinstance(value, str) or not _ALIAS.match(value):
        raise ValidationError(f"alias {value!r} may only use letters, digits and _ . : - (1-64 characters)")
    return value


# ---- numbers --------------------------------------------------------------

_SIZE = _LazyPattern(r"(?i)^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b)?\s*$")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def size(value, what: str = "size") -> int:
    """Bytes from 4096, '64M', '1.5G', '2TiB' (binary units, as targetcli)."""
    if isinstance(value, bool):
        raise ValidationError(f"{what} {value!r} is not a size")
    if isinstance(value, int):
        n = value
    else:
        m = _SIZE.match(str(value))
        if not m:
            raise ValidationError(f"{what} {value!r} is not a size (use bytes or a K/M/G/T suffix)")
        n = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if n <= 0:
        raise ValidationError(f"{what} must be positive, got {value!r}")
    if n % 512:
        raise ValidationError(f"{what} {value!r} is not a multiple of 512 bytes")
    return n


def integer(value, lo: int, hi: int, what: str) -> int:
    if isinstance(value, bool):
        raise ValidationError(f"{what} {value!r} is not a number")
    try:
        n = int(str(value).strip(), 0) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        raise ValidationError(f"{what} {value!r} is not a number") from None
    if not lo <= n <= hi:
        raise ValidationError(f"{what} {n} is out of range {lo}-{hi}")
    return n


_TRUE = {"1", "true", "yes", "on", "y"}
_FALSE = {"0", "false", "no", "off", "n", ""}


def boolean(value, what: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValidationError(f"{what} {value!r} is not true/false")


BLOCK_SIZES = (512, 1024, 2048, 4096)
MAX_LUN = 65535
MAX_TAG = 65535


def block_size(value) -> int:
    n = integer(value, 0, 1 << 20, "block size")
    if n not in BLOCK_SIZES:
        raise ValidationError(f"block size {n} is not one of {', '.join(map(str, BLOCK_SIZES))}")
    return n


def lun_index(value, what: str = "LUN") -> int:
    return integer(value, 0, MAX_LUN, what)


def tpg_tag(value) -> int:
    return integer(value, 0, MAX_TAG, "TPG tag")


# ---- network portals -------------------------------------------------------

def portal_ip(value: str) -> str:
    """The directory spelling of a portal address: IPv4 as is, IPv6 in brackets.

    The spelling is kept (targetcli writes `[::0]`); portal_key() compares.
    """
    text = str(value).strip()
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        addr = ipaddress.ip_address(bare)
    except ValueError:
        raise ValidationError(f"portal address {value!r} is not an IPv4 or IPv6 address") from None
    if addr.version == 6:
        if "%" in bare:
            raise ValidationError(f"portal address {value!r}: scoped IPv6 addresses are not supported")
        return f"[{bare.lower()}]"
    return bare


def portal_port(value) -> int:
    return integer(value, 1, 65535, "portal port")


_PORTAL_KEYS: dict = {}


def portal_key(ip: str, port: int) -> tuple:
    """Two spellings of one address (`[::0]`, `[::]`) are the same portal.  Remembered:
    a snapshot of 1000 targets asks for the same 0.0.0.0:3260 1000 times."""
    key = _PORTAL_KEYS.get((ip, port))
    if key is None:
        bare = ip[1:-1] if ip.startswith("[") else ip
        key = _PORTAL_KEYS[(ip, port)] = (ipaddress.ip_address(bare), int(port))
    return key


# ---- CHAP -------------------------------------------------------------------

_CHAP = _LazyPattern(r"^[\x21-\x7e]{1,255}$")
CHAP_FIELDS = ("userid", "password", "mutual_userid", "mutual_password")


def chap_value(value, what: str) -> str:
    """'' clears; anything else is 1-255 printable characters, never the kernel's NULL marker."""
    if value is None:
        return ""
    text = str(value)
    if text == "":
        return ""
    if text == "NULL":
        raise ValidationError(f"{what} may not be the literal NULL (the kernel's 'unset' marker)")
    if not _CHAP.match(text):
        raise ValidationError(f"{what} must be 1-255 printable characters without spaces")
    return text


def chap_set(userid: str, password: str, mutual_userid: str, mutual_password: str, where: str) -> None:
    """A credential set must be whole: a user without a secret cannot log in."""
    if bool(userid) != bool(password):
        raise ValidationError(f"{where}: CHAP userid and password must be set together")
    if bool(mutual_userid) != bool(mutual_password):
        raise ValidationError(f"{where}: mutual CHAP userid and password must be set together")
    if mutual_userid and not userid:
        raise ValidationError(f"{where}: mutual CHAP needs the one-way userid and password too")


# ---- attribute and parameter tables -----------------------------------------
# name -> (lo, hi) for integers; kernel defaults are in lio-facts.md §1.5-1.7.

TPG_ATTRIBUTES = {
    "authentication": (0, 1),
    "login_timeout": (5, 30),
    "netif_timeout": (2, 15),
    "generate_node_acls": (0, 1),
    "default_cmdsn_depth": (1, 512),
    "cache_dynamic_acls": (0, 1),
    "demo_mode_write_protect": (0, 1),
    "prod_mode_write_protect": (0, 1),
    "demo_mode_discovery": (0, 1),
    "default_erl": (0, 2),
    "t10_pi": (0, 1),
    "fabric_prot_type": (0, 3),
    "tpg_enabled_sendtargets": (0, 1),
    "login_keys_workaround": (0, 1),
}

ACL_ATTRIBUTES = {
    "dataout_timeout": (2, 60),
    "dataout_timeout_retries": (1, 15),
    "default_erl": (0, 2),
    "nopin_timeout": (3, 60),
    "nopin_response_timeout": (3, 60),
    "random_datain_pdu_offsets": (0, 1),
    "random_datain_seq_offsets": (0, 1),
    "random_r2t_offsets": (0, 1),
    # -1 means "follow the TPG" (kernel 5.x+)
    "authentication": (-1, 1),
}

# Storage object attributes that are flags; others are checked by the kernel.
SO_FLAG_ATTRIBUTES = {
    "emulate_model_alias", "emulate_dpo", "emulate_fua_write", "emulate_fua_read",
    "emulate_write_cache", "emulate_tas", "emulate_tpu", "emulate_tpws", "emulate_caw",
    "emulate_3pc", "emulate_pr", "enforce_pr_isids", "is_nonrot", "emulate_rest_reord",
    "force_pr_aptpl", "unmap_zeroes_data", "pi_prot_verify",
}
SO_RANGED_ATTRIBUTES = {
    "emulate_ua_intlck_ctrl": (0, 2),
    "pi_prot_type": (0, 3),
    "queue_depth": (1, 1 << 20),
}


def _yes_no(v: str) -> bool:
    return v in ("Yes", "No")


def _digest(v: str) -> bool:
    parts = v.split(",")
    return bool(parts) and all(p in ("CRC32C", "None") for p in parts) and len(set(parts)) == len(parts)


def _auth(v: str) -> bool:
    parts = v.split(",")
    return bool(parts) and all(p in ("CHAP", "None", "KRB5", "SPKM1", "SPKM2", "SRP") for p in parts)


def _ranged(lo: int, hi: int):
    return lambda v: v.isdigit() and lo <= int(v) <= hi


TPG_PARAMETERS = {
    "AuthMethod": _auth,
    "HeaderDigest": _digest,
    "DataDigest": _digest,
    "MaxConnections": _ranged(1, 65535),
    "TargetAlias": lambda v: 0 < len(v) <= 255 and "\n" not in v,
    "InitialR2T": _yes_no,
    "ImmediateData": _yes_no,
    "MaxRecvDataSegmentLength": _ranged(512, 16777215),
    "MaxXmitDataSegmentLength": _ranged(512, 16777215),
    "MaxBurstLength": _ranged(512, 16777215),
    "FirstBurstLength": _ranged(512, 16777215),
    "DefaultTime2Wait": _ranged(0, 3600),
    "DefaultTime2Retain": _ranged(0, 3600),
    "MaxOutstandingR2T": _ranged(1, 65535),
    "DataPDUInOrder": _yes_no,
    "DataSequenceInOrder": _yes_no,
    "ErrorRecoveryLevel": _ranged(0, 2),
    "IFMarker": _yes_no,
    "OFMarker": _yes_no,
    "IFMarkInt": lambda v: v == "Reject" or _ranged(1, 65535)(v),
    "OFMarkInt": lambda v: v == "Reject" or _ranged(1, 65535)(v),
}


def _attr_value(name: str, value, table: dict, where: str):
    """Attributes are ints in the kernel tree; keep non-numeric ones as strings."""
    if isinstance(value, bool):
        value = int(value)
    if name in table:
        lo, hi = table[name]
        return integer(value, lo, hi, f"{where} attribute {name}")
    text = str(value).strip()
    if not text or "\n" in text:
        raise ValidationError(f"{where} attribute {name} has an empty or multi-line value")
    try:
        return int(text)
    except ValueError:
        return text


_ATTR_NAME = _LazyPattern(r"^[a-z0-9_]{1,64}$")


def attribute_name(name: str, where: str) -> str:
    if not isinstance(name, str) or not _ATTR_NAME.match(name):
        raise ValidationError(f"{where}: {name!r} is not an attribute name")
    return name


def tpg_attribute(name: str, value, where: str = "TPG"):
    return _attr_value(attribute_name(name, where), value, TPG_ATTRIBUTES, where)


def acl_attribute(name: str, value, where: str = "ACL"):
    return _attr_value(attribute_name(name, where), value, ACL_ATTRIBUTES, where)


def so_attribute(name: str, value, where: str = "storage object"):
    attribute_name(name, where)
    if name == "block_size":
        return block_size(value)
    if name in SO_FLAG_ATTRIBUTES:
        return integer(value, 0, 1, f"{where} attribute {name}")
    return _attr_value(name, value, SO_RANGED_ATTRIBUTES, where)


def tpg_parameter(name: str, value, where: str = "TPG") -> str:
    text = str(value).strip()
    check = TPG_PARAMETERS.get(name)
    if check is None:
        if not re.match(r"^[A-Za-z0-9_]{1,64}$", str(name)):
            raise ValidationError(f"{where}: {name!r} is not a parameter name")
        return text
    if not check(text):
        raise ValidationError(f"{where} parameter {name}={value!r} is not a valid value")
    return text


def path(value: str, what: str = "path") -> str:
    text = str(value)
    if not text.startswith("/"):
        raise ValidationError(f"{what} {value!r} must be absolute")
    if any(c in text for c in "\n,") or len(text) > 4096:
        raise ValidationError(f"{what} {value!r} may not contain commas or newlines")
    return text


_TCMU_CFG = _LazyPattern(r"^[A-Za-z0-9_]+/[^:\n]*$")


def tcmu_config(value: str) -> str:
    """'<handler>/<cfgstring>'; the kernel's control parser splits on ':'."""
    text = str(value)
    if not _TCMU_CFG.match(text):
        raise ValidationError(f"user backstore config {value!r} must be '<handler>/<config>' without ':'")
    return text

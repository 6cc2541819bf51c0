"""What one iscsiadm command line parsed into (Ctx), where it writes, and its lazy imports."""

from __future__ import annotations

import importlib
import os
import sys

from ...initiator.exitcodes import ExitCode
from .options import Opt


class _Lazy:
    """A module imported on first use: `-m session` and the parser never need the record table,
    and every import costs (in the lab guest each one is a round of 9p reads)."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str):
        module = importlib.import_module(self._name)
        self.__dict__.update(module.__dict__)
        return getattr(module, attr)


ndb = _Lazy("iscsikit.initiator.nodedb")
R = _Lazy("iscsikit.initiator.records")

PROG = "iscsiadm"

# -- operations ----------------------------------------------------------------------
OPS = {"new": 1, "delete": 2, "update": 4, "show": 8, "nonpersistent": 16,
       "apply": 32, "applyall": 64, "login": 128, "logout": 256}


class Exit(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = int(code)


class Ctx:
    """Everything parsed from argv, plus where output goes (tests pass their own streams).

    A plain class, not a dataclass: importing dataclasses costs more than this whole parser.
    The node database is opened on first use; `-m session` never touches it.
    """
    mode: str | None = None
    target: str | None = None
    portal: str | None = None
    op: int = 0
    dtype: str | None = None
    login: bool = False
    logout: bool = False
    loginall: str | None = None
    logoutall: str | None = None
    rescan: bool = False
    stats: bool = False
    discover: bool = False
    sid: str | None = None
    print_level: int | None = None
    show_secrets: bool = False
    json: bool = False
    host: str | None = None
    submode: str | None = None
    killiscsid: str | None = None
    no_wait: bool = False
    ping_ip: str | None = None       # -a (iface -C ping)
    packet_size: int = 32            # -b
    ping_count: int = 1              # -c
    ping_interval: int = 0           # -i
    index: str | None = None         # -x (host -C chap|flashnode)
    portal_type: str | None = None   # -A (flashnode)
    debug: int = 0                   # -d

    def __init__(self, argv0: str, out, err, db: "ndb.NodeDB | None" = None, env=None,
                 err_tty: bool | None = None, **options) -> None:
        self.argv0, self.out, self.err = argv0, out, err
        self._db = db
        # the command's environment: os.environ, or its client's when it runs in the daemon
        self.env = os.environ if env is None else env
        # stderr is a terminal (the -L progress line); the client says so when forwarded
        self.err_tty = (err is sys.stderr and err.isatty()) if err_tty is None else err_tty
        self.ifaces: list[str] = []
        self.names: list[str] = []
        self.values: list[str] = []
        self._records: dict = {}
        for k, v in options.items():
            setattr(self, k, v)

    def record(self, nid: "ndb.NodeId") -> "ndb.Node":
        """A node record, read once per command: `-L all` filters on it, then logs in with it."""
        rec = self._records.get(nid)
        if rec is None:
            rec = self._records[nid] = self.db.read_node(nid)
        return rec

    @property
    def db(self) -> "ndb.NodeDB":
        if self._db is None:
            self._db = ndb.NodeDB(self.env.get(ndb.ENV_ROOT))
        return self._db

    def say(self, line: str = "") -> None:
        self.out.write(line + "\n")

    def error(self, line: str) -> None:
        self.err.write(f"{PROG}: {line}\n")

    def debug_line(self, level: int, line: str) -> None:
        """-d N: iscsikit's own debug lines on stderr, level N and below (never a secret)."""
        if self.debug >= level:
            self.err.write(f"{PROG}: {line}\n")

    def raw_error(self, line: str) -> None:
        self.err.write(line + "\n")

    def fail(self, line: str, code: int = ExitCode.INVAL) -> Exit:
        self.error(line)
        return Exit(code)

    def pairs(self) -> list[tuple[str, str]]:
        return list(zip(self.names, self.values))

    def dump_json(self, obj) -> None:
        import json
        self.out.write(json.dumps(obj, indent=2) + "\n")

    def portal_parts(self) -> tuple[str | None, int | None, int | None]:
        if self.portal is None:
            return None, None, None
        return ndb.parse_portal(self.portal)


# -- storing one option -------------------------------------------------------------
# Each converter takes (ctx, the option's argument, the attribute's current value) and
# gives the attribute's new value.

def _text(_ctx: Ctx, a, _old):
    return a


def _flag(_ctx: Ctx, _a, _old) -> bool:
    return True


def _number(_ctx: Ctx, a, _old) -> int:
    return R.atoi(a)     # iscsiadm reads these numbers with atoi: junk is 0


def _append(_ctx: Ctx, a, old: list) -> list:
    old.append(a)
    return old


def _operation(ctx: Ctx, a, old: int) -> int:
    if a not in OPS:
        raise ctx.fail(f"can not recognize operation: '{a}'")
    return old | OPS[a]


# letter -> (Ctx attribute, converter); a letter not here (-m, -h, -V) is not stored
STORE: dict[str, tuple[str, object]] = {
    "T": ("target", _text), "p": ("portal", _text), "I": ("ifaces", _append),
    "o": ("op", _operation), "t": ("dtype", _text), "n": ("names", _append),
    "v": ("values", _append), "l": ("login", _flag), "u": ("logout", _flag),
    "L": ("loginall", _text), "U": ("logoutall", _text), "R": ("rescan", _flag),
    "s": ("stats", _flag), "D": ("discover", _flag), "r": ("sid", _text),
    "P": ("print_level", _number), "S": ("show_secrets", _flag), "J": ("json", _flag),
    "H": ("host", _text), "C": ("submode", _text), "k": ("killiscsid", _text),
    "W": ("no_wait", _flag), "a": ("ping_ip", _text), "b": ("packet_size", _number),
    "c": ("ping_count", _number), "i": ("ping_interval", _number), "x": ("index", _text),
    "A": ("portal_type", _text), "d": ("debug", _number),
}


def _store(ctx: Ctx, o: Opt) -> None:
    row = STORE.get(o.letter)
    if row is not None:
        attr, convert = row
        setattr(ctx, attr, convert(ctx, o.arg, getattr(ctx, attr)))

"""A getopt_long emulation with iscsiadm 2.1.8's option table, down to glibc's messages
and unique long-option prefixes, and the letters each mode accepts."""

from __future__ import annotations

SHORT_WITH_ARG = set("mapbcCPTHiIUkLdrnvotxA")
SHORT_NO_ARG = set("RlDVhsSuW")
# (long name, takes argument, letter): iscsiadm's table order, which glibc uses
# when it lists the candidates of an ambiguous prefix
LONG_OPTIONS: tuple[tuple[str, bool, str], ...] = (
    ("mode", True, "m"), ("portal", True, "p"), ("targetname", True, "T"),
    ("interface", True, "I"), ("op", True, "o"), ("type", True, "t"), ("name", True, "n"),
    ("value", True, "v"), ("host", True, "H"), ("sid", True, "r"), ("rescan", False, "R"),
    ("print", True, "P"), ("discover", False, "D"), ("login", False, "l"),
    ("loginall", True, "L"), ("logout", False, "u"), ("logoutall", True, "U"),
    ("stats", False, "s"), ("killiscsid", True, "k"), ("debug", True, "d"),
    ("show", False, "S"), ("index", True, "x"), ("interval", True, "i"),
    ("flashnode_idx", True, "x"), ("portal_type", True, "A"), ("help", False, "h"),
    ("version", False, "V"), ("submode", True, "C"), ("ip", True, "a"),
    ("packetsize", True, "b"), ("count", True, "c"), ("no_wait", False, "W"),
    # iscsikit's own: machine-readable listings (not in open-iscsi)
    ("json", False, "J"),
)

# letters each mode accepts (facts §4.1); --json is ours and allowed everywhere
MODE_LETTERS: dict[str, str] = {
    "discovery": "DSIPdmntplovJ",
    "discoverydb": "DSIPdmntplovJ",
    "node": "RsPIdmlSonvupTULWJ",
    "session": "PiRdrmusonSvJ",
    "host": "CHdmPotnvxAJ",
    "iface": "HIdnvmPoCabciJ",
    "fw": "dmlWnvJ",
}


class Opt:
    __slots__ = ("letter", "arg", "error", "optopt")

    def __init__(self, letter: str, arg: str | None = None, error: str | None = None, optopt: str = "\0"):
        self.letter = letter      # '?' for a getopt error
        self.arg = arg
        self.error = error        # getopt's own message (without the program prefix)
        self.optopt = optopt

    def __eq__(self, other) -> bool:
        return isinstance(other, Opt) and all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    def __repr__(self) -> str:
        return f"Opt({', '.join(f'{k}={getattr(self, k)!r}' for k in self.__slots__)})"


def getopt(argv: list[str]) -> list[Opt]:
    """Options in argv order, as glibc getopt_long reports them (non-options are skipped)."""
    out: list[Opt] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        i += 1
        if a == "--":
            break
        if a.startswith("--"):
            body = a[2:]
            name, eq, value = body.partition("=")
            exact = [o for o in LONG_OPTIONS if o[0] == name]
            cands = exact or [o for o in LONG_OPTIONS if o[0].startswith(name)]
            if len({(o[1], o[2]) for o in cands}) > 1:
                names = " ".join(f"'--{o[0]}'" for o in cands)
                out.append(Opt("?", error=f"option '--{name}' is ambiguous; possibilities: {names}"))
                continue
            if not cands:
                out.append(Opt("?", error=f"unrecognized option '{a}'"))
                continue
            lname, has_arg, letter = cands[0]
            if has_arg:
                if not eq:
                    if i >= len(argv):
                        out.append(Opt("?", error=f"option '--{lname}' requires an argument",
                                       optopt=letter))
                        continue
                    value = argv[i]
                    i += 1
                out.append(Opt(letter, value))
            elif eq:
                out.append(Opt("?", error=f"option '--{lname}' doesn't allow an argument",
                               optopt=letter))
            else:
                out.append(Opt(letter))
            continue
        if not a.startswith("-") or a == "-":
            continue  # glibc permutes operands to the end; iscsiadm ignores them
        j = 1
        while j < len(a):
            ch = a[j]
            j += 1
            if ch in SHORT_NO_ARG:
                out.append(Opt(ch))
            elif ch in SHORT_WITH_ARG:
                if j < len(a):
                    out.append(Opt(ch, a[j:]))
                elif i < len(argv):
                    out.append(Opt(ch, argv[i]))
                    i += 1
                else:
                    out.append(Opt("?", error=f"option requires an argument -- '{ch}'", optopt=ch))
                break  # the rest of this word was the argument
            else:
                out.append(Opt("?", error=f"invalid option -- '{ch}'", optopt=ch))
    return out

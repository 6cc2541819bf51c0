"""One iscsiadm command line: find the mode, check every option against it, dispatch."""

from __future__ import annotations

import importlib
import os
import sys

from ...initiator.errors import IscsiError
from ...initiator.exitcodes import ExitCode
from . import login
from . import messages as msg
from .context import PROG, R, Ctx, Exit, _store, ndb
from .options import MODE_LETTERS, Opt, getopt

# mode -> (module, handler); a mode's module is imported only when it runs (start-up)
MODES: dict[str, tuple[str, str]] = {
    "node": ("node", "mode_node"),
    "iface": ("iface", "mode_iface"),
    "discovery": ("discovery", "mode_discovery"),
    "discoverydb": ("discovery", "mode_discoverydb"),
    "session": ("session", "session_mode"),
    "host": ("host", "mode_host"),
    "fw": ("host", "mode_fw"),
}


def handler(mode: str):
    row = MODES.get(mode)
    if row is None:
        return None
    return getattr(importlib.import_module(f".{row[0]}", __package__), row[1])


def run(argv: list[str], out=None, err=None, db: ndb.NodeDB | None = None,
        argv0: str | None = None, env=None, err_tty: bool | None = None) -> int:
    """Run one iscsiadm command line; returns the exit code (never raises for user errors)."""
    out = out or sys.stdout
    err = err or sys.stderr
    ctx = Ctx(argv0=argv0 or (sys.argv[0] if sys.argv else PROG), out=out, err=err, db=db,
              env=env, err_tty=err_tty)
    try:
        return int(_run(ctx, argv))
    except Exit as e:
        return e.code
    except IscsiError as e:      # a record, database or daemon refusal: its lines, its code
        for line in e.lines:
            ctx.error(line)
        return e.exit_code
    except Exception as e:       # a bug or a value nobody checked: one line and iscsiadm's code, no traceback
        ctx.error(f"internal error: {type(e).__name__}: {e}")
        if ctx.env.get("ISCSIKIT_DEBUG"):
            import traceback
            ctx.err.write(traceback.format_exc())
        return ExitCode.INTERNAL


def _run(ctx: Ctx, argv: list[str]) -> int:
    opts = getopt(argv)

    def getopt_error(o: Opt) -> None:
        ctx.raw_error(f"{ctx.argv0}: {o.error}")

    # iscsiadm finds the mode first (the first -m), printing getopt's complaints about
    # whatever precedes it, then walks every option again checking it against the mode.
    mode = None
    for o in opts:
        if o.letter == "?":
            getopt_error(o)
        elif o.letter == "m":
            mode = o.arg
            break
    if mode is None:
        for o in opts:
            if o.letter == "?":
                raise ctx.fail(f"unrecognized character '{o.optopt}'")
            if o.letter == "V":
                ctx.say(f"{PROG} version {R.VERSION}")
                return 0
            if o.letter == "h":
                ctx.out.write(msg.USAGE)
                return 0
            _store(ctx, o)
        if ctx.killiscsid is not None:
            return login.kill_daemon(ctx)
        ctx.raw_error(f"Try `{PROG} --help' for more information.")
        return ExitCode.INVAL
    letters = MODE_LETTERS.get(mode)
    for o in opts:
        if o.letter == "?":
            getopt_error(o)
        if letters is not None and o.letter not in letters:
            # iscsiadm names discoverydb "discovery" here (its mode_paras table)
            raise ctx.fail(f"{'discovery' if mode == 'discoverydb' else mode} mode: option "
                           f"'-{o.letter}' is not allowed/supported")
        if o.letter != "m":
            _store(ctx, o)
    ctx.mode = mode
    run_mode = handler(mode)
    if run_mode is None:
        raise ctx.fail("mode -1 is not yet supported")
    return run_mode(ctx)


def main(argv: list[str] | None = None) -> int:
    # the forwarding iscsiadm (userspace/iscsiadm-forward) execs this with the daemon down,
    # naming what it was called as: messages say that name, as iscsiadm's say argv[0]
    argv0 = os.environ.pop("ISCSIKIT_ARGV0", None)
    rc = run(sys.argv[1:] if argv is None else argv, argv0=argv0)
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        pass
    return rc


if __name__ == "__main__":
    sys.exit(main())

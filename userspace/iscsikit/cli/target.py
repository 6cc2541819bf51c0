"""`iscsikit-target`: the targetcli-like shell, interactive or one-shot.

    iscsikit-target                                   # interactive, tab completion
    iscsikit-target /iscsi create iqn.2024-01.com.example:t1
    iscsikit-target --json ls /iscsi
    iscsikit-target restoreconfig /etc/target/saveconfig.json
    iscsikit-target sessions --follow [--json]        # a line per login, logout, drop, failed login
    iscsikit-target < commands.txt                    # one command per line, stops at the first error

Exit codes: 0 done, 1 the kernel or file system refused (nothing half-made
is left), 2 bad input (nothing was touched), 3 no such object or file.
"""

from __future__ import annotations

import os
import re
import sys

from ..target.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE

PREFS_DIR = "~/.iscsikit-target"


def _parser():
    import argparse
    p = argparse.ArgumentParser(prog="iscsikit-target", description="LIO iSCSI target manager (targetcli's tree)")
    p.add_argument("--save-file", default=os.environ.get("ISCSIKIT_TARGET_SAVEFILE"),
                   help="saveconfig.json to save to and restore from (default /etc/target/saveconfig.json)")
    p.add_argument("--json", action="store_true", help="print `ls` and `sessions` as JSON")
    p.add_argument("--configfs", default=None, help=argparse.SUPPRESS)
    p.add_argument("command", nargs=argparse.REMAINDER, help="one command to run, e.g. /iscsi create <wwn>")
    return p


class _Args:
    json = False
    configfs = None
    command: list = []

    def __init__(self):
        # read per run: iscsikit-targetd runs many, each in its client's environment
        self.save_file = os.environ.get("ISCSIKIT_TARGET_SAVEFILE")


def _quick_args(argv: list[str]):
    """The common command lines without argparse (its import is a share of a one-shot
    command's start-up under emulation); anything unusual goes to argparse."""
    args, i = _Args(), 0
    while i < len(argv) and argv[i].startswith("--"):
        opt, sep, val = argv[i].partition("=")
        if opt == "--json" and not sep:
            args.json, i = True, i + 1
            continue
        if opt not in ("--save-file", "--configfs"):
            return None
        if not sep:
            if i + 1 >= len(argv):
                return None
            val, i = argv[i + 1], i + 1
        setattr(args, opt[2:].replace("-", "_"), val)
        i += 1
    args.command = list(argv[i:])
    if any(a in ("-h", "--help") for a in args.command[:1]) or (args.command and args.command[0].startswith("-")):
        return None
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _quick_args(argv) or _parser().parse_args(argv)
    from ..target import configfs, saveconfig
    from ..target.manager import Manager

    manager = Manager(root=args.configfs or configfs.ROOT, save_file=args.save_file or saveconfig.DEFAULT_SAVE_FILE)
    oneshot = bool(args.command)
    fast = _root_verb(args.command)
    if fast is not None:
        return _run_root_verb(manager, args, *fast)
    fast = None if args.json else _fast_command(args.command)
    if fast is not None:
        return _run_fast(manager, *fast)

    from configshell import ExecutionError

    from ..target.shell import TargetShell
    # One-shot runs keep no preferences file: concurrent runs would corrupt
    # it (configshell-fb PR #61).
    shell = TargetShell(manager, None if oneshot else os.environ.get("ISCSIKIT_TARGET_HOME", PREFS_DIR),
                        oneshot=oneshot)
    shell.json_output = args.json
    if oneshot:
        return _run_once(shell, args, ExecutionError)
    if not sys.stdin.isatty():
        return _run_batch(shell, ExecutionError)
    while not shell._exit:
        try:
            shell.run_interactive()
        except ExecutionError as e:
            shell.log.error(str(e))
        except KeyboardInterrupt:
            break
    if shell.prefs["auto_save_on_exit"] and os.geteuid() == 0:
        try:
            manager.max_backup_files = int(shell.prefs["max_backup_files"])
            print(f"Saving the configuration to {manager.save()}")
        except Exception as e:
            print(f"iscsikit-target: could not save the configuration: {e}", file=sys.stderr)
            return EXIT_FAILED
    return EXIT_OK


def servable(argv: list[str]) -> bool:
    """Whether iscsikit-targetd may run this command line in its warm process
    (cli/target_served.py): the one-shot commands that main() runs without configshell,
    whose whole output is what they print. The interactive shell, batch input on stdin,
    commands through configshell (`ls` on a terminal among them), --help and
    `sessions --follow` (it runs until interrupted) run in their own process."""
    args = _quick_args(argv)
    if args is None or not args.command:
        return False
    verb = _root_verb(args.command)
    if verb is not None:
        return not (verb[0] == "sessions" and "--follow" in verb[1])
    return not args.json and _fast_command(args.command) is not None


# Whole-configuration verbs used by boot scripts and automation: they need no
# tree, so they skip configshell and pyparsing (seconds of start-up in the lab
# guest) and call the manager the shell would call.
ROOT_VERBS = {"saveconfig", "restoreconfig", "clearconfig", "sessions"}


def _root_verb(words: list[str]):
    if words and words[0] == "/":
        words = words[1:]
    if not words or words[0] not in ROOT_VERBS:
        return None
    pos, kw = [], {}
    for w in words[1:]:
        k, sep, v = w.partition("=")
        if sep and k.isidentifier():
            kw[k] = v
        else:
            pos.append(w)
    return words[0], pos, kw


def _run_root_verb(manager, args, verb: str, pos: list, kw: dict) -> int:
    from ..target import sessions, validate
    from ..target.errors import TargetError, ValidationError
    try:
        if verb == "saveconfig":
            if len(pos) > 1 or kw:
                raise ValidationError("usage: saveconfig [savefile]")
            print(f"Configuration saved to {manager.save(pos[0] if pos else None)}")
        elif verb == "clearconfig":
            if not validate.boolean(kw.get("confirm", "false"), "confirm"):
                raise ValidationError("clearconfig removes everything: run it with confirm=true")
            warnings = []
            steps = manager.clear(warnings)
            for w in warnings:
                print(f"warning: {w}", file=sys.stderr)
            print(f"All configuration cleared ({len(steps)} steps)")
        elif verb == "restoreconfig":
            names = ("savefile", "clear_existing", "target", "storage_object")
            unknown = set(kw) - set(names) - {"dry_run"}
            if len(pos) > len(names) or unknown:
                raise ValidationError("usage: restoreconfig [savefile] [clear_existing=false] [target=WWN] "
                                      "[storage_object=NAME] [dry_run=true]")
            for name, value in zip(names, pos):
                if name in kw:
                    raise ValidationError(f"restoreconfig: {name} given twice")
                kw[name] = value
            dry = validate.boolean(kw.get("dry_run", "false"), "dry_run")
            path = kw.get("savefile") or None
            warnings: list[str] = []
            steps = manager.restore(path, warnings, dry_run=dry,
                                    clear_existing=validate.boolean(kw.get("clear_existing", "false"),
                                                                    "clear_existing"),
                                    target=kw.get("target") or None,
                                    storage_object=kw.get("storage_object") or None)
            for w in warnings:
                print(f"warning: {w}", file=sys.stderr)
            for st in steps if dry else []:
                print(st.describe())
            n = len(steps)
            print(f"Configuration restored from {path or manager.save_file} ({n} change{'s' if n != 1 else ''})")
        else:
            flags = {w for w in pos if w.startswith("--")}
            pos = [w for w in pos if not w.startswith("--")]
            if flags - {"--follow", "--json", "--poll"}:
                raise ValidationError("usage: sessions [list|detail] [--follow [--poll]] [--json]")
            as_json = args.json or "--json" in flags
            if "--follow" in flags:
                return _follow(manager, as_json, poll="--poll" in flags)
            found = sessions.list_sessions(manager.root)
            if as_json:
                import json
                print(json.dumps([x.to_dict() for x in found], indent=2))
            elif not found:
                print("(no open sessions)")
            for x in [] if as_json else found:
                kind = "demo-mode" if x.dynamic else "acl"
                print(f"{x.initiator} -> {x.target} tpg{x.tpg} [{kind}] sid {x.sid if x.sid is not None else '-'} "
                      f"{x.state}")
                if pos[:1] == ["detail"]:
                    for c in x.connections:
                        print(f"    cid {c.cid} {c.state} {c.address} {c.transport}")
    except TargetError as e:
        print(f"iscsikit-target: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:
        print(f"iscsikit-target: {e.strerror}: {e.filename}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


# The everyday one-shot commands (what OpenStack Cinder's LIO driver, os-brick's
# tests and scripts run, one process per step) go straight to target/ops.py,
# the functions the shell's nodes call: no configshell, no pyparsing, no tree
# of the whole configuration (bench/bench_target_cinder.py).  Anything else,
# and `ls` on a terminal (colours), goes through the shell.
_TPG_PATH = re.compile(r"^/iscsi/([^/]+)/tpg(\d+)/(luns|acls|portals)/?$")
_FAST = {
    ("/backstores/fileio", "create"): "fileio_create",
    ("/backstores/block", "create"): "block_create",
    ("/backstores/ramdisk", "create"): "ramdisk_create",
    ("/iscsi", "create"): "iscsi_create",
    ("/iscsi", "delete"): "iscsi_delete",
    ("luns", "create"): "lun_create", ("luns", "delete"): "lun_delete",
    ("acls", "create"): "acl_create", ("acls", "delete"): "acl_delete",
    ("portals", "create"): "portal_create", ("portals", "delete"): "portal_delete",
}


def _fast_command(words: list[str]):
    """(ops function name, context args, positional, keywords) or None for the shell."""
    if not words:
        return None
    if words[0] == "ls" or (len(words) == 2 and words[1] == "ls"):
        path = words[0] if words[1:] == ["ls"] else (words[1] if len(words) == 2 else "/" if len(words) == 1 else None)
        from ..target.listing import use_colour
        if path is None or not path.startswith("/") or use_colour(sys.stdout):
            return None
        return "ls", (path,), [], {}
    if len(words) < 2 or not words[0].startswith("/"):
        return None
    path, verb = words[0].rstrip("/") or "/", words[1]
    context: tuple = ()
    m = _TPG_PATH.match(path)
    if m:
        context, path = (m.group(1), int(m.group(2))), m.group(3)
    name = _FAST.get((path, verb))
    if name is None:
        return None
    pos, kw = [], {}
    for w in words[2:]:
        k, sep, v = w.partition("=")
        if sep and k.isidentifier():
            kw[k] = v
        else:
            pos.append(w)
    return name, context, pos, kw


def _check_call(fn, name: str, given: int, pos: list, kw: dict) -> None:
    """The parameters a command line gives fit the function (configshell's own check), without
    importing inspect: bad ones are usage errors before anything is touched."""
    from ..target.errors import ValidationError
    code = fn.__code__
    params = code.co_varnames[:code.co_argcount]
    required = code.co_argcount - len(fn.__defaults__ or ())
    user = params[given:]
    verb = name.replace("_", " ")
    if len(pos) > len(user):
        raise ValidationError(f"{verb}: too many parameters (it takes {', '.join(user)})")
    for k in kw:
        if k not in user:
            raise ValidationError(f"{verb}: unknown parameter {k!r} (it takes {', '.join(user)})")
        if user.index(k) < len(pos):
            raise ValidationError(f"{verb}: {k} given twice")
    missing = [p for i, p in enumerate(params[:required]) if i >= given + len(pos) and p not in kw]
    if missing:
        raise ValidationError(f"{verb}: missing parameter {missing[0]}")


def _run_fast(manager, name: str, context: tuple, pos: list, kw: dict) -> int:
    from ..target import ops
    from ..target.errors import TargetError
    try:
        if name == "ls":
            from ..target import listing
            manager.ensure_loaded()
            node = listing.find(listing.tree(listing.snapshot_for(manager.root, context[0]), manager.root), context[0])
            if node is None:
                print(f"iscsikit-target: no such path {context[0]}", file=sys.stderr)
                return 3
            print(listing.render(node))
            return EXIT_OK
        fn = getattr(ops, name)
        _check_call(fn, name, 2 + len(context), pos, kw)
        print(fn(manager, ops.PREFS, *context, *pos, **kw))
    except TargetError as e:
        print(f"iscsikit-target: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:
        print(f"iscsikit-target: {e.strerror}: {e.filename}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


# configfs re-read at targetcli's granularity when the events module is not there
POLL_INTERVAL = 1.0


def _follow(manager, as_json: bool, poll: bool = False) -> int:
    """`sessions --follow`: one line (or JSON object) per target event until interrupted;
    `--poll` reads configfs every second even when the events module is there."""
    import json

    from ..target import events
    stream = None
    if poll:
        stream = events.poll(manager.root, POLL_INTERVAL)
    else:
        try:
            reader = events.Reader()
        except events.NotLoaded as e:
            print(f"iscsikit-target: {e}: polling configfs every {POLL_INTERVAL:g} s instead "
                  "(logins and closes only, seen up to a second late; no failed logins, no reasons)",
                  file=sys.stderr, flush=True)
            stream = events.poll(manager.root, POLL_INTERVAL)
        except PermissionError:
            print("iscsikit-target: the target events carry initiator names and addresses: "
                  "following them needs CAP_NET_ADMIN (run as root)", file=sys.stderr)
            return EXIT_FAILED
        else:
            if not reader.status.armed:
                why = (f"symbol {reader.status.missing} is missing" if reader.status.missing
                       else "iscsi_target_mod is not loaded")
                print(f"iscsikit-target: {events.MODULE} is loaded but not armed ({why}); "
                      "events start when iscsi_target_mod is loaded", file=sys.stderr, flush=True)
            stream = reader.events()
    try:
        for ev in stream:
            print(json.dumps(ev.to_dict()) if as_json else ev.line(), flush=True)
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:
        # the reader of our output went away (`| head`): stop without a traceback
        sys.stdout = None
        return EXIT_OK
    return EXIT_OK


def _run_batch(shell, ExecutionError) -> int:
    """Commands piped on stdin, one per line (as `targetcli < script`); stops at the first error."""
    for n, line in enumerate(sys.stdin, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            shell.run_cmdline(line)
        except ExecutionError as e:
            print(f"iscsikit-target: line {n}: {e}", file=sys.stderr)
            err = shell.last_error
            return err.exit_code if err is not None and str(err) == str(e) else EXIT_USAGE
        except Exception as e:
            print(f"iscsikit-target: line {n}: {e}", file=sys.stderr)
            return EXIT_USAGE
        if shell._exit:
            break
    return EXIT_OK


def _run_once(shell, args, ExecutionError) -> int:
    words = args.command
    if args.json and words and (words[-1] == "ls" or (len(words) == 2 and words[1] == "ls")
                                or words[0] == "ls"):
        path = words[0] if words[0] != "ls" else (words[1] if len(words) > 1 else "/")
        try:
            node = shell._root_node.get_node(path)
        except ValueError as e:
            print(f"iscsikit-target: {e}", file=sys.stderr)
            return 3
        import json
        print(json.dumps(node.to_json(), indent=2, sort_keys=True))
        return EXIT_OK
    try:
        shell.run_cmdline(" ".join(words))
    except ExecutionError as e:
        print(f"iscsikit-target: {e}", file=sys.stderr)
        err = shell.last_error
        return err.exit_code if err is not None and str(err) == str(e) else EXIT_USAGE
    except Exception as e:  # pyparsing and configshell raise their own types for bad syntax
        print(f"iscsikit-target: {e}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

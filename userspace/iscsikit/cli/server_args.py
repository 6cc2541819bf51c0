"""What the two servers' entry points share: iscsikitd (cli/daemon.py) and iscsikit-targetd
(cli/targetd.py) take the same options, log the same way and run as root only."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .. import __version__


def parse(prog: str, description: str, epilog: str, socket_help: str, argv: list[str] | None):
    """--socket, --log-level, -V; logging set up on stderr with the program's name."""
    p = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog)
    p.add_argument("--socket", help=socket_help)
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.add_argument("-V", "--version", action="version", version=f"{prog} {__version__}")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format=f"{prog}: %(levelname)s %(message)s")
    return args


def refuse_non_root(prog: str, why: str) -> bool:
    """True (after one line on stderr saying why) when not running as root."""
    if os.geteuid() != 0:
        print(f"{prog}: must run as root ({why})", file=sys.stderr)
        return True
    return False

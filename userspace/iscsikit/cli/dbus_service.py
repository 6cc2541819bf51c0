"""`iscsikit-dbus`: serve the initiator's D-Bus API (org.iscsikit.Initiator1) on the system bus."""

from __future__ import annotations

import argparse
import logging
import os
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="iscsikit-dbus", description="The iscsikit initiator's D-Bus API, in front of iscsikitd.",
        epilog="exit status: 0 stopped by SIGTERM/SIGINT; 1 could not start (one line says why); 2 bad usage.")
    p.add_argument("--address", help="bus address (default: the system bus, $DBUS_SYSTEM_BUS_ADDRESS honoured)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="iscsikit-dbus: %(levelname)s %(message)s")
    if os.geteuid() != 0:
        print("iscsikit-dbus: must run as root (the bus policy lets only root own the name)", file=sys.stderr)
        return 1
    try:
        from . import dbus_api as dbus_service
    except ImportError as e:
        print(f"iscsikit-dbus: dbus-python is missing ({e}); install iscsikit[dbus]", file=sys.stderr)
        return 1
    try:
        dbus_service.serve(args.address)
    except Exception as e:  # dbus.DBusException: no bus, name taken, policy refusal
        print(f"iscsikit-dbus: cannot serve {dbus_service.BUS_NAME}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`iscsikit-adm` (also installed as `iscsiadm`): open-iscsi 2.1.8's command line.

Programs such as os-brick, CSI drivers, vdsm, libvirt and Proxmox run
iscsiadm and branch on its exact stdout lines, stderr lines and exit codes
(interop-facts §2.9), so this package copies them as Debian's 2.1.8 binary
prints them, down to getopt_long's messages and unique long-option prefixes.

    options.py    the getopt_long emulation and each mode's letters
    context.py    Ctx: what a command line parsed into, where it writes
    main.py       find the mode, check the options, dispatch (run, main)
    node.py, iface.py, discovery.py, session.py, host.py    one module per mode
    login.py      the rows that reach the daemon (login, logout, stats, rescan)
    messages.py   the messages several modes print, and the usage text

Modules import down this list only (main → modes → login → context →
options); a mode's module is imported when it runs. Imports stay light: the
CLI also runs in-process in a slow emulated guest when the daemon is down.
"""

from .context import PROG, Ctx
from .main import main, run
from .options import getopt

__all__ = ["PROG", "Ctx", "getopt", "main", "run"]

"""`-m host` and `-m fw`."""

from __future__ import annotations

import os

from ...initiator.exitcodes import ExitCode
from .context import Ctx
from .login import daemon_down
from .node import _no


def mode_host(ctx: Ctx) -> int:
    base = os.path.join(ctx.env.get("ISCSIKIT_SYSFS_ROOT", "/sys"), "class", "iscsi_host")
    if not (os.path.isdir(base) and os.listdir(base)):
        return _no(ctx, "No iSCSI hosts.")
    return daemon_down(ctx)


def mode_fw(ctx: Ctx) -> int:
    ctx.error("Could not get list of targets from firmware. (err 21)")
    return ExitCode.NO_OBJS_FOUND

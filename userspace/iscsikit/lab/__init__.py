"""The QEMU lab: the real kernel's iSCSI data plane on a machine whose own kernel has none."""

from .errors import GuestCommandError, GuestError, LabError
from .guest import Guest, Result
from .kernel import Kernel, resolve

__all__ = ["Guest", "GuestCommandError", "GuestError", "Kernel", "LabError", "Result", "resolve"]

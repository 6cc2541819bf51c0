"""Errors of the target manager, each a single line a user can act on.

The exit code travels with the error so the CLI never has to guess it.
"""

EXIT_OK = 0
EXIT_FAILED = 1          # the kernel or the file system refused; nothing half-made is left
EXIT_USAGE = 2           # bad input, found before anything was touched
EXIT_NOT_FOUND = 3       # the named object or file does not exist


class TargetError(Exception):
    exit_code = EXIT_FAILED

    def __init__(self, message: str):
        # One line: multi-line kernel messages would break the shell's output.
        super().__init__(" ".join(str(message).split()))


class ValidationError(TargetError):
    """Input rejected before configfs was touched."""
    exit_code = EXIT_USAGE


class NotFoundError(TargetError):
    exit_code = EXIT_NOT_FOUND


class ApplyError(TargetError):
    """The kernel refused a step; the steps already done were rolled back."""

    def __init__(self, message: str, rollback_errors: list[str] | None = None):
        self.rollback_errors = list(rollback_errors or [])
        if self.rollback_errors:
            message += f" (and rollback failed: {self.rollback_errors[0]})"
        super().__init__(message)

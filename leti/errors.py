"""The one-line error exit shared by the ``leti`` command and the pipeline's stage scripts.

Bad input (a malformed arch, an unknown device, a corrupt Parquet file, a missing params section) and
a lost device are the user's to fix, not leti's bugs: they end a command with one line naming the
input, never a traceback. A lost device exits with ``EX_TEMPFAIL`` (75), which the pipeline flow
retries; bad input with 2; any other failure a command names (a pipeline stage that failed) with 1.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

DEVICE_LOST = os.EX_TEMPFAIL
BAD_INPUT = 2
FAILED = 1


class DeviceError(RuntimeError):
    """The device itself failed (disconnected, busy, timed out): worth retrying, unlike a bad model."""


class BackendUnavailableError(RuntimeError):
    """The backend cannot run on this machine at all (a missing package); stops the campaign early."""


USER_ERRORS = (ValueError, KeyError, FileNotFoundError, DeviceError, BackendUnavailableError)
"""Errors that mean bad input or a lost device: reported in one line, never as a traceback."""


def message(error: BaseException) -> str:
    """The error's own words (a ``KeyError`` prints its argument without quotes)."""
    return str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)


def report(prog: str, error: BaseException) -> int:
    """Print ``PROG: error: MESSAGE`` on stderr; the exit code for the kind of error."""
    print(f"{prog}: error: {message(error)}", file=sys.stderr)
    if isinstance(error, DeviceError):
        return DEVICE_LOST
    return BAD_INPUT if isinstance(error, USER_ERRORS) else FAILED


def stage_main(prog: str, main: Callable[[], object], also: tuple[type[BaseException], ...] = ()) -> None:
    """Run a stage script's or flow's ``main``; bad input, a lost device (or an error of ``also``) ends
    it with one line and its exit code."""
    try:
        main()
    except USER_ERRORS + also as error:
        raise SystemExit(report(prog, error)) from None

"""Exception hierarchy shared by the edge runtime and the trainer.

Every message says what was wrong, what was found, and how to fix it, so that the command line
can print it as one line and exit non-zero without a traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable


class ProjectError(Exception):
    """Base class of every error this project raises on purpose."""

    exit_code = 1


class ConfigError(ProjectError):
    """A configuration file or option is malformed or out of range."""

    exit_code = 2


class BundleError(ProjectError):
    """A model bundle is missing, tampered with, or of an unsupported format."""

    exit_code = 3


class DataError(ProjectError):
    """Training or evaluation data cannot be used (unreadable, empty, inconsistent)."""

    exit_code = 4


class ImageError(DataError):
    """One image cannot be decoded or has an unusable size or channel count."""


class SourceError(ProjectError):
    """A frame source failed (camera gone, file unreadable, end of a non-looping replay)."""

    exit_code = 5


class BackendError(ProjectError):
    """The inference backend (LiteRT, tflite-runtime, Edge TPU) is missing or failed."""

    exit_code = 6


class PublishError(ProjectError):
    """The MQTT publisher or its spool cannot work (bad credentials, unwritable spool)."""

    exit_code = 7


SIGINT_EXIT_CODE = 130  # the shell's convention for a process ended by Ctrl-C
BROKEN_PIPE_EXIT_CODE = 141  # 128 + SIGPIPE: what a shell reports for a reader that went away
OS_ERROR_EXIT_CODE = 1  # a general failure, as for a file a command cannot read or write


def run_command(prog: str, command: Callable[[], int]) -> int:
    """Run a CLI command: a ProjectError, or an OSError about a named file, prints as one line
    ``PROG: error: …`` on stderr and returns an exit code; anything else is a bug and keeps its
    traceback."""
    try:
        return int(command())
    except ProjectError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return SIGINT_EXIT_CODE
    except BrokenPipeError:
        # The reader went away (``edge score … | head``): stop quietly, as Unix tools do, and
        # keep Python from complaining again when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return BROKEN_PIPE_EXIT_CODE
    except OSError as exc:
        if exc.filename is None:  # not about a file: a bug or the network keeps its traceback
            raise
        # The file system said no to a path (a file in the way, no permission, a full disk):
        # the environment, not a bug.
        print(f"{prog}: error: {exc}. Check the path, its permissions and the free space.",
              file=sys.stderr)
        return OS_ERROR_EXIT_CODE

"""Keep TensorFlow's converter chatter off the user's terminal.

The TFLite converter prints from Python (``Saved artifact at ...``), from C++ straight to file
descriptors 1 and 2 (``fully_quantize: 0, ...``) and through ``warnings``. Only a file-descriptor
redirect catches all three. What was captured is kept and handed back, so a failed conversion can
still show the converter's own explanation.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

# How much of a captured log a failure message quotes (characters).
LOG_TAIL_CHARS = 2000


@dataclass
class CapturedOutput:
    """Text written to stdout/stderr while a :func:`silenced` block ran."""

    text: str = ""

    def tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        return self.text[-chars:]


def quiet_tensorflow_loggers() -> None:
    """Lower the Python-side loggers of TensorFlow and absl to errors only."""
    for name in ("tensorflow", "absl", "keras"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with contextlib.suppress(ImportError):
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)


@contextlib.contextmanager
def silenced() -> Iterator[CapturedOutput]:
    """Redirect fds 1 and 2 (and Python warnings) into a buffer for the duration of the block."""
    captured = CapturedOutput()
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    python_text = io.StringIO()
    with tempfile.TemporaryFile(mode="w+b") as sink:
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            # Python-level writes too: sys.stdout may not be fd 1 (pytest, notebooks).
            with warnings.catch_warnings(), contextlib.redirect_stdout(python_text), \
                    contextlib.redirect_stderr(python_text):
                # The converter warns about things it then handles (e.g. input statistics it
                # derives from the representative set); the user can do nothing about them.
                warnings.simplefilter("ignore")
                yield captured
        finally:
            with contextlib.suppress(ValueError, OSError):
                sys.stdout.flush()
                sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            sink.seek(0)
            captured.text = python_text.getvalue() + sink.read().decode("utf-8", errors="replace")

"""Keras (and with it TensorFlow), imported once and quietly.

TensorFlow's C++ runtime writes start-up lines (``oneDNN custom operations are on ...``,
``absl::InitializeLog``) straight to file descriptor 2 before any Python logging setting can act,
so the import itself runs inside :func:`trainer.quiet.silenced`. An import that fails still
raises its own ImportError. Trainer modules take ``keras`` from here rather than importing it.
"""

from __future__ import annotations

from trainer.quiet import quiet_tensorflow_loggers, silenced

with silenced():
    import keras as keras  # re-exported on purpose

quiet_tensorflow_loggers()

__all__ = ["keras"]

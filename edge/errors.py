"""Exception hierarchy shared by the edge runtime and the trainer.

Every message says what was wrong, what was found, and how to fix it, so that the command line
can print it as one line and exit non-zero without a traceback.
"""

from __future__ import annotations


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

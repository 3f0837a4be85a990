"""Error types that reach a user as one clear line.

Every error a person can cause (a bad file, a missing model, a corrupt bundle)
is a :class:`RelayError`. The CLI prints ``error: <message>`` and exits
non-zero; daemons log the line and carry on. Anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations


class RelayError(Exception):
    """Base class for errors that are the user's input, not a bug."""


class UsageError(RelayError):
    """A command was asked for something its flags cannot mean (an unknown
    edge or group in ``--to``, a bad priority): exit 2, click's convention
    for usage mistakes, where other user errors exit 1."""


class BundleError(RelayError):
    """A bundle cannot be decoded: wrong magic, unknown version, bad hash,
    truncation, unknown dictionary or a malformed body.

    ``reason`` is a short machine-readable tag (``magic``, ``version``,
    ``hash``, ``truncated``, ``dictionary``, ``body``) so a daemon can count
    rejections by cause.
    """

    def __init__(self, reason: str, message: str, source: str | None = None) -> None:
        self.reason = reason
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{message}")


class AudioInputError(RelayError):
    """An input file is missing, empty, or not audio we can decode."""


class ModelError(RelayError):
    """A model (ASR, TTS) cannot be found or loaded."""

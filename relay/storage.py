"""A full disk is a condition a daemon waits out, not an error that stops it.

At sea nobody restarts a daemon that gave up because its disk filled, and a
bundle marked "failed" for want of space is a briefing lost. So the daemons
run every write that a full disk can refuse (SQLite commits, WAV files)
through :func:`persist`: it retries with a capped, doubling pause and logs
one line when the condition starts and one when it ends. What they had not
committed they have not acknowledged to the broker either, so nothing is
lost while they wait.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import sqlite3
import time
from collections.abc import Callable
from typing import TypeVar

from relay.errors import RelayError

T = TypeVar("T")
FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
SQLITE_FULL, SQLITE_IOERR = 13, 10


class StorageFull(RelayError):
    """A write failed because the disk (or a quota) is full."""


def is_full(exc: BaseException) -> bool:
    """True for the errors a full disk causes: SQLite's "database or disk is
    full" (and its I/O errors, which a full disk also gives), ENOSPC, EDQUOT."""
    if isinstance(exc, StorageFull):
        return True
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None and code & 0xFF in (SQLITE_FULL, SQLITE_IOERR):
            return True
        return "disk is full" in str(exc) or "disk I/O error" in str(exc)
    if isinstance(exc, OSError):
        return exc.errno in FULL_ERRNOS
    cause = exc.__cause__ or exc.__context__
    return cause is not None and cause is not exc and is_full(cause)


def describe(exc: BaseException) -> str:
    """One line for a storage error."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return str(exc)


class Waiter:
    """Pacing for one condition: one log line when it starts, one when it ends,
    a doubling pause (``first`` .. ``longest`` seconds) between tries. A disk at
    its limit flaps (a write fits, the next does not): an episode that starts
    within ``quiet`` seconds of the last one's end is logged only if it lasts a
    minute, so a flapping disk is a line or two, not a line per write."""

    LONG = 60.0  # a quiet episode this long is logged after all

    def __init__(self, log: logging.Logger, what: str, first: float = 0.5, longest: float = 30.0,
                 quiet: float = 600.0) -> None:
        self.log = log
        self.what = what
        self.first = first
        self.longest = longest
        self.quiet = quiet
        self._wait = first
        self.since: float | None = None
        self._ended: float | None = None  # when the last episode ended
        self._logged = False  # this episode's start was logged

    @property
    def waiting(self) -> bool:
        return self.since is not None

    def delay(self, exc: BaseException) -> float:
        """Note a failure; the seconds to pause before trying again."""
        now = time.monotonic()
        if self.since is None:
            self.since = now
            self._wait = self.first
            self._logged = False
        else:
            self._wait = min(self._wait * 2, self.longest)
        recent = self._ended is not None and self.since - self._ended <= self.quiet
        if not self._logged and (not recent or now - self.since >= self.LONG):
            self.log.warning("%s: disk full (%s); waiting for space, nothing is dropped", self.what, describe(exc))
            self._logged = True
        return self._wait

    def ok(self) -> None:
        if self.since is not None:
            now = time.monotonic()
            if self._logged:
                self.log.info("%s: space again after %.0f s; resuming", self.what, now - self.since)
            self.since = None
            self._ended = now


async def persist(fn: Callable[[], T], waiter: Waiter) -> T:
    """``fn()``, retried for as long as the disk is full."""
    while True:
        try:
            result = fn()
        except Exception as exc:
            if not is_full(exc):
                raise
            await asyncio.sleep(waiter.delay(exc))
            continue
        waiter.ok()
        return result


def persist_blocking(fn: Callable[[], T], waiter: Waiter) -> T:
    """:func:`persist` for code outside the event loop (a daemon's start, a worker thread)."""
    while True:
        try:
            result = fn()
        except Exception as exc:
            if not is_full(exc):
                raise
            time.sleep(waiter.delay(exc))
            continue
        waiter.ok()
        return result

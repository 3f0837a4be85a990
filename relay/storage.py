"""A full disk is a condition a daemon waits out; a failing one, a condition
it reports. Neither is an error that stops it.

At sea nobody restarts a daemon that gave up because its disk filled, and a
bundle marked "failed" for want of space is a briefing lost. So the daemons
run every write that a full disk can refuse (SQLite commits, WAV files)
through :func:`persist`: on a full disk (ENOSPC, EDQUOT, SQLite's "database
or disk is full") it first prunes what retention allows (``[retention]``),
then retries with a capped, doubling pause, logging one line when the
condition starts and one when it ends. What they had not committed they have
not acknowledged to the broker either, so nothing is lost while they wait.

Any other I/O failure (EIO, a read-only remount, SQLite's "disk I/O error"
with room on the disk: an SD card wearing out) is not a full disk and is not
called one: it is logged as an I/O error, and the operation is retried at a
slower pace while the daemon's other tasks go on with what still works.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal, TypeVar

from relay.errors import RelayError

T = TypeVar("T")
FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
IO_ERRNOS = {errno.EIO, errno.EROFS, errno.ENXIO, errno.ENODEV}
SQLITE_FULL, SQLITE_IOERR, SQLITE_CORRUPT, SQLITE_READONLY, SQLITE_NOTADB = 13, 10, 11, 8, 26
LOW_SPACE = 1024 * 1024  # bytes free under which SQLite's "disk I/O error" is taken for a full disk
Kind = Literal["full", "io"]


class StorageFull(RelayError):
    """A write failed because the disk (or a quota) is full."""


def _sqlite_code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


def _statvfs(path: str | Path) -> os.statvfs_result | None:
    """The filesystem holding ``path`` (its nearest existing folder)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return os.statvfs(p)
    except OSError:
        return None


def free_bytes(path: str | Path | None) -> int | None:
    """Bytes free to this process on the filesystem holding ``path``."""
    st = _statvfs(path) if path is not None else None
    return None if st is None else st.f_bavail * st.f_frsize


def disk_bytes(path: str | Path) -> int | None:
    """The size of the filesystem holding ``path``."""
    st = _statvfs(path)
    return None if st is None else st.f_blocks * st.f_frsize


def classify(exc: BaseException, where: str | Path | None = None) -> Kind | None:
    """``"full"`` for what a full disk causes, ``"io"`` for a failing or
    read-only disk or a damaged database, None for anything else. SQLite
    reports some writes on a full disk as I/O errors: those count as full only
    when the disk holding ``where`` has (almost) no room left."""
    if isinstance(exc, StorageFull):
        return "full"
    if isinstance(exc, sqlite3.Error):
        code = _sqlite_code(exc)
        text = str(exc)
        if code == SQLITE_FULL or "disk is full" in text:
            return "full"
        if code == SQLITE_IOERR or "disk I/O error" in text:
            free = free_bytes(where)
            return "full" if free is not None and free < LOW_SPACE else "io"
        if code in (SQLITE_CORRUPT, SQLITE_NOTADB, SQLITE_READONLY) or "malformed" in text or "readonly" in text:
            return "io"
    if isinstance(exc, OSError):
        if exc.errno in FULL_ERRNOS:
            return "full"
        if exc.errno in IO_ERRNOS:
            return "io"
    cause = exc.__cause__ or exc.__context__
    if cause is not None and cause is not exc:
        return classify(cause, where)
    return None


def is_full(exc: BaseException, where: str | Path | None = None) -> bool:
    """True for the errors a full disk causes: ENOSPC, EDQUOT, SQLite's "database or disk is full"."""
    return classify(exc, where) == "full"


def describe(exc: BaseException) -> str:
    """One line for a storage error."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return str(exc)


class Waiter:
    """Pacing for one store's trouble: one log line when it starts, one when it
    ends, a doubling pause (``first`` .. ``longest`` seconds; an I/O error
    waits at least ``io_pause``) between tries. A disk at its limit flaps (a
    write fits, the next does not): an episode that starts within ``quiet``
    seconds of the last one's end is logged only if it lasts a minute, so a
    flapping disk is a line or two, not a line per write. ``where`` is a path
    on the disk in question (to tell a full disk from a failing one)."""

    LONG = 60.0  # a quiet episode this long is logged after all

    def __init__(self, log: logging.Logger, what: str, first: float = 0.5, longest: float = 30.0,
                 quiet: float = 600.0, where: str | Path | None = None, io_pause: float = 10.0) -> None:
        self.log = log
        self.what = what
        self.first = first
        self.longest = longest
        self.quiet = quiet
        self.where = where
        self.io_pause = io_pause
        self._wait = first
        self.since: float | None = None
        self.kind: Kind | None = None
        self.pruned = False  # this episode's pruning was done
        self.on_full: Callable[[], Awaitable[object]] | None = None  # the daemon's pruning, before it waits
        self._ended: float | None = None  # when the last episode ended
        self._logged = False  # this episode's start was logged

    @property
    def waiting(self) -> bool:
        return self.since is not None

    def classify(self, exc: BaseException) -> Kind | None:
        return classify(exc, self.where)

    def delay(self, exc: BaseException, kind: Kind | None = None) -> float:
        """Note a failure; the seconds to pause before trying again."""
        kind = kind or self.classify(exc) or "io"
        now = time.monotonic()
        if self.since is None or kind != self.kind:
            self.since = now
            self.kind = kind
            self._wait = self.first if kind == "full" else self.io_pause
            self._logged = False
        else:
            self._wait = min(self._wait * 2, self.longest if kind == "full" else 10 * self.longest)
        recent = self._ended is not None and self.since - self._ended <= self.quiet
        if not self._logged and (kind == "io" or not recent or now - self.since >= self.LONG):
            if kind == "full":
                free = free_bytes(self.where)
                room = f", {free / 1e6:.1f} MB free" if free is not None else ""
                self.log.warning("%s: disk full (%s%s); waiting for space, nothing is dropped", self.what,
                                 describe(exc), room)
            else:
                self.log.error("%s: I/O error (%s): the disk may be failing or read-only; retrying every %.0f s "
                               "or more, the rest goes on", self.what, describe(exc), self._wait)
            self._logged = True
        return self._wait

    def ok(self) -> None:
        if self.since is not None:
            now = time.monotonic()
            if self._logged:
                what = "space again" if self.kind == "full" else "writes work again"
                self.log.info("%s: %s after %.0f s; resuming", self.what, what, now - self.since)
            self.since = None
            self.kind = None
            self.pruned = False
            self._ended = now


async def persist(fn: Callable[[], T], waiter: Waiter, on_full: Callable[[], Awaitable[object]] | None = None) -> T:
    """``fn()``, retried for as long as the disk is full (after ``on_full``, or
    the waiter's: the daemon's pruning, once per episode) or failing."""
    on_full = on_full or waiter.on_full
    while True:
        try:
            result = fn()
        except Exception as exc:
            kind = waiter.classify(exc)
            if kind is None:
                raise
            if kind == "full" and on_full is not None and not waiter.pruned:
                waiter.pruned = True
                await on_full()
                continue
            await asyncio.sleep(waiter.delay(exc, kind))
            continue
        waiter.ok()
        return result


def persist_blocking(fn: Callable[[], T], waiter: Waiter) -> T:
    """:func:`persist` for code outside the event loop (a daemon's start, a worker thread)."""
    while True:
        try:
            result = fn()
        except Exception as exc:
            kind = waiter.classify(exc)
            if kind is None:
                raise
            time.sleep(waiter.delay(exc, kind))
            continue
        waiter.ok()
        return result


class Durable:
    """A store as a daemon uses it: every call waits out a full or failing disk
    (the waiter prunes once, then retries with a pause, logging the episode's
    start and end) instead of failing. Subclasses name the calls."""

    def __init__(self, waiter: Waiter) -> None:
        self.waiter = waiter

    async def _do(self, fn: Callable[[], T]) -> T:
        return await persist(fn, self.waiter)

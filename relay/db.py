"""Opening the small SQLite databases both ends keep (queues, profiles, voices, assignments)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from relay.errors import RelayError


def connect(path: str | Path, schema: str, what: str, error: type[RelayError] = RelayError) -> sqlite3.Connection:
    """Open (creating folders and tables) in WAL mode, autocommit, so a daemon and
    the CLI can share the file. Commits are synchronous (``synchronous=FULL``):
    a daemon acknowledges a message to the broker only after committing it, and
    that promise must survive a power cut. Any failure is one ``error`` naming
    the file, or :class:`relay.storage.StorageFull` when the disk is full (a
    daemon waits that out)."""
    from relay.storage import StorageFull, is_full

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # used by one thread at a time, not always the same one (a daemon's worker threads)
        db = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(schema)
        return db
    except (sqlite3.Error, OSError) as exc:
        if is_full(exc, path.parent):
            raise StorageFull(f"{path}: cannot open {what}: disk full ({exc})") from exc
        raise error(f"{path}: cannot open {what} ({exc})") from exc  # a failing disk stays an I/O error


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT on an autocommit connection (so the CLI and
    the daemon never interleave a read-modify-write); rolled back on any error."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")

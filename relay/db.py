"""Opening the small SQLite databases both ends keep (profiles, voices, assignments)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from relay.errors import RelayError


def connect(path: str | Path, schema: str, what: str, error: type[RelayError] = RelayError) -> sqlite3.Connection:
    """Open (creating folders and tables) in WAL mode, autocommit, so a daemon and
    the CLI can share the file; any failure is one ``error`` naming the file."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, timeout=10, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(schema)
        return db
    except (sqlite3.Error, OSError) as exc:
        raise error(f"{path}: cannot open {what} ({exc})") from None

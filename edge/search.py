"""Search across everything an edge has received (SQLite FTS5).

One row per phrase: its words, speaker, time and bundle, so a hit takes a
listener to the moment it was said. The index is its own small database
beside the edge's store (``transcripts.db``), brought up to date from the
store before each search (:meth:`TranscriptIndex.sync`): the daemon does not
need to know about it, a bundle imported by hand or received while no one
searched is found all the same, and a lost index is rebuilt. Each word asked
for matches the words it begins (``storm`` finds ``storms`` and ``stormy``):
search as you type, and the plural for free. (A stemmer, FTS5's porter, was
tried: it cannot match a half-typed word, which the page needs.)

A listener's query is never handed to FTS5's query language (where a stray
quote or ``NEAR(`` is a syntax error): it is cut into words, each quoted and
matched as a prefix, all required.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from edge.store import ACCEPTED, QUARANTINED, Inbox
from relay.db import connect, transaction
from relay.errors import BundleError, RelayError
from relay.format.bundle import Bundle
from relay.format.limits import DEFAULT_LIMITS, Limits

SCHEMA = """
CREATE TABLE IF NOT EXISTS indexed (bundle_id BLOB PRIMARY KEY, phrases INTEGER NOT NULL);
CREATE VIRTUAL TABLE IF NOT EXISTS phrases USING fts5(
    text, speaker, bundle_id UNINDEXED, start UNINDEXED, title UNINDEXED, tokenize = 'unicode61 remove_diacritics 2'
);
"""
MAX_QUERY_WORDS = 16
MAX_RESULTS = 200


class SearchError(RelayError):
    pass


@dataclass(frozen=True, slots=True)
class Hit:
    """One phrase that matches: where (bundle, seconds from its start), who, and the words
    with the matches marked ``[`` ``]``."""

    bundle_id: bytes
    title: str
    start: float
    speaker: str
    snippet: str

    def to_dict(self) -> dict:
        return {"bundle_id": self.bundle_id.hex(), "title": self.title, "start": round(self.start, 2),
                "speaker": self.speaker, "snippet": self.snippet}


def fts_query(text: str) -> str:
    """A listener's words as an FTS5 query that cannot be malformed."""
    words = re.findall(r"\w+", text.lower())[:MAX_QUERY_WORDS]
    if not words:
        raise SearchError(f"nothing to search for in {text!r}: give a word")
    return " ".join(f'"{w}"*' for w in words)


class TranscriptIndex:
    def __init__(self, path: str | Path, limits: Limits = DEFAULT_LIMITS) -> None:
        self.path = Path(path)
        self.limits = limits
        self._db = connect(self.path, SCHEMA, "the transcript index", SearchError)

    def close(self) -> None:
        self._db.close()

    def add(self, bundle: Bundle) -> int:
        """Index a bundle's phrases (once: a bundle indexed before is left alone). Returns how many."""
        from edge.subtitles import speaker_name

        bid = bundle.bundle_id
        rows = [(s.text, speaker_name(bundle, s.speaker), bid, float(s.start), bundle.source.title)
                for s in bundle.segments if s.text.strip()]
        with transaction(self._db):
            if self._db.execute("SELECT 1 FROM indexed WHERE bundle_id = ?", (bid,)).fetchone():
                return 0
            self._db.executemany("INSERT INTO phrases (text, speaker, bundle_id, start, title) VALUES (?, ?, ?, ?, ?)",
                                 rows)
            self._db.execute("INSERT INTO indexed VALUES (?, ?)", (bid, len(rows)))
        return len(rows)

    def sync(self, inbox: Inbox) -> int:
        """Index every stored bundle with words that is not indexed yet. Returns how many bundles."""
        from relay.format.wire import decode_bundle

        done = {bytes(r[0]) for r in self._db.execute("SELECT bundle_id FROM indexed")}
        added = 0
        for stored in inbox.bundles():
            if stored.bundle_id in done or stored.state not in (ACCEPTED, QUARANTINED):
                continue
            try:
                bundle = decode_bundle(inbox.data(stored.bundle_id), f"bundle {stored.bundle_id.hex()}", self.limits)
            except (BundleError, RelayError):
                continue  # the store checked it when it came; one that no longer decodes is not searchable
            self.add(bundle)
            added += 1
        return added

    def size(self) -> int:
        """Bytes the index uses (its pages in use, not those free for reuse)."""
        pages, free, size = (self._db.execute(f"PRAGMA {p}").fetchone()[0]
                             for p in ("page_count", "freelist_count", "page_size"))
        return (pages - free) * size

    def trim(self, max_bytes: int, dry_run: bool = False) -> list[bytes]:
        """Drop the oldest transcripts until the index holds at most ``max_bytes``
        (each bundle stays marked indexed, so it is not indexed again). Returns their ids."""
        dropped: list[bytes] = []
        if self.size() <= max_bytes:
            return dropped
        rows = [bytes(r[0]) for r in self._db.execute("SELECT bundle_id FROM indexed WHERE phrases > 0 ORDER BY "
                                                      "rowid")]
        if dry_run:  # roughly: in proportion to the phrases they hold
            over = 1 - max_bytes / max(self.size(), 1)
            return rows[: int(len(rows) * over) + 1]
        step = max(1, len(rows) // 20)
        while rows and self.size() > max_bytes:
            batch, rows = rows[:step], rows[step:]
            with transaction(self._db):
                for bid in batch:
                    self._db.execute("DELETE FROM phrases WHERE bundle_id = ?", (bid,))
                    self._db.execute("UPDATE indexed SET phrases = 0 WHERE bundle_id = ?", (bid,))
                self._db.execute("INSERT INTO phrases (phrases) VALUES ('optimize')")  # frees the deleted rows' pages
            dropped += batch
        return dropped

    def speakers(self, bundle_id: bytes) -> list[str] | None:
        """Who speaks in an indexed bundle, in the order they first do; None if it is not indexed
        (the console lists a bundle's speakers from here rather than decode every bundle at start)."""
        if self._db.execute("SELECT 1 FROM indexed WHERE bundle_id = ?", (bundle_id,)).fetchone() is None:
            return None
        rows = self._db.execute("SELECT speaker FROM phrases WHERE bundle_id = ? ORDER BY rowid", (bundle_id,))
        return list(dict.fromkeys(r[0] for r in rows))

    def search(self, query: str, limit: int = 50) -> list[Hit]:
        """Phrases matching every word of ``query``, best first."""
        rows = self._db.execute(
            "SELECT bundle_id, title, start, speaker, snippet(phrases, 0, '[', ']', ' … ', 24) FROM phrases "
            "WHERE phrases MATCH ? ORDER BY rank LIMIT ?",
            (fts_query(query), max(1, min(limit, MAX_RESULTS)))).fetchall()
        return [Hit(bytes(b), t or "", float(s), sp, sn) for b, t, s, sp, sn in rows]

    def __len__(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM indexed").fetchone()[0])

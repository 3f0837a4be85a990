"""The voice-profile stores both ends keep (SQLite); the profile itself, as it
travels, is :mod:`relay.format.profile`.

Both ends keep profiles in a :class:`ProfileStore` (SQLite). The ground's
store holds enrolled speakers (with names) and speakers it has met, and
remembers which profiles it has already sent; the edge's store holds the
profiles it has received.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from relay.db import connect
from relay.errors import RelayError
from relay.format.bundle import Bundle
from relay.format.profile import PROFILE_ID_SIZE, FittedVoice, VoiceProfile

MATCH_THRESHOLD = 0.6  # cosine similarity above which two embeddings are one speaker
NAME_BONUS = 0.02  # an enrolled (named) profile wins a near tie over an anonymous one


class ProfileError(RelayError):
    """A profile store is unreadable, or a name is unknown or taken."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS profiles (
    id        BLOB PRIMARY KEY,
    name      TEXT UNIQUE,
    embedding BLOB NOT NULL,
    f0_median REAL NOT NULL,
    f0_range  REAL NOT NULL,
    rate      REAL NOT NULL,
    created   INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    sent      INTEGER NOT NULL DEFAULT 0,  -- ground: full profile already sent
    reference BLOB,                        -- the speaker's coded reference clip, if any
    reference_codec TEXT,
    colour    BLOB,                        -- the long-term spectrum's shape (relay.audio.colour), if any
    fitted    TEXT                         -- a voice fitted at the ground (relay.format.profile.FittedVoice), JSON
);
-- ground: the edges that acknowledged a bundle carrying the profile in full (each ship keeps its own store)
CREATE TABLE IF NOT EXISTS sent_to (id BLOB NOT NULL, edge TEXT NOT NULL, PRIMARY KEY (id, edge));
"""
# columns that stores made before them lack
_ADDED_COLUMNS = {"reference": "BLOB", "reference_codec": "TEXT", "colour": "BLOB", "fitted": "TEXT"}


@dataclass(frozen=True, slots=True)
class Match:
    profile: VoiceProfile
    similarity: float


class ProfileStore:
    """Profiles on disk, in SQLite (WAL), safe to share between a daemon and the CLI."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db = connect(self.path, _SCHEMA, "profile store", ProfileError)
        have = {row[1] for row in self._db.execute("PRAGMA table_info(profiles)")}
        for column, kind in _ADDED_COLUMNS.items():
            if column not in have:
                self._db.execute(f"ALTER TABLE profiles ADD COLUMN {column} {kind}")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ProfileStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _row(row: tuple) -> VoiceProfile:
        pid, name, emb, f0, rng, rate, ref, ref_codec, colour, fitted = row[:10]
        voice = FittedVoice.from_wire(*json.loads(fitted)) if fitted else None
        return VoiceProfile(bytes(emb), f0, rng, rate, name, bytes(pid), bytes(ref or b""), ref_codec or "",
                            bytes(colour or b""), voice)

    _COLUMNS = "id, name, embedding, f0_median, f0_range, rate, reference, reference_codec, colour, fitted"

    def __iter__(self) -> Iterator[VoiceProfile]:
        rows = self._db.execute(f"SELECT {self._COLUMNS} FROM profiles ORDER BY name IS NULL, name, created").fetchall()
        return (self._row(r) for r in rows)

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM profiles").fetchone()[0]

    def get(self, profile_id: bytes) -> VoiceProfile | None:
        """The profile with this id, or with this 4-byte prefix of its id (the
        reference bundle format v2 sends); ``None`` when none, or when a prefix
        names two profiles (then the speaker is spoken as an unknown one)."""
        if len(profile_id) < PROFILE_ID_SIZE:
            rows = self._db.execute(f"SELECT {self._COLUMNS} FROM profiles WHERE substr(id, 1, ?) = ? LIMIT 2",
                                    (len(profile_id), profile_id)).fetchall()
            return self._row(rows[0]) if len(rows) == 1 and profile_id else None
        row = self._db.execute(f"SELECT {self._COLUMNS} FROM profiles WHERE id = ?", (profile_id,)).fetchone()
        return self._row(row) if row else None

    def by_name(self, name: str) -> VoiceProfile | None:
        row = self._db.execute(f"SELECT {self._COLUMNS} FROM profiles WHERE name = ?", (name,)).fetchone()
        return self._row(row) if row else None

    def put(self, profile: VoiceProfile, sent: bool | None = None) -> None:
        """Insert or update a profile (by id). ``sent=None`` keeps the flag; ``sent=False``
        also forgets which edges have it (a changed profile goes to each in full again)."""
        now = int(time.time())
        if sent is False:
            self._db.execute("DELETE FROM sent_to WHERE id = ?", (profile.profile_id,))
        try:
            self._db.execute(
                """INSERT INTO profiles (id, name, embedding, f0_median, f0_range, rate, created, last_seen, sent,
                                         reference, reference_codec, colour, fitted)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT(id) DO UPDATE SET name = excluded.name, embedding = excluded.embedding,
                       f0_median = excluded.f0_median, f0_range = excluded.f0_range, rate = excluded.rate,
                       last_seen = excluded.last_seen, sent = CASE WHEN ? IS NULL THEN sent ELSE ? END,
                       reference = COALESCE(excluded.reference, reference),
                       reference_codec = COALESCE(excluded.reference_codec, reference_codec),
                       colour = COALESCE(excluded.colour, colour),
                       fitted = COALESCE(excluded.fitted, fitted)""",
                (
                    profile.profile_id, profile.name, profile.embedding, profile.f0_median, profile.f0_range,
                    profile.rate, now, now, int(bool(sent)), profile.reference or None,
                    profile.reference_codec or None, profile.colour or None,
                    json.dumps(profile.fitted.wire()) if profile.fitted else None, sent, int(bool(sent)),
                ),
            )
        except sqlite3.IntegrityError:
            raise ProfileError(f"a speaker named {profile.name!r} is already enrolled") from None

    def learn(self, bundle: Bundle) -> list[bytes]:
        """The edge's one way of learning profiles: keep every full profile the
        bundle carries; return the ids it only refers to that this store lacks
        (the edge asks the ground for them)."""
        missing = []
        for speaker in bundle.speakers:
            if speaker.profile is not None:
                self.put(speaker.profile)
            elif speaker.profile_id and self.get(speaker.profile_id) is None:
                missing.append(speaker.profile_id)
        return missing

    def was_sent(self, profile_id: bytes, edges: Sequence[str] | None = None) -> bool:
        """Whether the profile may travel by reference: every one of ``edges``
        acknowledged it; without edges (a bundle written to a file), whether a
        bundle carrying it in full was written."""
        if edges is not None:
            if not edges:
                return False
            marks = ",".join("?" * len(edges))
            have = self._db.execute(f"SELECT count(*) FROM sent_to WHERE id = ? AND edge IN ({marks})",
                                    (profile_id, *edges)).fetchone()[0]
            return have == len(set(edges))
        row = self._db.execute("SELECT sent FROM profiles WHERE id = ?", (profile_id,)).fetchone()
        return bool(row and row[0])

    def sent_to(self, profile_id: bytes) -> list[str]:
        """The edges that have the profile, as far as the ground knows."""
        return [r[0] for r in self._db.execute("SELECT edge FROM sent_to WHERE id = ? ORDER BY edge", (profile_id,))]

    def mark_sent(self, profile_id: bytes, edge: str | None = None) -> None:
        """``edge`` acknowledged a bundle carrying it in full (None: one was written to a file)."""
        if edge is None:
            self._db.execute("UPDATE profiles SET sent = 1 WHERE id = ?", (profile_id,))
        elif self.get(profile_id) is not None:
            self._db.execute("INSERT OR IGNORE INTO sent_to VALUES (?, ?)", (profile_id, edge))

    def mark_unsent(self, profile_id: bytes, edge: str | None = None) -> None:
        """``edge`` says it lacks this profile (None: forget it was sent anywhere):
        send it in full next time. The edge names it as the bundle did: in full
        (format v1) or by the 4-byte prefix of format v2, which marks every
        profile that shares it."""
        if not profile_id:
            return
        n = len(profile_id)
        if edge is None:
            self._db.execute("UPDATE profiles SET sent = 0 WHERE substr(id, 1, ?) = ?", (n, profile_id))
            self._db.execute("DELETE FROM sent_to WHERE substr(id, 1, ?) = ?", (n, profile_id))
        else:
            self._db.execute("DELETE FROM sent_to WHERE substr(id, 1, ?) = ? AND edge = ?", (n, profile_id, edge))

    def remove(self, name: str) -> bool:
        gone = self._db.execute("DELETE FROM profiles WHERE name = ?", (name,)).rowcount > 0
        self._db.execute("DELETE FROM sent_to WHERE id NOT IN (SELECT id FROM profiles)")
        return gone

    def match(self, embedding: np.ndarray, threshold: float = MATCH_THRESHOLD) -> Match | None:
        """The stored profile most similar to ``embedding``, if above ``threshold``.

        Enrolled (named) profiles win a near tie over anonymous ones: a name
        is worth more to a listener than a slightly closer anonymous voice.
        """
        best: Match | None = None
        for profile in self:
            sim = profile.similarity(embedding) + (NAME_BONUS if profile.name else 0.0)
            if sim >= threshold and (best is None or sim > best.similarity):
                best = Match(profile, sim)
        return replace(best, similarity=best.profile.similarity(embedding)) if best else None

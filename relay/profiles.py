"""Voice profiles: a few hundred bytes that say what a speaker sounds like.

A profile is what the edge needs to pick and tune a voice for a speaker:
the direction of their CAM++ speaker embedding (192 dimensions, int8), their
median pitch and pitch range, and how fast they talk. It is identified by a
short id (6 bytes of BLAKE2b over its first version), so once the edge holds
a profile a bundle can name it in 7 bytes instead of sending ~200: the same
presenter every day costs almost nothing after the first broadcast.

Both ends keep profiles in a :class:`ProfileStore` (SQLite). The ground's
store holds enrolled speakers (with names) and speakers it has met, and
remembers which profiles it has already sent; the edge's store holds the
profiles it has received.
"""

from __future__ import annotations

import hashlib
import math
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from relay.db import connect
from relay.errors import RelayError
from relay.paths import state_dir

PROFILE_ID_SIZE = 6
EMBEDDING_DIM = 192
F0_REF = 55.0  # Hz; pitch is sent in quarter tones above A1
MATCH_THRESHOLD = 0.6  # cosine similarity above which two embeddings are one speaker
NAME_BONUS = 0.02  # an enrolled (named) profile wins a near tie over an anonymous one


class ProfileError(RelayError):
    """A profile store is unreadable, or a name is unknown or taken."""


def quantize(embedding: np.ndarray, bits: int = 4) -> bytes:
    """Unit vector -> int8 bytes (192) or packed int4 nibbles (96).

    Only the direction matters for cosine similarity, so each vector is
    scaled to use the full integer range and the scale is not sent. The
    length tells the reader which width it is.
    """
    v = np.asarray(embedding, dtype=np.float32).reshape(-1)
    peak = float(np.max(np.abs(v))) if v.size else 0.0
    if not math.isfinite(peak) or peak == 0.0:
        raise ValueError("cannot quantize an empty or non-finite embedding")
    if bits == 8:
        return np.round(v / peak * 127).astype(np.int8).tobytes()
    if bits == 4:
        if v.size % 2:
            raise ValueError("4-bit packing needs an even dimension")
        q = (np.round(v / peak * 7).astype(np.int8) & 0x0F).astype(np.uint8)
        return (q[0::2] << 4 | q[1::2]).astype(np.uint8).tobytes()
    raise ValueError(f"embeddings are quantized to 8 or 4 bits, not {bits}")


def dequantize(data: bytes) -> np.ndarray:
    """Bytes from :func:`quantize` -> unit float vector."""
    raw = np.frombuffer(data, dtype=np.uint8)
    if len(raw) == EMBEDDING_DIM:
        v = raw.view(np.int8).astype(np.float32)
    elif len(raw) == EMBEDDING_DIM // 2:
        nibbles = np.stack([raw >> 4, raw & 0x0F], axis=1).reshape(-1).astype(np.int8)
        v = np.where(nibbles > 7, nibbles - 16, nibbles).astype(np.float32)
    else:
        raise ValueError(f"an embedding of {len(raw)} bytes is neither int8 nor int4 x {EMBEDDING_DIM}")
    norm = float(np.linalg.norm(v))
    return v / norm if norm else v


@dataclass(frozen=True, slots=True)
class VoiceProfile:
    """What a speaker sounds like, in wire precision.

    ``f0_median`` is in Hz, ``f0_range`` in semitones (10th to 90th
    percentile of voiced frames), ``rate`` in words per minute of speaking
    time. ``name`` is set for enrolled speakers. ``profile_id`` is fixed when
    the profile is first made and kept when the store refines the profile.
    """

    embedding: bytes  # int8 x 192, or int4 x 192 packed in 96 bytes
    f0_median: float
    f0_range: float
    rate: float
    name: str | None = None
    profile_id: bytes = b""
    # optional: a few seconds of the speaker's own voice, coded (relay.codecs), for edges whose
    # TTS can clone a voice from a clip; not part of the id, so adding one later keeps the id
    reference: bytes = b""
    reference_codec: str = ""

    def __post_init__(self) -> None:
        if len(self.embedding) not in (EMBEDDING_DIM, EMBEDDING_DIM // 2):
            raise ValueError(
                f"profile embedding must be {EMBEDDING_DIM} int8 or int4 values, got {len(self.embedding)} bytes"
            )
        if not self.profile_id:
            object.__setattr__(self, "profile_id", self.content_hash())

    @classmethod
    def create(
        cls,
        embedding: np.ndarray,
        f0_median: float,
        f0_range: float,
        rate: float,
        name: str | None = None,
        bits: int = 4,
    ) -> VoiceProfile:
        """A new profile, its figures rounded to what the wire carries."""
        f0_q, range_q, rate_q = _quantize_prosody(f0_median, f0_range, rate)
        f0, rng, wpm = _dequantize_prosody(f0_q, range_q, rate_q)
        return cls(quantize(embedding, bits), f0, rng, wpm, name)

    def content_hash(self) -> bytes:
        fields = [self.embedding, *_quantize_prosody(self.f0_median, self.f0_range, self.rate)]
        return hashlib.blake2b(b"".join(map(bytes, fields)), digest_size=PROFILE_ID_SIZE).digest()

    @property
    def id_hex(self) -> str:
        return self.profile_id.hex()

    def vector(self) -> np.ndarray:
        """The embedding as a unit float vector."""
        return dequantize(self.embedding)

    def similarity(self, embedding: np.ndarray) -> float:
        """Cosine similarity with a unit embedding (or another profile's vector)."""
        return float(np.dot(self.vector(), embedding))

    def wire_fields(self) -> list:
        """``[embedding, f0, range, rate]`` as small integers: quarter tones above
        55 Hz, quarter tones of range, words per minute. Each fits in one or
        two msgpack bytes. A reference clip follows as ``[codec id, bytes]``."""
        fields = [self.embedding, *_quantize_prosody(self.f0_median, self.f0_range, self.rate)]
        if self.reference:
            from relay.codecs import codec_id

            fields.append([codec_id(self.reference_codec), self.reference])
        return fields

    @classmethod
    def from_wire(cls, profile_id: bytes, fields: list, name: str | None = None) -> VoiceProfile:
        embedding, f0_q, range_q, rate_q = fields[:4]
        f0, rng, wpm = _dequantize_prosody(int(f0_q), int(range_q), int(rate_q))
        reference, codec = b"", ""
        if len(fields) > 4 and fields[4]:
            from relay.codecs import CODEC_IDS

            wire_id, reference = int(fields[4][0]), bytes(fields[4][1])
            if wire_id not in CODEC_IDS:
                raise ValueError(f"reference clip codec id {wire_id} is unknown")
            codec = CODEC_IDS[wire_id]
        return cls(bytes(embedding), f0, rng, wpm, name, bytes(profile_id), reference, codec)

    def to_dict(self) -> dict:
        return {
            "id": self.id_hex,
            "name": self.name,
            "f0_median_hz": round(self.f0_median, 1),
            "f0_range_semitones": round(self.f0_range, 2),
            "rate_wpm": round(self.rate),
            **({"reference": {"codec": self.reference_codec, "bytes": len(self.reference)}} if self.reference else {}),
        }


def _quantize_prosody(f0: float, f0_range: float, rate: float) -> tuple[int, int, int]:
    f0_q = int(round(24 * math.log2(max(f0, F0_REF) / F0_REF))) if f0 > 0 else 0
    return min(f0_q, 127), min(int(round(max(f0_range, 0.0) * 4)), 127), min(int(round(max(rate, 0.0))), 65535)


def _dequantize_prosody(f0_q: int, range_q: int, rate_q: int) -> tuple[float, float, float]:
    return (F0_REF * 2 ** (f0_q / 24) if f0_q else 0.0), range_q / 4, float(rate_q)


# --- store -------------------------------------------------------------------


def default_store_path(role: str) -> Path:
    """``$SPEECH_RELAY_HOME/<role>/profiles.db`` (default ``~/.local/share/speech-relay``)."""
    return state_dir(role) / "profiles.db"


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
    reference_codec TEXT
);
"""
_ADDED_COLUMNS = {"reference": "BLOB", "reference_codec": "TEXT"}  # stores made before reference clips


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
        pid, name, emb, f0, rng, rate, ref, ref_codec = row[:8]
        return VoiceProfile(bytes(emb), f0, rng, rate, name, bytes(pid), bytes(ref or b""), ref_codec or "")

    _COLUMNS = "id, name, embedding, f0_median, f0_range, rate, reference, reference_codec"

    def __iter__(self) -> Iterator[VoiceProfile]:
        rows = self._db.execute(f"SELECT {self._COLUMNS} FROM profiles ORDER BY name IS NULL, name, created").fetchall()
        return (self._row(r) for r in rows)

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM profiles").fetchone()[0]

    def get(self, profile_id: bytes) -> VoiceProfile | None:
        row = self._db.execute(f"SELECT {self._COLUMNS} FROM profiles WHERE id = ?", (profile_id,)).fetchone()
        return self._row(row) if row else None

    def by_name(self, name: str) -> VoiceProfile | None:
        row = self._db.execute(f"SELECT {self._COLUMNS} FROM profiles WHERE name = ?", (name,)).fetchone()
        return self._row(row) if row else None

    def put(self, profile: VoiceProfile, sent: bool | None = None) -> None:
        """Insert or update a profile (by id). ``sent=None`` keeps the flag."""
        now = int(time.time())
        try:
            self._db.execute(
                """INSERT INTO profiles (id, name, embedding, f0_median, f0_range, rate, created, last_seen, sent,
                                         reference, reference_codec)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT(id) DO UPDATE SET name = excluded.name, embedding = excluded.embedding,
                       f0_median = excluded.f0_median, f0_range = excluded.f0_range, rate = excluded.rate,
                       last_seen = excluded.last_seen, sent = CASE WHEN ? IS NULL THEN sent ELSE ? END,
                       reference = COALESCE(excluded.reference, reference),
                       reference_codec = COALESCE(excluded.reference_codec, reference_codec)""",
                (
                    profile.profile_id, profile.name, profile.embedding, profile.f0_median, profile.f0_range,
                    profile.rate, now, now, int(bool(sent)), profile.reference or None,
                    profile.reference_codec or None, sent, int(bool(sent)),
                ),
            )
        except sqlite3.IntegrityError:
            raise ProfileError(f"a speaker named {profile.name!r} is already enrolled") from None

    def was_sent(self, profile_id: bytes) -> bool:
        row = self._db.execute("SELECT sent FROM profiles WHERE id = ?", (profile_id,)).fetchone()
        return bool(row and row[0])

    def mark_sent(self, profile_id: bytes) -> None:
        self._db.execute("UPDATE profiles SET sent = 1 WHERE id = ?", (profile_id,))

    def mark_unsent(self, profile_id: bytes) -> None:
        """The edge says it lacks this profile: send it in full next time."""
        self._db.execute("UPDATE profiles SET sent = 0 WHERE id = ?", (profile_id,))

    def remove(self, name: str) -> bool:
        return self._db.execute("DELETE FROM profiles WHERE name = ?", (name,)).rowcount > 0

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

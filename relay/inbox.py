"""The edge's durable store: fragments in, verified bundles out, each played once.

Fragments are written to SQLite (WAL) as they arrive, in any order and any
number of times; a bundle is assembled when its last hole fills, its
envelope verified (a trusted Ed25519 signature for this edge) and the
bundle decoded (its own hash checked). Only then is it *accepted*; anything
else is *rejected* with the reason, logged, acknowledged as rejected so the
ground stops sending it, and never played.

Bundle ids are kept for good, so a bundle that arrives again (the ground
resent it after losing our ack, the broker redelivered it) is acknowledged
again but stored and played only once. A bundle is marked played when its
playback has finished; a daemon killed mid-playback plays it again from the
start after the restart, but never a finished one.

With a profile store, the inbox also keeps the edge's half of the voice
profiles: full profiles in an accepted bundle are learnt at once (a later
bundle may refer to them before this one is played), and profiles a bundle
only refers to but the edge has never received (its store was lost, or the
bundle that carried them was rejected) are named in the accepted ack, so
the ground sends them in full again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from relay.db import connect
from relay.errors import BundleError, RelayError
from relay.link import Ack, AckState, Envelope, Fragment, LinkError, Priority, ranges
from relay.profiles import PROFILE_ID_SIZE, ProfileStore
from relay.signing import Keyring

SCHEMA = """
CREATE TABLE IF NOT EXISTS transfers (
    bundle_id BLOB PRIMARY KEY, count INTEGER NOT NULL, received BLOB NOT NULL, first REAL NOT NULL,
    last REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS fragments (
    bundle_id BLOB NOT NULL, idx INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (bundle_id, idx)
);
CREATE TABLE IF NOT EXISTS bundles (
    bundle_id BLOB PRIMARY KEY, state TEXT NOT NULL, reason TEXT, priority INTEGER, title TEXT, duration REAL,
    data BLOB, received REAL NOT NULL, played REAL, plays INTEGER NOT NULL DEFAULT 0,
    missing_profiles BLOB
);
CREATE INDEX IF NOT EXISTS bundles_unplayed ON bundles (state, played, priority, received);
CREATE TABLE IF NOT EXISTS plays (bundle_id BLOB NOT NULL, at REAL NOT NULL, how TEXT NOT NULL, output TEXT);
"""
ACCEPTED, REJECTED = "accepted", "rejected"


class InboxError(RelayError):
    """An operator asked for a bundle the edge does not have."""


@dataclass(frozen=True, slots=True)
class Stored:
    """A bundle the edge has decided on."""

    bundle_id: bytes
    state: str  # accepted | rejected
    reason: str | None
    priority: Priority | None
    title: str | None
    duration: float | None
    received: float
    played: float | None
    plays: int

    def to_dict(self) -> dict:
        return {
            "bundle_id": self.bundle_id.hex(), "state": self.state, "reason": self.reason,
            "priority": self.priority.name.lower() if self.priority is not None else None, "title": self.title,
            "duration": self.duration, "received": self.received, "played": self.played, "plays": self.plays,
        }


@dataclass(frozen=True, slots=True)
class Received:
    """What one incoming message led to: an ack to send (or None) and, when a
    bundle was just accepted or rejected, its record."""

    ack: Ack | None
    decided: Stored | None = None


def _bit(bitmap: bytearray, i: int) -> bool:
    return bool(bitmap[i // 8] >> (i % 8) & 1)


class Inbox:
    def __init__(self, path: str | Path, edge: str, keyring: Keyring, profiles: ProfileStore | None = None) -> None:
        self.path = Path(path)
        self.edge = edge
        self.keyring = keyring
        self.profiles = profiles
        self._db = connect(self.path, SCHEMA, "the edge store", InboxError)

    def close(self) -> None:
        self._db.close()

    # --- receiving -------------------------------------------------------------------------------

    def receive(self, frag: Fragment) -> Received:
        known = self.get(frag.bundle_id)
        if known is not None:  # a resend: say again what we decided
            return Received(self._decided_ack(known))
        now = time.time()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            row = self._db.execute("SELECT count, received FROM transfers WHERE bundle_id = ?",
                                   (frag.bundle_id,)).fetchone()
            if row is None:
                bitmap = bytearray((frag.count + 7) // 8)
                self._db.execute("INSERT INTO transfers VALUES (?, ?, ?, ?, ?)",
                                 (frag.bundle_id, frag.count, bytes(bitmap), now, now))
            else:
                if row[0] != frag.count:
                    raise LinkError("count", f"fragment says {frag.count} fragments, earlier ones said {row[0]}")
                bitmap = bytearray(row[1])
            if not _bit(bitmap, frag.index):
                bitmap[frag.index // 8] |= 1 << (frag.index % 8)
                self._db.execute("INSERT OR IGNORE INTO fragments VALUES (?, ?, ?)",
                                 (frag.bundle_id, frag.index, frag.data))
                self._db.execute("UPDATE transfers SET received = ?, last = ? WHERE bundle_id = ?",
                                 (bytes(bitmap), now, frag.bundle_id))
            missing = [i for i in range(frag.count) if not _bit(bitmap, i)]
            decided = self._assemble(frag.bundle_id, frag.count) if not missing else None
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        if decided is not None:
            return Received(self._decided_ack(decided), decided)
        if frag.index == frag.count - 1:  # the ground has sent everything once: tell it the holes
            return Received(Ack(frag.bundle_id, AckState.INCOMPLETE, tuple(ranges(missing))))
        return Received(None)

    def poll(self, bundle_id: bytes) -> Ack:
        known = self.get(bundle_id)
        if known is not None:
            return self._decided_ack(known)
        row = self._db.execute("SELECT count, received FROM transfers WHERE bundle_id = ?", (bundle_id,)).fetchone()
        if row is None:
            return Ack(bundle_id, AckState.UNKNOWN)
        bitmap = bytearray(row[1])
        return Ack(bundle_id, AckState.INCOMPLETE, tuple(ranges(i for i in range(row[0]) if not _bit(bitmap, i))))

    def _assemble(self, bundle_id: bytes, count: int) -> Stored:
        """Inside the receive transaction: verify and store, drop the fragments."""
        from relay.wire import decode_bundle

        parts = self._db.execute("SELECT data FROM fragments WHERE bundle_id = ? ORDER BY idx", (bundle_id,)).fetchall()
        blob = b"".join(p[0] for p in parts)
        now = time.time()
        priority = title = duration = data = None
        reason, missing = None, b""
        try:
            env = Envelope.unpack(blob)
            priority = env.priority
            reason = self.keyring.check(env.key_id, env.signature, self.edge, int(env.priority), env.bundle)
            if reason is None:
                bundle = decode_bundle(env.bundle, f"bundle {bundle_id.hex()}")
                if bundle.bundle_id != bundle_id:
                    reason = "bundle id inside differs from the transfer's"
                else:
                    title, duration, data = bundle.source.title, bundle.source.duration, env.bundle
                    missing = b"".join(self._learn(bundle))
        except (LinkError, BundleError) as e:
            reason = str(e)
        state = ACCEPTED if reason is None else REJECTED
        self._db.execute(
            "INSERT INTO bundles (bundle_id, state, reason, priority, title, duration, data, received, "
            "missing_profiles) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (bundle_id, state, reason, int(priority) if priority is not None else None, title, duration, data, now,
             missing or None),
        )
        self._db.execute("DELETE FROM fragments WHERE bundle_id = ?", (bundle_id,))
        self._db.execute("DELETE FROM transfers WHERE bundle_id = ?", (bundle_id,))
        return Stored(bundle_id, state, reason, priority, title, duration, now, None, 0)

    def _learn(self, bundle) -> list[bytes]:
        """Store the bundle's full profiles; return the ids it only refers to
        that the edge does not have."""
        if self.profiles is None:
            return []
        missing = []
        for speaker in bundle.speakers:
            if speaker.profile is not None:
                self.profiles.put(speaker.profile)
            elif speaker.profile_id and self.profiles.get(speaker.profile_id) is None:
                missing.append(speaker.profile_id)
        return missing

    def _decided_ack(self, stored: Stored) -> Ack:
        if stored.state != ACCEPTED:
            return Ack(stored.bundle_id, AckState.REJECTED, reason=stored.reason or "rejected")
        return Ack(stored.bundle_id, AckState.ACCEPTED, missing_profiles=tuple(self.missing_profiles(stored.bundle_id)))

    def missing_profiles(self, bundle_id: bytes) -> list[bytes]:
        """Profiles the bundle refers to that the edge still lacks."""
        row = self._db.execute("SELECT missing_profiles FROM bundles WHERE bundle_id = ?", (bundle_id,)).fetchone()
        if not row or not row[0] or self.profiles is None:
            return []
        blob = bytes(row[0])
        ids = [blob[i:i + PROFILE_ID_SIZE] for i in range(0, len(blob), PROFILE_ID_SIZE)]
        return [p for p in ids if self.profiles.get(p) is None]

    # --- playing ---------------------------------------------------------------------------------

    def next_to_play(self) -> Stored | None:
        """The most urgent accepted bundle not played yet."""
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM bundles WHERE state = ? AND played IS NULL ORDER BY priority, received LIMIT 1",
            (ACCEPTED,),
        ).fetchone()
        return _stored(row) if row else None

    def data(self, bundle_id: bytes) -> bytes:
        row = self._db.execute("SELECT data FROM bundles WHERE bundle_id = ? AND state = ?",
                               (bundle_id, ACCEPTED)).fetchone()
        if row is None or row[0] is None:
            raise InboxError(f"no accepted bundle {bundle_id.hex()} on this edge (relay edge ls lists them)")
        return row[0]

    def played(self, bundle_id: bytes, how: str, output: str | None) -> None:
        """Playback finished: record it (once for the automatic play)."""
        now = time.time()
        self._db.execute("BEGIN IMMEDIATE")
        self._db.execute("UPDATE bundles SET played = coalesce(played, ?), plays = plays + 1 WHERE bundle_id = ?",
                         (now, bundle_id))
        self._db.execute("INSERT INTO plays VALUES (?, ?, ?, ?)", (bundle_id, now, how, output))
        self._db.execute("COMMIT")

    def plays(self, bundle_id: bytes | None = None) -> list[tuple[bytes, float, str, str | None]]:
        if bundle_id is None:
            return list(self._db.execute("SELECT bundle_id, at, how, output FROM plays ORDER BY at"))
        return list(self._db.execute("SELECT bundle_id, at, how, output FROM plays WHERE bundle_id = ? ORDER BY at",
                                     (bundle_id,)))

    # --- operators -------------------------------------------------------------------------------

    def get(self, bundle_id: bytes) -> Stored | None:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM bundles WHERE bundle_id = ?", (bundle_id,)).fetchone()
        return _stored(row) if row else None

    def find(self, prefix: str) -> Stored:
        """A bundle by (a unique prefix of) its hex id."""
        try:
            bytes.fromhex(prefix if len(prefix) % 2 == 0 else prefix + "0")
        except ValueError:
            raise InboxError(f"{prefix!r} is not a bundle id (hex)") from None
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM bundles WHERE hex(bundle_id) LIKE ?",
                                (prefix.upper() + "%",)).fetchall()
        if not rows:
            raise InboxError(f"no bundle {prefix} on this edge (relay edge ls lists them)")
        if len(rows) > 1:
            raise InboxError(f"bundle id {prefix} is ambiguous ({len(rows)} match); give more digits")
        return _stored(rows[0])

    def bundles(self) -> list[Stored]:
        return [_stored(r) for r in self._db.execute(f"SELECT {_COLUMNS} FROM bundles ORDER BY received")]

    def partial(self) -> list[tuple[bytes, int, int]]:
        """Bundles still arriving: (id, fragments received, count)."""
        out = []
        for bid, count, bitmap in self._db.execute("SELECT bundle_id, count, received FROM transfers"):
            out.append((bid, sum(bin(b).count("1") for b in bitmap), count))
        return out

    def forget_partial(self, older_than: float) -> int:
        """Drop transfers idle for ``older_than`` seconds (the ground gave up)."""
        cut = time.time() - older_than
        ids = [r[0] for r in self._db.execute("SELECT bundle_id FROM transfers WHERE last < ?", (cut,))]
        for bid in ids:
            self._db.execute("DELETE FROM fragments WHERE bundle_id = ?", (bid,))
            self._db.execute("DELETE FROM transfers WHERE bundle_id = ?", (bid,))
        return len(ids)


_COLUMNS = "bundle_id, state, reason, priority, title, duration, received, played, plays"


def _stored(row: tuple) -> Stored:
    bid, state, reason, prio, title, duration, received, played, plays = row
    return Stored(bid, state, reason, Priority(prio) if prio is not None else None, title, duration, received,
                  played, plays)


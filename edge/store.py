"""The edge's store and play record: every bundle it decided on, each played once.

The link protocol (:class:`relay.link.receiver.Receiver`) checks every part
before it is stored and decides each complete transfer; this store is its
ledger: it keeps each decision, and what became of each bundle afterwards.

Bundle ids are kept for as long as a replay could still be fresh, so a
bundle that arrives again is acknowledged again but stored and played once.
An accepted bundle is marked played when its playback finished; one that
cannot be played is *quarantined* with the reason (``relay edge ls`` shows
it, ``relay edge replay`` can try again), and a bundle whose playback the
daemon died in ``max_play_attempts`` times is quarantined too, so one bundle
cannot crash-loop the edge. Each outcome is kept as a play report until it
has been handed to the broker for the ground.

With a profile store, the inbox also keeps the edge's half of the voice
profiles: full profiles in an accepted bundle are learnt at once, and
profiles a bundle only refers to but the edge has never received are named
in its ack, so the ground sends them in full again.
"""

from __future__ import annotations

import threading
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from relay.config import EdgeConfig, EdgeLink
from relay.db import connect, transaction
from relay.errors import BundleError, RelayError
from relay.format.bundle import Bundle, StreamPart
from relay.format.limits import DEFAULT_LIMITS, Limits
from relay.format.profile import PROFILE_ID_SIZE
from relay.link import receiver
from relay.link.messages import Ack, AckState, Fragment, Poll, Priority
from relay.link.receiver import Receiver
from relay.link.signing import Keyring, VerifyKey
from relay.link.transfer import Manifest
from relay.profiles import ProfileStore
from relay.storage import Durable, Waiter

SCHEMA = receiver.SCHEMA + """
CREATE TABLE IF NOT EXISTS bundles (
    bundle_id BLOB PRIMARY KEY, state TEXT NOT NULL, reason TEXT, priority INTEGER, title TEXT, duration REAL,
    data BLOB, received REAL NOT NULL, played REAL, plays INTEGER NOT NULL DEFAULT 0,
    missing_profiles BLOB, seq INTEGER, signed_at INTEGER, attempts INTEGER NOT NULL DEFAULT 0, report INTEGER
);
CREATE INDEX IF NOT EXISTS bundles_unplayed ON bundles (state, played, priority, received);
CREATE TABLE IF NOT EXISTS stream_parts (
    bundle_id BLOB PRIMARY KEY, stream BLOB NOT NULL, part INTEGER NOT NULL, start REAL NOT NULL,
    last INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS stream_parts_order ON stream_parts (stream, part);
CREATE TABLE IF NOT EXISTS plays (bundle_id BLOB NOT NULL, at REAL NOT NULL, how TEXT NOT NULL, output TEXT);
"""
ACCEPTED, REJECTED, QUARANTINED = "accepted", "rejected", "quarantined"


class InboxError(RelayError):
    """An operator asked for a bundle the edge does not have, or for something it cannot do."""


@dataclass(frozen=True, slots=True)
class Stored:
    """A bundle the edge has decided on."""

    bundle_id: bytes
    state: str  # accepted | rejected | quarantined
    reason: str | None
    priority: Priority | None
    title: str | None
    duration: float | None
    received: float
    played: float | None
    plays: int
    seq: int | None = None
    started: float | None = None  # when its (last) playback began
    stream: StreamPart | None = None  # a part of a live stream

    def to_dict(self) -> dict:
        return {
            "bundle_id": self.bundle_id.hex(), "state": self.state, "reason": self.reason,
            "priority": self.priority.name.lower() if self.priority is not None else None, "title": self.title,
            "duration": self.duration, "received": self.received, "played": self.played, "plays": self.plays,
            "seq": self.seq, "started": self.started,
            "stream": None if self.stream is None else {"id": self.stream.id_hex, "part": self.stream.seq,
                                                        "start": self.stream.start, "last": self.stream.last},
        }


Received = receiver.Received[Stored]


class Inbox:
    """The edge's store (one per thread: SQLite connections are not shared),
    with its :class:`Receiver` (``.receiver``) on the same connection."""

    def __init__(self, path: str | Path, edge: str, keyring: Keyring, profiles: ProfileStore | None = None,
                 link: EdgeLink | None = None, limits: Limits = DEFAULT_LIMITS) -> None:
        self.path = Path(path)
        self.profiles = profiles
        self._db = connect(self.path, SCHEMA, "the edge store", InboxError)
        if "started" not in {r[1] for r in self._db.execute("PRAGMA table_info(bundles)")}:
            self._db.execute("ALTER TABLE bundles ADD COLUMN started REAL")
        self.receiver: Receiver[Stored] = Receiver(self._db, edge, keyring, self, link, limits)
        self.edge, self.keyring, self.limits = edge, keyring, limits

    @property
    def link(self) -> EdgeLink:
        return self.receiver.link

    @classmethod
    def of(cls, cfg: EdgeConfig, profiles: ProfileStore | None = None) -> Inbox:
        """The edge's store as ``cfg`` names it, trusting its grounds' keys: what
        the daemon, the CLI and the console open."""
        keys = [VerifyKey.parse(k, f"edge.trusted_keys[{i}]") for i, k in enumerate(cfg.edge.trusted_keys)]
        return cls(cfg.edge.inbox_db, cfg.edge.name, Keyring(keys), profiles, cfg.link, cfg.limits)

    def close(self) -> None:
        self._db.close()

    def _tx(self) -> AbstractContextManager[None]:
        return transaction(self._db)

    @property
    def epoch(self) -> int:
        return self.receiver.epoch

    # --- the link (the receiver's, here so the daemon, the CLI and by-hand imports have one store) ---------

    def receive(self, frag: Fragment) -> Received:
        return self.receiver.receive(frag)

    def poll(self, poll: Poll) -> Received:
        return self.receiver.poll(poll)

    def status(self, bid: bytes, seq: int = 0) -> Ack:
        return self.receiver.status(bid, seq)

    def holes(self) -> list[Ack]:
        return self.receiver.holes()

    def complete(self) -> list[tuple[bytes, Priority]]:
        return self.receiver.complete()

    def assembly(self, bid: bytes) -> tuple[bytes, Manifest] | None:
        return self.receiver.assembly(bid)

    def check(self, bid: bytes, data: bytes, manifest: Manifest,
              cancel: threading.Event | None = None) -> Bundle | BundleError | None:
        return self.receiver.check(bid, data, manifest, cancel)

    def decide(self, bid: bytes, data: bytes, outcome: Bundle | BundleError | None) -> Received:
        return self.receiver.decide(bid, data, outcome)

    def finish(self, bid: bytes) -> Received:
        return self.receiver.finish(bid)

    def discard(self, bid: bytes) -> None:
        self.receiver.discard(bid)

    def expire(self) -> list[bytes]:
        return self.receiver.expire()

    def partial(self) -> list[tuple[bytes, int, int]]:
        return self.receiver.partial()

    def stored_bytes(self) -> int:
        return self.receiver.stored_bytes()

    def next_counter(self) -> int:
        return self.receiver.next_counter()

    # --- the ledger (what the receiver asks) ----------------------------------------------------------

    def known(self, bundle_id: bytes) -> Stored | None:
        return self.get(bundle_id)

    def record(self, bid: bytes, data: bytes, outcome: Bundle | BundleError | None, priority: Priority,
               seq: int, signed_at: int) -> Stored:
        now = time.time()
        title = duration = stored = None
        missing = b""
        if isinstance(outcome, Bundle):
            state, reason = ACCEPTED, None
            title, duration, stored = outcome.source.title, outcome.source.duration, data
            missing = b"".join(self.profiles.learn(outcome)) if self.profiles is not None else b""
        else:
            state = REJECTED
            reason = str(outcome) if outcome is not None else "assembled bundle does not match its signed digest"
        self._db.execute(
            "INSERT INTO bundles (bundle_id, state, reason, priority, title, duration, data, received, "
            "missing_profiles, seq, signed_at, report) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (bid, state, reason, int(priority), title, duration, stored, now, missing or None, seq, signed_at,
             int(AckState.ACCEPTED if state == ACCEPTED else AckState.REJECTED)))
        part = outcome.source.stream if isinstance(outcome, Bundle) else None
        if part is not None:
            self._db.execute("INSERT OR REPLACE INTO stream_parts VALUES (?, ?, ?, ?, ?)",
                             (bid, part.stream_id, part.seq, part.start, int(part.last)))
        return Stored(bid, state, reason, priority, title, duration, now, None, 0, seq, None, part)

    def decided_ack(self, stored: Stored) -> Ack:
        bid, seq = stored.bundle_id, stored.seq or 0
        if stored.state == REJECTED:
            return Ack(bid, AckState.REJECTED, reason=stored.reason or "rejected", seq=seq)
        if stored.state == QUARANTINED:
            return Ack(bid, AckState.QUARANTINED, reason=stored.reason or "cannot be played", seq=seq)
        if stored.played is not None:
            return Ack(bid, AckState.PLAYED, seq=seq)
        return Ack(bid, AckState.ACCEPTED, missing_profiles=tuple(self.missing_profiles(bid)), seq=seq)

    def missing_profiles(self, bundle_id: bytes) -> list[bytes]:
        """Profiles the bundle refers to that the edge still lacks."""
        row = self._db.execute("SELECT missing_profiles FROM bundles WHERE bundle_id = ?", (bundle_id,)).fetchone()
        if not row or not row[0] or self.profiles is None:
            return []
        blob = bytes(row[0])
        ids = [blob[i:i + PROFILE_ID_SIZE] for i in range(0, len(blob), PROFILE_ID_SIZE)]
        return [p for p in ids if self.profiles.get(p) is None]

    # --- playing ---------------------------------------------------------------------------------

    def next_to_play(self, stream_wait: float = 30.0, now: float | None = None,
                     skip: set[bytes] | frozenset[bytes] = frozenset()) -> Stored | None:
        """The most urgent accepted bundle not played yet (but those in ``skip``). A part of a live
        stream waits for the part before it (played, or given up on), for at
        most ``stream_wait`` seconds after it arrived: the link may deliver
        parts out of order, and a part that never comes must not stop the rest."""
        now = now or time.time()
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM {_FROM} WHERE b.state = ? AND b.played IS NULL "
                                "ORDER BY b.priority, b.received", (ACCEPTED,)).fetchall()
        for row in rows:
            item = _stored(row)
            if item.bundle_id in skip:
                continue
            part = item.stream
            if part is None:
                return item
            earlier = self._db.execute(
                "SELECT 1 FROM stream_parts s JOIN bundles b USING (bundle_id) WHERE s.stream = ? AND s.part < ? "
                "AND b.state = ? AND b.played IS NULL LIMIT 1", (part.stream_id, part.seq, ACCEPTED)).fetchone()
            if earlier is not None:
                continue  # that one comes first
            before = self._db.execute(
                "SELECT b.state, b.played FROM stream_parts s JOIN bundles b USING (bundle_id) "
                "WHERE s.stream = ? AND s.part = ?", (part.stream_id, part.seq - 1)).fetchone()
            done = before is not None and (before[1] is not None or before[0] != ACCEPTED)
            if part.seq == 0 or done or now - item.received >= stream_wait:
                return item
        return None

    def stream(self, stream_id: bytes) -> list[Stored]:
        """A live stream's parts received so far, in order."""
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM bundles b JOIN stream_parts s USING (bundle_id) WHERE s.stream = ? "
            "ORDER BY s.part", (stream_id,))
        return [_stored(r) for r in rows]

    def data(self, bundle_id: bytes) -> bytes:
        row = self._db.execute("SELECT data FROM bundles WHERE bundle_id = ? AND state IN (?, ?)",
                               (bundle_id, ACCEPTED, QUARANTINED)).fetchone()
        if row is None:
            raise InboxError(f"no accepted bundle {bundle_id.hex()} on this edge (relay edge ls lists them)")
        if row[0] is None:
            raise InboxError(f"bundle {bundle_id.hex()} was played long ago and its data removed "
                             "([retention] bundles_days, bundles_max); its transcript is still searchable")
        return bytes(row[0])

    # --- retention -------------------------------------------------------------------------------

    def sheddable(self, before: float, keep: int) -> list[bytes]:
        """Bundles whose data may go: played, rejected or quarantined (never one
        still to be played), received before ``before`` or older than the newest
        ``keep`` that hold data."""
        done = "(state != ? OR played IS NOT NULL) AND data IS NOT NULL"
        old = {bytes(r[0]) for r in self._db.execute(
            f"SELECT bundle_id FROM bundles WHERE {done} AND received < ?", (ACCEPTED, before))}
        beyond = {bytes(r[0]) for r in self._db.execute(
            f"SELECT bundle_id FROM bundles WHERE {done} AND bundle_id NOT IN (SELECT bundle_id FROM bundles "
            "WHERE data IS NOT NULL ORDER BY received DESC LIMIT ?)", (ACCEPTED, keep))}
        return sorted(old | beyond)

    def shed(self, ids: list[bytes]) -> None:
        """Drop these bundles' data (their rows stay: the id, so a resend is not played again, and the record)."""
        with self._tx():
            self._db.executemany("UPDATE bundles SET data = NULL WHERE bundle_id = ? AND (state != ? OR played IS "
                                 "NOT NULL)", [(b, ACCEPTED) for b in ids])

    def data_sizes(self, ids: list[bytes]) -> list[tuple[bytes, int]]:
        return [(b, int(self._db.execute("SELECT coalesce(length(data), 0) FROM bundles WHERE bundle_id = ?",
                                         (b,)).fetchone()[0])) for b in ids]

    def forgettable(self, before: float) -> list[bytes]:
        """Rows that may go entirely: data gone, the ground told, received before
        ``before`` (which must be older than any transfer the edge would still
        take as fresh, or a replay would play again)."""
        return [bytes(r[0]) for r in self._db.execute(
            "SELECT bundle_id FROM bundles WHERE data IS NULL AND report IS NULL AND received < ? AND "
            "(state != ? OR played IS NOT NULL)", (before, ACCEPTED))]

    def forget(self, ids: list[bytes]) -> None:
        with self._tx():
            for table in ("plays", "stream_parts", "bundles"):
                self._db.executemany(f"DELETE FROM {table} WHERE bundle_id = ?", [(b,) for b in ids])

    def outputs(self, bundle_id: bytes, folder: Path) -> Path | None:
        """The WAV the daemon spoke this bundle into, if it is still in ``folder``."""
        for (output,) in self._db.execute("SELECT output FROM plays WHERE bundle_id = ? AND output IS NOT NULL "
                                          "ORDER BY at DESC", (bundle_id,)):
            path = Path(output)
            if path.suffix == ".wav" and path.parent.resolve() == folder.resolve() and path.is_file():
                return path
        return None

    def start_play(self, bundle_id: bytes) -> int:
        """Count a playback attempt before it starts (so a bundle that kills the
        daemon is not tried for ever), and when; returns the attempts so far."""
        with self._tx():
            self._db.execute("UPDATE bundles SET attempts = attempts + 1, started = ? WHERE bundle_id = ?",
                             (time.time(), bundle_id))
            row = self._db.execute("SELECT attempts FROM bundles WHERE bundle_id = ?", (bundle_id,)).fetchone()
        return int(row[0]) if row else 0

    def abandon_play(self, bundle_id: bytes) -> None:
        """The attempt ended for a reason that is not the bundle's (a full disk): do not count it."""
        self._db.execute("UPDATE bundles SET attempts = max(attempts - 1, 0) WHERE bundle_id = ?", (bundle_id,))

    def played(self, bundle_id: bytes, how: str, output: str | None) -> None:
        """Playback finished: record it (once for the automatic play) and keep a play report for the ground."""
        now = time.time()
        with self._tx():
            self._db.execute(
                "UPDATE bundles SET played = coalesce(played, ?), plays = plays + 1, attempts = 0, state = ?, "
                "reason = NULL, report = ? WHERE bundle_id = ?", (now, ACCEPTED, int(AckState.PLAYED), bundle_id))
            self._db.execute("INSERT INTO plays VALUES (?, ?, ?, ?)", (bundle_id, now, how, output))

    def quarantine(self, bundle_id: bytes, reason: str) -> None:
        """The bundle cannot be played: set it aside with the reason, and report it."""
        self._db.execute("UPDATE bundles SET state = ?, reason = ?, report = ? WHERE bundle_id = ? AND state = ?",
                         (QUARANTINED, reason, int(AckState.QUARANTINED), bundle_id, ACCEPTED))

    def crashed(self) -> list[Stored]:
        """After a start: quarantine accepted bundles whose playback the daemon
        died in ``max_play_attempts`` times. Returns them."""
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM {_FROM} WHERE state = ? AND played IS NULL AND attempts >= ?",
                                (ACCEPTED, self.link.max_play_attempts)).fetchall()
        out = []
        for row in rows:
            item = _stored(row)
            self.quarantine(item.bundle_id, f"playback did not finish {self.link.max_play_attempts} times "
                                            "(the daemon died while playing it)")
            out.append(item)
        return out

    def reports(self) -> list[Ack]:
        """What the ground must hear and the broker does not have yet, most urgent
        first: each decision (accepted, rejected) and each play report (played,
        quarantined). Kept in the store until :meth:`reported`, so an edge killed,
        or a broker restarted, before an ack was handed over sends it again."""
        rows = self._db.execute(f"SELECT {_COLUMNS}, report FROM {_FROM} WHERE report IS NOT NULL "
                                "ORDER BY priority, received").fetchall()
        out = []
        for row in rows:
            stored, report = _stored(row[:-1]), AckState(row[-1])
            if report == AckState.ACCEPTED and stored.state == ACCEPTED and stored.played is None:
                out.append(self.decided_ack(stored))  # with the profiles it still lacks
            else:
                out.append(Ack(stored.bundle_id, report, reason=stored.reason or "" if report != AckState.PLAYED
                               else "", seq=stored.seq or 0))
        return out

    def reported(self, ack: Ack) -> None:
        """``ack`` (a decision or a play report) is with the broker."""
        self._db.execute("UPDATE bundles SET report = NULL WHERE bundle_id = ? AND report = ?",
                         (ack.bundle_id, int(ack.state)))

    # --- operators -------------------------------------------------------------------------------

    def get(self, bundle_id: bytes) -> Stored | None:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM {_FROM} WHERE bundle_id = ?", (bundle_id,)).fetchone()
        return _stored(row) if row else None

    def find(self, prefix: str) -> Stored:
        """A bundle by (a unique prefix of) its hex id."""
        try:
            bytes.fromhex(prefix if len(prefix) % 2 == 0 else prefix + "0")
        except ValueError:
            raise InboxError(f"{prefix!r} is not a bundle id (hex)") from None
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM {_FROM} WHERE hex(bundle_id) LIKE ?",
                                (prefix.upper() + "%",)).fetchall()
        if not rows:
            raise InboxError(f"no bundle {prefix} on this edge (relay edge ls lists them)")
        if len(rows) > 1:
            raise InboxError(f"bundle id {prefix} is ambiguous ({len(rows)} match); give more digits")
        return _stored(rows[0])

    def version(self) -> tuple:
        """A value that changes whenever a bundle arrives, is played or is quarantined
        (the console's live list compares it)."""
        return tuple(self._db.execute(
            "SELECT count(*), max(received), sum(plays), group_concat(state) FROM bundles").fetchone())

    def bundles(self) -> list[Stored]:
        return [_stored(r) for r in self._db.execute(f"SELECT {_COLUMNS} FROM {_FROM} ORDER BY received")]


_COLUMNS = ("b.bundle_id, b.state, b.reason, b.priority, b.title, b.duration, b.received, b.played, b.plays, "
            "b.seq, b.started, s.stream, s.part, s.start, s.last")
_FROM = "bundles b LEFT JOIN stream_parts s USING (bundle_id)"


def _stored(row: tuple) -> Stored:
    bid, state, reason, prio, title, duration, received, played, plays, seq, started, sid, part, start, last = row
    stream = StreamPart(bytes(sid), part, start, bool(last)) if sid is not None else None
    return Stored(bytes(bid), state, reason, Priority(prio) if prio is not None else None, title, duration, received,
                  played, plays, seq, started, stream)




class DurableInbox(Durable):
    """The daemon's store: every call that writes waits out a full or failing
    disk (the waiter prunes once, then retries with a pause, logging the
    episode's start and end) instead of failing, so a daemon reads as what it
    does (``await store.played(...)``). The CLI and the console use
    :class:`Inbox` itself: an operator is told at once."""

    def __init__(self, inbox: Inbox, waiter: Waiter) -> None:
        super().__init__(waiter)
        self.inbox = inbox

    async def receive(self, frag: Fragment) -> Received:
        return await self._do(partial(self.inbox.receive, frag))

    async def holes(self) -> list[Ack]:
        return await self._do(self.inbox.holes)

    async def complete(self) -> list[tuple[bytes, Priority]]:
        return await self._do(self.inbox.complete)

    async def assembly(self, bid: bytes) -> tuple[bytes, Manifest] | None:
        return await self._do(partial(self.inbox.assembly, bid))

    async def decide(self, bid: bytes, data: bytes, outcome: Bundle | BundleError | None) -> Received:
        return await self._do(partial(self.inbox.decide, bid, data, outcome))

    async def expire(self) -> list[bytes]:
        return await self._do(self.inbox.expire)

    async def next_counter(self) -> int:
        return await self._do(self.inbox.next_counter)

    async def reports(self) -> list[Ack]:
        return await self._do(self.inbox.reports)

    async def reported(self, ack: Ack) -> None:
        await self._do(partial(self.inbox.reported, ack))

    async def crashed(self) -> list[Stored]:
        return await self._do(self.inbox.crashed)

    async def next_to_play(self, stream_wait: float, skip: set[bytes]) -> Stored | None:
        return await self._do(partial(self.inbox.next_to_play, stream_wait, skip=skip))

    async def data(self, bid: bytes) -> bytes:
        return await self._do(partial(self.inbox.data, bid))

    async def start_play(self, bid: bytes) -> int:
        return await self._do(partial(self.inbox.start_play, bid))

    async def abandon_play(self, bid: bytes) -> None:
        await self._do(partial(self.inbox.abandon_play, bid))

    async def quarantine(self, bid: bytes, reason: str) -> None:
        await self._do(partial(self.inbox.quarantine, bid, reason))

    async def played(self, bid: bytes, how: str, output: str | None) -> None:
        await self._do(partial(self.inbox.played, bid, how, output))

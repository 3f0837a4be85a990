"""The edge's durable store: parts in, verified bundles out, each played once.

Nothing is stored before it is checked. A transfer starts with its manifest
(part 0), which must carry a trusted ground's signature over this edge's
name, be fresh (signed within ``max_age``, and not before this store began:
an edge that lost its store does not replay captured bundles), and fit the
edge's limits (size, transfers in progress, disk quota). Every other part
is checked against the hash the manifest (or an earlier, verified part)
gives for it before it is written to SQLite; a part whose hash is not known
yet waits in a small, bounded memory buffer, and anything that fails a check
is dropped and counted, never stored, so a forged part cannot take the place
of a real one and a flood leaves the disk as it was.

When every part is in, the bundle is assembled and decoded (its digest and
the bundle's own hash checked, every field within :class:`relay.format.limits.Limits`)
outside the event loop by the daemon, then *accepted* or, if a trusted ground
signed something unusable, *rejected* with the reason. Both are acknowledged
in acks signed with the edge's own key.

Bundle ids are kept for good, so a bundle that arrives again is acknowledged
again but stored and played once. An accepted bundle is marked played when
its playback finished; one that cannot be played is *quarantined* with the
reason (``relay edge ls`` shows it, ``relay edge replay`` can try again),
and a bundle whose playback the daemon died in ``max_play_attempts`` times is
quarantined too, so one bundle cannot crash-loop the edge. Each outcome is
kept as a play report until it has been handed to the broker for the ground.

With a profile store, the inbox also keeps the edge's half of the voice
profiles: full profiles in an accepted bundle are learnt at once, and
profiles a bundle only refers to but the edge has never received are named
in its ack, so the ground sends them in full again.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from pathlib import Path

from relay.config import EdgeConfig, EdgeLink
from relay.db import connect, transaction
from relay.errors import BundleError, RelayError
from relay.format.bundle import Bundle, StreamPart
from relay.format.limits import DEFAULT_LIMITS, DecodeBudget, Limits
from relay.format.profile import PROFILE_ID_SIZE
from relay.link.messages import FRAGMENT_HEADER, Ack, AckState, Fragment, LinkError, Poll, Priority, RejectCode, ranges
from relay.link.signing import Keyring, VerifyKey
from relay.link.transfer import IncomingTransfer, Manifest, bundle_digest
from relay.profiles import ProfileStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value);
CREATE TABLE IF NOT EXISTS transfers (
    bundle_id BLOB PRIMARY KEY, manifest BLOB NOT NULL, count INTEGER NOT NULL, priority INTEGER NOT NULL,
    size INTEGER NOT NULL, signed_at INTEGER NOT NULL, seq INTEGER NOT NULL, received BLOB NOT NULL,
    first REAL NOT NULL, last REAL NOT NULL, assemblies INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS fragments (
    bundle_id BLOB NOT NULL, idx INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (bundle_id, idx)
);
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
MAX_ASSEMBLIES = 3  # a transfer whose parts all check but whose whole does not is fetched again this often


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


@dataclass(frozen=True, slots=True)
class Received:
    """What one incoming message led to: an ack to publish (or None); when a
    transfer just completed, its id (assemble and decide it: :meth:`Inbox.finish`);
    when it was dropped, why (a tag for counting, and a line for the log)."""

    ack: Ack | None = None
    complete: bytes | None = None
    priority: Priority | None = None  # of the transfer just completed
    decided: Stored | None = None
    dropped: str | None = None
    note: str = ""


def _bit(bitmap: bytes | bytearray, i: int) -> bool:
    return bool(bitmap[i // 8] >> (i % 8) & 1)


def _missing(bitmap: bytes | bytearray, count: int) -> list[int]:
    return [i for i in range(count) if not _bit(bitmap, i)]


class _Buffer:
    """Parts that arrived before the part holding their hash (the link
    reordered them): kept in memory, at most ``max_bytes`` in all (each part
    counted with what holding it costs, so empty parts are not free) and
    ``max_parts`` parts, a few candidates per place, oldest evicted first,
    never written to disk. An evicted real part is simply a hole the ground
    resends."""

    PER_PART = 3
    OVERHEAD = 256  # bytes of memory one held part costs beyond its data (measured: ~330 for an empty one)

    def __init__(self, max_bytes: int, max_parts: int = 4096) -> None:
        self.max_bytes = max_bytes
        self.max_parts = max_parts
        self.size = 0
        self.parts = 0
        self._parts: OrderedDict[tuple[bytes, int], list[bytes]] = OrderedDict()

    def add(self, frag: Fragment) -> bool:
        cost = len(frag.data) + self.OVERHEAD
        if cost > self.max_bytes or self.max_parts < 1:
            return False
        key = (frag.bundle_id, frag.index)
        candidates = self._parts.get(key, [])
        if frag.data in candidates or len(candidates) >= self.PER_PART:
            return False
        self._parts.setdefault(key, candidates).append(frag.data)
        self.size += cost
        self.parts += 1
        while self.size > self.max_bytes or self.parts > self.max_parts:
            _, old = self._parts.popitem(last=False)
            self._forget(old)
        return True

    def _forget(self, found: list[bytes]) -> None:
        self.size -= sum(len(d) + self.OVERHEAD for d in found)
        self.parts -= len(found)

    def take(self, bundle_id: bytes, index: int) -> list[bytes]:
        found = self._parts.pop((bundle_id, index), [])
        self._forget(found)
        return found

    def has(self, bundle_id: bytes, index: int) -> bool:
        return (bundle_id, index) in self._parts


class Inbox:
    def __init__(self, path: str | Path, edge: str, keyring: Keyring, profiles: ProfileStore | None = None,
                 link: EdgeLink | None = None, limits: Limits = DEFAULT_LIMITS) -> None:
        self.path = Path(path)
        self.edge = edge
        self.keyring = keyring
        self.profiles = profiles
        self.link = link or EdgeLink()
        self.limits = limits
        self._db = connect(self.path, SCHEMA, "the edge store", InboxError)
        if "started" not in {r[1] for r in self._db.execute("PRAGMA table_info(bundles)")}:
            self._db.execute("ALTER TABLE bundles ADD COLUMN started REAL")
        # A store refuses what was signed before it began, and within max_clock_skew after: a transfer that
        # an edge which lost its old store had played could otherwise play again (the broker redelivering it,
        # or someone replaying it) if the ground's clock ran ahead. A ground that signs something new in that
        # window is told when to sign again (not_before); it signs again only what it has not seen delivered.
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('epoch', ?)",
                         (int(time.time() + self.link.max_clock_skew),))
        self.epoch = int(self._db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()[0])
        # the ack counter starts at the store's birth in ms, so a store made after a loss counts on from above
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('counter', ?)", (int(time.time() * 1000),))
        self._counter = self._counter_end = 0
        self._open: dict[bytes, IncomingTransfer] = {}
        self._buffer = _Buffer(self.link.buffer_bytes, self.link.buffer_parts)
        self._replied: dict[tuple, float] = {}
        self._polled: OrderedDict[bytes, int] = OrderedDict()  # the newest poll's signing time, per bundle

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

    COUNTER_BLOCK = 1000  # ack numbers reserved per write to the store

    def next_counter(self) -> int:
        """The next ack number: strictly greater than any this store handed out,
        across restarts (blocks are reserved in the store before they are used)."""
        if self._counter >= self._counter_end:
            with self._tx():
                start = int(self._db.execute("SELECT value FROM meta WHERE key = 'counter'").fetchone()[0])
                self._db.execute("UPDATE meta SET value = ? WHERE key = 'counter'", (start + self.COUNTER_BLOCK,))
            self._counter, self._counter_end = start, start + self.COUNTER_BLOCK
        self._counter += 1
        return self._counter

    # --- receiving -------------------------------------------------------------------------------

    def receive(self, frag: Fragment) -> Received:
        """Check one fragment and store it if it is real. Never raises for
        what the sender controls; a full disk raises (the caller waits and
        offers the same fragment again)."""
        if len(frag.data) + FRAGMENT_HEADER.size > self.link.max_fragment:
            return Received(dropped="size", note=f"fragment of {len(frag.data)} bytes over max_fragment")
        known = self.get(frag.bundle_id)
        if known is not None:  # a resend: only its signed manifest is answered (what we decided, at most once
            return self._again(frag, known)  # per reply_interval); a bare part could be anyone's
        if frag.index == 0:
            if frag.bundle_id in self._open or self._transfer(frag.bundle_id) is not None:
                return Received()  # the manifest again
            return self._manifest(frag)
        transfer = self._transfer(frag.bundle_id)
        if transfer is None or not transfer.known(frag.index):
            if transfer is not None and transfer.layout.count != frag.count:
                return Received(dropped="count", note=f"fragment of bundle {frag.bundle_id.hex()} claims "
                                                      f"{frag.count} parts, its manifest {transfer.layout.count}")
            if self._buffer.add(frag):
                return Received(note="held until its hash arrives")
            return Received(dropped="buffer", note="fragment whose hash is not known yet, and no room to hold it")
        if transfer.layout.count != frag.count:
            return Received(dropped="count", note=f"fragment of bundle {frag.bundle_id.hex()} claims "
                                                  f"{frag.count} parts, its manifest {transfer.layout.count}")
        received = self._received(frag.bundle_id)
        had_last = _bit(received, frag.count - 1)
        if _bit(received, frag.index) and transfer.verify(frag.index, frag.data):
            return self._progress(transfer, received, frag.index, had_last)  # a duplicate (answered: it is real)
        if not transfer.verify(frag.index, frag.data):
            return Received(dropped="hash", note=f"fragment {frag.index} of bundle {frag.bundle_id.hex()} does not "
                                                 "match its signed hash (forged or damaged)")
        received = self._store(transfer, [(frag.index, frag.data)])
        return self._progress(transfer, received, frag.index, had_last)

    def _again(self, frag: Fragment, known: Stored) -> Received:
        """A part of a bundle already decided: a genuine manifest gets the decision
        again (the ground lost our ack); anything else is dropped unanswered."""
        if frag.index != 0:
            return Received(note="a part of a bundle already decided")
        try:
            manifest = Manifest.unpack(frag.data)
            manifest.check(self.keyring, self.edge, frag.bundle_id, frag.count)
        except LinkError as e:
            return Received(dropped=e.reason, note=f"manifest for bundle {frag.bundle_id.hex()}: {e}")
        ack = self._decided_ack(known)
        return Received(self._limited(replace(ack, seq=manifest.seq) if ack.state == AckState.REJECTED else ack))

    def _manifest(self, frag: Fragment) -> Received:
        bid = frag.bundle_id
        try:
            manifest = Manifest.unpack(frag.data)
            manifest.check(self.keyring, self.edge, bid, frag.count)
        except LinkError as e:
            return Received(dropped=e.reason, note=f"manifest for bundle {bid.hex()}: {e}")
        seq = manifest.seq
        # authentic from here on: refusals are answered, so the ground knows
        if manifest.part_size + FRAGMENT_HEADER.size > self.link.max_fragment:
            return self._refuse(bid, seq, RejectCode.BAD, f"fragments of {manifest.part_size + FRAGMENT_HEADER.size} "
                                                          f"bytes are over this edge's max_fragment")
        if manifest.size > self.limits.max_bundle_bytes:
            return self._refuse(bid, seq, RejectCode.BAD, f"a bundle of {manifest.size} bytes is over this edge's "
                                                          f"limit of {self.limits.max_bundle_bytes}")
        now = time.time()
        if manifest.signed_at > now + self.link.max_clock_skew:
            return self._refuse(bid, seq, RejectCode.STALE,
                                f"signed {manifest.signed_at - now:.0f} s in the future by this edge's clock "
                                f"(max_clock_skew {self.link.max_clock_skew:.0f} s): is the ground's clock right?")
        if self.link.max_age and now - manifest.signed_at > self.link.max_age:
            return self._refuse(bid, seq, RejectCode.STALE, f"signed {(now - manifest.signed_at) / 86400:.1f} days "
                                                            f"ago (max_age {self.link.max_age / 86400:.1f} days)")
        if manifest.signed_at < self.epoch:
            began = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.epoch))
            return self._refuse(bid, seq, RejectCode.STALE, f"signed before this edge's store began ({began}, "
                                                            "max_clock_skew after it was made): a replay, or sent "
                                                            "before the edge lost its state; the ground signs it "
                                                            "again", self.epoch)
        if not self._make_room(manifest):
            return Received(dropped="full", note=f"bundle {bid.hex()}: too many transfers in progress "
                                                 f"(max_partial {self.link.max_partial}, partial_quota "
                                                 f"{self.link.partial_quota} bytes); the ground will resend it")
        received = bytearray((frag.count + 7) // 8)
        received[0] |= 1
        with self._tx():
            self._db.execute(
                "INSERT INTO transfers (bundle_id, manifest, count, priority, size, signed_at, seq, received, first, "
                "last) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (bid, frag.data, frag.count, int(manifest.priority), manifest.size, manifest.signed_at, manifest.seq,
                 bytes(received), now, now))
        transfer = IncomingTransfer(bid, manifest)
        self._open[bid] = transfer
        received = self._store(transfer, [], newly_known=list(transfer.layout.block(0)))
        return self._progress(transfer, received, 0, had_last=False)

    def _refuse(self, bid: bytes, seq: int, code: RejectCode, reason: str, not_before: int = 0) -> Received:
        ack = Ack(bid, AckState.REJECTED, reason=reason, code=code, seq=seq, not_before=not_before)
        return Received(self._limited(ack),
                        dropped="stale" if code == RejectCode.STALE else "refused",
                        note=f"bundle {bid.hex()}: {reason}")

    def _make_room(self, manifest: Manifest) -> bool:
        """Room for one more transfer, evicting less urgent, idle ones if need be."""
        while True:
            n, declared = self._db.execute("SELECT count(*), coalesce(sum(size), 0) FROM transfers").fetchone()
            if n < self.link.max_partial and declared + manifest.size <= self.link.partial_quota:
                return True
            victim = self._db.execute(
                "SELECT bundle_id FROM transfers WHERE priority > ? ORDER BY priority DESC, last LIMIT 1",
                (int(manifest.priority),)).fetchone()
            if victim is None or manifest.size > self.link.partial_quota:
                return False
            self._forget(victim[0])

    def _transfer(self, bid: bytes) -> IncomingTransfer | None:
        """The transfer's verified state (from memory, or rebuilt from the store after a restart)."""
        if bid in self._open:
            return self._open[bid]
        row = self._db.execute("SELECT manifest FROM transfers WHERE bundle_id = ?", (bid,)).fetchone()
        if row is None:
            return None
        transfer = IncomingTransfer(bid, Manifest.unpack(bytes(row[0])))
        for idx, data in self._db.execute(
                "SELECT idx, data FROM fragments WHERE bundle_id = ? AND idx <= ? ORDER BY idx",
                (bid, transfer.layout.heads)):
            transfer.learn(idx, bytes(data))
        self._open[bid] = transfer
        return transfer

    def _received(self, bid: bytes) -> bytearray:
        row = self._db.execute("SELECT received FROM transfers WHERE bundle_id = ?", (bid,)).fetchone()
        return bytearray(row[0]) if row else bytearray()

    def _store(self, transfer: IncomingTransfer, parts: list[tuple[int, bytes]],
               newly_known: list[int] | None = None) -> bytearray:
        """Store verified parts, and every held part that the hashes they reveal now verify."""
        bid = transfer.bundle_id
        received = self._received(bid)
        todo = list(parts)
        known = list(newly_known or [])
        accepted: list[tuple[int, bytes]] = []
        while todo or known:
            while todo:
                idx, data = todo.pop()
                if _bit(received, idx):
                    continue
                received[idx // 8] |= 1 << (idx % 8)
                accepted.append((idx, data))
                known += transfer.learn(idx, data)
            while known:
                idx = known.pop()
                if _bit(received, idx):
                    continue
                for data in self._buffer.take(bid, idx):
                    if transfer.verify(idx, data):
                        todo.append((idx, data))
                        break
        if accepted:
            with self._tx():
                self._db.executemany("INSERT OR IGNORE INTO fragments VALUES (?, ?, ?)",
                                     [(bid, i, d) for i, d in accepted])
                self._db.execute("UPDATE transfers SET received = ?, last = ? WHERE bundle_id = ?",
                                 (bytes(received), time.time(), bid))
        return received

    def _progress(self, transfer: IncomingTransfer, received: bytearray, index: int, had_last: bool) -> Received:
        """After a part: complete; or, when the last part arrives (again, or
        with the manifest it waited for), the holes, for the ground to resend."""
        bid = transfer.bundle_id
        count = transfer.layout.count
        missing = _missing(received, count)
        if not missing:
            return Received(complete=bid, priority=transfer.manifest.priority)
        if index == count - 1 or (_bit(received, count - 1) and not had_last):
            return Received(self._limited(Ack(bid, AckState.INCOMPLETE, tuple(ranges(missing)),
                                              seq=transfer.manifest.seq)))
        return Received()

    def _limited(self, ack: Ack) -> Ack | None:
        """``ack``, unless the very same ack went out less than ``reply_interval`` ago
        (replayed messages must not make the edge talk up the thin link)."""
        now = time.monotonic()
        key = ack.key()
        if now - self._replied.get(key, -1e9) < self.link.reply_interval:
            return None
        if len(self._replied) > 4096:
            self._replied = {k: t for k, t in self._replied.items() if now - t < self.link.reply_interval}
        self._replied[key] = now
        return ack

    def poll(self, poll: Poll) -> Received:
        """A (verified) poll: where the bundle stands."""
        bid = poll.bundle_id
        try:
            poll.check(self.keyring, self.edge)
        except LinkError as e:
            return Received(dropped=e.reason, note=f"poll for bundle {bid.hex()}: {e}")
        now = time.time()
        if poll.signed_at > now + self.link.max_clock_skew:
            return Received(dropped="future", note=f"poll for bundle {bid.hex()} signed {poll.signed_at - now:.0f} s "
                                                   "in the future by this edge's clock: is the ground's clock right?")
        if self.link.max_age and now - poll.signed_at > self.link.max_age:
            return Received(dropped="stale", note=f"poll for bundle {bid.hex()} signed too long ago")
        if poll.signed_at <= self._polled.get(bid, -1):
            return Received(dropped="replay", note=f"poll for bundle {bid.hex()} no newer than one answered already "
                                                   "(a replay)")
        self._polled[bid] = poll.signed_at
        self._polled.move_to_end(bid)
        while len(self._polled) > 4096:
            self._polled.popitem(last=False)
        return Received(self._limited(self.status(bid, poll.seq)))

    def status(self, bid: bytes, seq: int = 0) -> Ack:
        """Where ``bid`` stands; ``seq``: the transfer the question was about (for an answer of "unknown")."""
        known = self.get(bid)
        if known is not None:
            ack = self._decided_ack(known)
            return replace(ack, seq=seq) if ack.state == AckState.REJECTED and seq else ack
        row = self._db.execute("SELECT count, received, seq FROM transfers WHERE bundle_id = ?", (bid,)).fetchone()
        if row is None:
            return Ack(bid, AckState.UNKNOWN, seq=seq)
        return Ack(bid, AckState.INCOMPLETE, tuple(ranges(_missing(row[1], row[0]))), seq=row[2])

    def holes(self) -> list[Ack]:
        """An INCOMPLETE ack for every transfer in progress, most urgent first:
        what the edge tells the ground when it (re)connects, so holes left by
        a fault are resent at once, in priority order, not after a poll."""
        rows = self._db.execute("SELECT bundle_id, count, received, seq FROM transfers ORDER BY priority, first")
        return [Ack(bid, AckState.INCOMPLETE, tuple(ranges(_missing(rec, n))), seq=seq) for bid, n, rec, seq in rows]

    # --- deciding --------------------------------------------------------------------------------

    def complete(self) -> list[tuple[bytes, Priority]]:
        """Transfers with every part in but no decision (the daemon died in between), with their priority."""
        return [(bytes(bid), Priority(prio)) for bid, n, rec, prio in
                self._db.execute("SELECT bundle_id, count, received, priority FROM transfers")
                if not _missing(rec, n)]

    def assembly(self, bid: bytes) -> tuple[bytes, Manifest] | None:
        """The bundle bytes of a complete transfer, and its manifest."""
        transfer = self._transfer(bid)
        if transfer is None:
            return None
        parts = self._db.execute("SELECT idx, data FROM fragments WHERE bundle_id = ? AND idx > ? ORDER BY idx",
                                 (bid, transfer.layout.heads)).fetchall()
        if len(parts) != transfer.layout.count - 1 - transfer.layout.heads:
            return None
        return b"".join(bytes(p[1]) for p in parts), transfer.manifest

    def check(self, bid: bytes, data: bytes, manifest: Manifest,
              cancel: threading.Event | None = None) -> Bundle | BundleError | None:
        """Off the event loop: the decoded bundle, the reason it is unusable, or
        None when the assembly does not match the signed digest (fetch it again).
        Setting ``cancel`` abandons the decoding (:class:`DecodeAbandoned`)."""
        from relay.format.wire import decode_bundle

        if len(data) != manifest.size or bundle_digest(data) != manifest.digest:
            return None
        try:
            bundle = decode_bundle(data, f"bundle {bid.hex()}", self.limits,
                                   DecodeBudget.of(self.limits, len(data), cancel))
        except BundleError as e:
            return e
        if bundle.bundle_id != bid:
            return BundleError("body", f"bundle {bid.hex()}: the bundle inside has id {bundle.bundle_id.hex()}")
        return bundle

    def decide(self, bid: bytes, data: bytes, outcome: Bundle | BundleError | None) -> Received:
        """Store the decision on a complete transfer (see :meth:`check`)."""
        row = self._db.execute("SELECT priority, signed_at, seq, assemblies, count FROM transfers WHERE bundle_id = ?",
                               (bid,)).fetchone()
        if row is None:
            known = self.get(bid)
            return Received(self._decided_ack(known) if known else None)
        priority, signed_at, seq, assemblies, count = row
        if outcome is None and assemblies + 1 < MAX_ASSEMBLIES:
            transfer = self._transfer(bid)
            heads = transfer.layout.heads if transfer else 0
            with self._tx():
                self._db.execute("DELETE FROM fragments WHERE bundle_id = ? AND idx > ?", (bid, heads))
                keep = bytearray((count + 7) // 8)
                for i in range(heads + 1):
                    keep[i // 8] |= 1 << (i % 8)
                self._db.execute("UPDATE transfers SET received = ?, assemblies = assemblies + 1 WHERE bundle_id = ?",
                                 (bytes(keep), bid))
            return Received(Ack(bid, AckState.INCOMPLETE, tuple(ranges(_missing(keep, count))), seq=seq),
                            dropped="assembly", note=f"bundle {bid.hex()} does not match its signed digest; "
                                                     "fetching it again")
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
        with self._tx():
            self._db.execute(
                "INSERT INTO bundles (bundle_id, state, reason, priority, title, duration, data, received, "
                "missing_profiles, seq, signed_at, report) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (bid, state, reason, priority, title, duration, stored, now, missing or None, seq, signed_at,
                 int(AckState.ACCEPTED if state == ACCEPTED else AckState.REJECTED)))
            part = outcome.source.stream if isinstance(outcome, Bundle) else None
            if part is not None:
                self._db.execute("INSERT OR REPLACE INTO stream_parts VALUES (?, ?, ?, ?, ?)",
                                 (bid, part.stream_id, part.seq, part.start, int(part.last)))
            self._forget(bid)
        decided = Stored(bid, state, reason, Priority(priority), title, duration, now, None, 0, seq, None, part)
        return Received(self._decided_ack(decided), decided=decided)

    def finish(self, bid: bytes) -> Received:
        """:meth:`assembly`, :meth:`check` and :meth:`decide` in one (tests, and
        callers without an event loop to keep free)."""
        found = self.assembly(bid)
        if found is None:
            return Received()
        data, manifest = found
        return self.decide(bid, data, self.check(bid, data, manifest))

    def discard(self, bid: bytes) -> None:
        """Drop a transfer in progress (its parts too); a decided bundle is kept."""
        with self._tx():
            self._forget(bid)

    def _forget(self, bid: bytes) -> None:
        self._db.execute("DELETE FROM fragments WHERE bundle_id = ?", (bid,))
        self._db.execute("DELETE FROM transfers WHERE bundle_id = ?", (bid,))
        self._open.pop(bid, None)

    def expire(self) -> list[bytes]:
        """Drop transfers idle for longer than ``partial_ttl`` (the ground gave up,
        or will start them again). Returns their ids."""
        cut = time.time() - self.link.partial_ttl
        ids = [bytes(r[0]) for r in self._db.execute("SELECT bundle_id FROM transfers WHERE last < ?", (cut,))]
        with self._tx():
            for bid in ids:
                self._forget(bid)
        return ids

    def _decided_ack(self, stored: Stored) -> Ack:
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
                out.append(self._decided_ack(stored))  # with the profiles it still lacks
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

    def partial(self) -> list[tuple[bytes, int, int]]:
        """Bundles still arriving: (id, parts received, count)."""
        out = []
        for bid, count, bitmap in self._db.execute("SELECT bundle_id, count, received FROM transfers"):
            out.append((bytes(bid), sum(bin(b).count("1") for b in bitmap), count))
        return out

    def stored_bytes(self) -> int:
        """Bytes of parts held for transfers in progress."""
        return int(self._db.execute("SELECT coalesce(sum(length(data)), 0) FROM fragments").fetchone()[0])


_COLUMNS = ("b.bundle_id, b.state, b.reason, b.priority, b.title, b.duration, b.received, b.played, b.plays, "
            "b.seq, b.started, s.stream, s.part, s.start, s.last")
_FROM = "bundles b LEFT JOIN stream_parts s USING (bundle_id)"


def _stored(row: tuple) -> Stored:
    bid, state, reason, prio, title, duration, received, played, plays, seq, started, sid, part, start, last = row
    stream = StreamPart(bytes(sid), part, start, bool(last)) if sid is not None else None
    return Stored(bytes(bid), state, reason, Priority(prio) if prio is not None else None, title, duration, received,
                  played, plays, seq, started, stream)



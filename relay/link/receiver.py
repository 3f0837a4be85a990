"""The edge's half of the link protocol: parts in, a decision on each complete transfer out.

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

The :class:`Receiver` keeps transfers in progress (their manifests, parts
and holes) and asks its :class:`Ledger` (the edge's store,
:class:`edge.store.Inbox`) whether a bundle was decided already and to record
a decision: the protocol lives here, what happens to a bundle afterwards
(playing it, reporting on it) lives with the edge. Both share one SQLite
connection, so a decision and the end of its transfer are one transaction.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import OrderedDict
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import Generic, Protocol, TypeVar

from relay.config import EdgeLink
from relay.db import transaction
from relay.errors import BundleError
from relay.format.bundle import Bundle
from relay.format.limits import DEFAULT_LIMITS, DecodeBudget, Limits
from relay.link.messages import FRAGMENT_HEADER, Ack, AckState, Fragment, LinkError, Poll, Priority, RejectCode, ranges
from relay.link.signing import Keyring
from relay.link.transfer import IncomingTransfer, Manifest, bundle_digest

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
"""
MAX_ASSEMBLIES = 3  # a transfer whose parts all check but whose whole does not is fetched again this often

D = TypeVar("D")


class Ledger(Protocol[D]):
    """What the receiver asks of the edge's store; ``D`` is its record of a decided bundle."""

    def known(self, bundle_id: bytes) -> D | None:
        """The record of a bundle decided already (kept for good: a resend is answered, never stored again)."""

    def decided_ack(self, decided: D) -> Ack:
        """What to tell the ground about a decided bundle (accepted, played, rejected, quarantined)."""

    def record(self, bundle_id: bytes, data: bytes, outcome: Bundle | BundleError | None, priority: Priority,
               seq: int, signed_at: int) -> D:
        """Keep the decision on a complete transfer: ``outcome`` the decoded bundle
        (accepted) or why it is unusable (rejected). Called inside the receiver's
        transaction."""


@dataclass(frozen=True, slots=True)
class Received(Generic[D]):
    """What one incoming message led to: an ack to publish (or None); when a
    transfer just completed, its id (assemble and decide it: :meth:`Receiver.finish`);
    when it was dropped, why (a tag for counting, and a line for the log)."""

    ack: Ack | None = None
    complete: bytes | None = None
    priority: Priority | None = None  # of the transfer just completed
    decided: D | None = None
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


class Receiver(Generic[D]):
    """One edge's transfers in progress, on ``db`` (which must hold :data:`SCHEMA`)."""

    COUNTER_BLOCK = 1000  # ack numbers reserved per write to the store

    def __init__(self, db: sqlite3.Connection, edge: str, keyring: Keyring, ledger: Ledger[D],
                 link: EdgeLink | None = None, limits: Limits = DEFAULT_LIMITS) -> None:
        self._db = db
        self.edge = edge
        self.keyring = keyring
        self.ledger = ledger
        self.link = link or EdgeLink()
        self.limits = limits
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

    def _tx(self) -> AbstractContextManager[None]:
        return transaction(self._db)

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

    # --- parts ---------------------------------------------------------------------------------------

    def receive(self, frag: Fragment) -> Received[D]:
        """Check one fragment and store it if it is real. Never raises for
        what the sender controls; a full disk raises (the caller waits and
        offers the same fragment again)."""
        if len(frag.data) + FRAGMENT_HEADER.size > self.link.max_fragment:
            return Received(dropped="size", note=f"fragment of {len(frag.data)} bytes over max_fragment")
        known = self.ledger.known(frag.bundle_id)
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

    def _again(self, frag: Fragment, known: D) -> Received[D]:
        """A part of a bundle already decided: a genuine manifest gets the decision
        again (the ground lost our ack); anything else is dropped unanswered."""
        if frag.index != 0:
            return Received(note="a part of a bundle already decided")
        try:
            manifest = Manifest.unpack(frag.data)
            manifest.check(self.keyring, self.edge, frag.bundle_id, frag.count)
        except LinkError as e:
            return Received(dropped=e.reason, note=f"manifest for bundle {frag.bundle_id.hex()}: {e}")
        ack = self.ledger.decided_ack(known)
        return Received(self._limited(replace(ack, seq=manifest.seq) if ack.state == AckState.REJECTED else ack))

    def _manifest(self, frag: Fragment) -> Received[D]:
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

    def _refuse(self, bid: bytes, seq: int, code: RejectCode, reason: str, not_before: int = 0) -> Received[D]:
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

    def _progress(self, transfer: IncomingTransfer, received: bytearray, index: int, had_last: bool) -> Received[D]:
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

    def poll(self, poll: Poll) -> Received[D]:
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
        known = self.ledger.known(bid)
        if known is not None:
            ack = self.ledger.decided_ack(known)
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

    def decide(self, bid: bytes, data: bytes, outcome: Bundle | BundleError | None) -> Received[D]:
        """Store the decision on a complete transfer (see :meth:`check`)."""
        row = self._db.execute("SELECT priority, signed_at, seq, assemblies, count FROM transfers WHERE bundle_id = ?",
                               (bid,)).fetchone()
        if row is None:
            known = self.ledger.known(bid)
            return Received(self.ledger.decided_ack(known) if known else None)
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
        with self._tx():
            decided = self.ledger.record(bid, data, outcome, Priority(priority), seq, signed_at)
            self._forget(bid)
        return Received(self.ledger.decided_ack(decided), decided=decided)

    def finish(self, bid: bytes) -> Received[D]:
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

    def partial(self) -> list[tuple[bytes, int, int]]:
        """Bundles still arriving: (id, parts received, count)."""
        out = []
        for bid, count, bitmap in self._db.execute("SELECT bundle_id, count, received FROM transfers"):
            out.append((bytes(bid), sum(bin(b).count("1") for b in bitmap), count))
        return out

    def stored_bytes(self) -> int:
        """Bytes of parts held for transfers in progress."""
        return int(self._db.execute("SELECT coalesce(sum(length(data)), 0) FROM fragments").fetchone()[0])

"""The ground's durable queue: every bundle from "queued" to "acknowledged".

One SQLite table in WAL mode, shared by the ground daemon and the operator's
``relay queue`` commands. Each row moves through

    queued -> encoding -> ready -> sending -> acknowledged
                     \\-> failed (with a reason)      cancelled (by an operator)

and every step is one transaction, so a kill -9 at any moment leaves a state
a restart can resume from: an ``encoding`` row goes back to ``queued`` (the
audio is encoded again, nothing was sent); a ``sending`` row keeps its bitmap
of fragments still to send and its signed envelope, so it resumes where it
stopped without re-encoding; an ``acknowledged`` row is never sent again.

The sender asks :meth:`Outbox.next_fragment` for one fragment at a time, so a
flash bundle queued while a bulk one is in flight goes out at the next
fragment (priority first, then the operator's order, then age).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from relay.db import connect
from relay.errors import RelayError
from relay.link import Ack, AckState, Envelope, Fragment, Priority, fragment, fragment_count

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    edge TEXT NOT NULL,
    priority INTEGER NOT NULL,
    rank REAL NOT NULL,
    title TEXT NOT NULL,
    source TEXT,
    state TEXT NOT NULL,
    reason TEXT,
    bundle_id BLOB,
    bundle BLOB,
    envelope BLOB,
    fragment_size INTEGER,
    count INTEGER,
    pending BLOB,
    sent_bytes INTEGER NOT NULL DEFAULT 0,
    fragments_sent INTEGER NOT NULL DEFAULT 0,
    polls INTEGER NOT NULL DEFAULT 0,
    next_poll REAL,
    profiles TEXT NOT NULL DEFAULT '[]',
    created REAL NOT NULL,
    updated REAL NOT NULL,
    acked REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS outbox_bundle ON outbox (bundle_id) WHERE bundle_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS outbox_state ON outbox (state, priority, rank, id);
CREATE TABLE IF NOT EXISTS link_log (t REAL NOT NULL, edge TEXT NOT NULL, bytes INTEGER NOT NULL);
"""


class OutboxError(RelayError):
    """An operator asked for something the queue cannot do (unknown id, wrong state)."""


class State(StrEnum):
    QUEUED = "queued"
    ENCODING = "encoding"
    READY = "ready"
    SENDING = "sending"
    ACKNOWLEDGED = "acknowledged"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE = (State.QUEUED, State.ENCODING, State.READY, State.SENDING)


@dataclass(frozen=True, slots=True)
class Item:
    """One row, as the CLI and the daemon see it (without the blobs)."""

    id: int
    edge: str
    priority: Priority
    title: str
    source: str | None
    state: State
    reason: str | None
    bundle_id: bytes | None
    bundle_size: int | None
    envelope_size: int | None
    count: int | None
    pending: int  # fragments still to send this round
    sent_bytes: int
    fragments_sent: int
    polls: int
    created: float
    updated: float
    acked: float | None

    def to_dict(self) -> dict:
        return {
            "id": self.id, "edge": self.edge, "priority": self.priority.name.lower(), "title": self.title,
            "source": self.source, "state": str(self.state), "reason": self.reason,
            "bundle_id": self.bundle_id.hex() if self.bundle_id else None, "bundle_bytes": self.bundle_size,
            "fragments": self.count, "pending_fragments": self.pending, "link_bytes_sent": self.sent_bytes,
            "fragments_sent": self.fragments_sent, "polls": self.polls, "created": self.created,
            "updated": self.updated, "acknowledged": self.acked,
        }


def _bits(count: int, on: Iterable[int]) -> bytes:
    out = bytearray((count + 7) // 8)
    for i in on:
        out[i // 8] |= 1 << (i % 8)
    return bytes(out)


def _indices(bitmap: bytes | None) -> list[int]:
    if not bitmap:
        return []
    return [i for i in range(len(bitmap) * 8) if bitmap[i // 8] >> (i % 8) & 1]


_COLUMNS = (
    "id, edge, priority, title, source, state, reason, bundle_id, length(bundle), length(envelope), count, pending, "
    "sent_bytes, fragments_sent, polls, created, updated, acked"
)


def _item(row: tuple) -> Item:
    (id_, edge, prio, title, source, state, reason, bid, blen, elen, count, pending, sent, frags, polls,
     created, updated, acked) = row
    return Item(id_, edge, Priority(prio), title, source, State(state), reason, bid, blen, elen, count,
                len(_indices(pending)), sent, frags, polls, created, updated, acked)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """What the sender publishes next: a fragment (or a poll) for one row."""

    id: int
    edge: str
    priority: Priority
    fragment: Fragment | None  # None: a poll for ``bundle_id``
    bundle_id: bytes


Signer = Callable[[str, int, bytes], tuple[bytes, bytes]]  # (edge, priority, bundle) -> (key id, signature)


class Outbox:
    """The ground's queue. One instance per thread (SQLite connections are not shared)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db = connect(self.path, SCHEMA, "the ground queue", OutboxError)

    def close(self) -> None:
        self._db.close()

    # --- adding ----------------------------------------------------------------------------------

    def _insert(self, edge: str, priority: Priority, title: str, source: str | None, state: State,
                bundle_id: bytes | None = None, bundle: bytes | None = None) -> int:
        now = time.time()
        try:
            cur = self._db.execute(
                "INSERT INTO outbox (edge, priority, rank, title, source, state, bundle_id, bundle, created, updated) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (edge, int(priority), now, title, source, str(state), bundle_id, bundle, now, now),
            )
        except sqlite3.IntegrityError:
            raise OutboxError(f"bundle {bundle_id.hex() if bundle_id else ''} is already queued") from None
        return int(cur.lastrowid)

    def add_audio(self, path: str | Path, edge: str, priority: Priority = Priority.NORMAL, title: str = "") -> int:
        """Queue an audio file; the ground daemon encodes it."""
        path = Path(path).resolve()
        return self._insert(edge, priority, title or path.stem, str(path), State.QUEUED)

    def add_bundle(self, data: bytes, edge: str, priority: Priority = Priority.NORMAL, title: str = "",
                   source: str | None = None, profiles: Iterable[bytes] = ()) -> int:
        """Queue an encoded bundle (checked by decoding it), ready to send."""
        from relay.wire import decode_bundle

        bundle = decode_bundle(data, source)
        row = self._insert(edge, priority, title or bundle.source.title or "untitled", source, State.READY,
                           bundle.bundle_id, data)
        self._set_profiles(row, profiles)
        return row

    def _set_profiles(self, row: int, profiles: Iterable[bytes]) -> None:
        self._db.execute("UPDATE outbox SET profiles = ? WHERE id = ?", (json.dumps([p.hex() for p in profiles]), row))

    # --- encoding --------------------------------------------------------------------------------

    def recover(self) -> int:
        """After a restart: rows caught mid-encoding are queued again. Returns how many."""
        cur = self._db.execute(
            "UPDATE outbox SET state = ?, updated = ? WHERE state = ?", (str(State.QUEUED), time.time(),
                                                                         str(State.ENCODING)))
        return cur.rowcount

    def claim_encoding(self) -> Item | None:
        """The most urgent queued audio, now marked encoding."""
        with self._tx():
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM outbox WHERE state = ? ORDER BY priority, rank, id LIMIT 1",
                (str(State.QUEUED),),
            ).fetchone()
            if row is None:
                return None
            self._db.execute("UPDATE outbox SET state = ?, updated = ? WHERE id = ?",
                             (str(State.ENCODING), time.time(), row[0]))
        return _item(row)

    def encoded(self, row: int, bundle_id: bytes, data: bytes, profiles: Iterable[bytes] = ()) -> bool:
        """Store the bundle of an encoding row. False if it was cancelled meanwhile."""
        cur = self._db.execute(
            "UPDATE outbox SET state = ?, bundle_id = ?, bundle = ?, profiles = ?, updated = ? "
            "WHERE id = ? AND state = ?",
            (str(State.READY), bundle_id, data, json.dumps([p.hex() for p in profiles]), time.time(), row,
             str(State.ENCODING)),
        )
        return cur.rowcount == 1

    def fail(self, row: int, reason: str) -> None:
        self._db.execute("UPDATE outbox SET state = ?, reason = ?, updated = ? WHERE id = ?",
                         (str(State.FAILED), reason, time.time(), row))

    # --- sending ---------------------------------------------------------------------------------

    def next_fragment(self, fragment_size: int, sign: Signer, edges: Iterable[str] | None = None) -> Outgoing | None:
        """The next fragment to publish: of the most urgent row with fragments
        still to send (a ready row starts: its envelope is signed now)."""
        edge_filter, args = "", [str(State.READY), str(State.SENDING)]
        if edges is not None:
            names = list(edges)
            edge_filter = f" AND edge IN ({','.join('?' * len(names))})"
            args += names
        row = self._db.execute(
            f"SELECT id, edge, priority, state, bundle_id, bundle, envelope, fragment_size, count, pending "
            "FROM outbox WHERE (state = ? OR (state = ? AND pending IS NOT NULL "
            "AND pending != zeroblob(length(pending))))"
            f"{edge_filter} ORDER BY priority, rank, id LIMIT 1",
            args,
        ).fetchone()
        if row is None:
            return None
        id_, edge, prio, state, bid, bundle, envelope, fsize, count, pending = row
        if state == State.READY:
            kid, sig = sign(edge, prio, bundle)
            envelope = Envelope(Priority(prio), kid, sig, bundle).pack()
            fsize, count = fragment_size, fragment_count(len(envelope), fragment_size)
            pending = _bits(count, range(count))
            self._db.execute(
                "UPDATE outbox SET state = ?, envelope = ?, fragment_size = ?, count = ?, pending = ?, polls = 0, "
                "updated = ? WHERE id = ?",
                (str(State.SENDING), envelope, fsize, count, pending, time.time(), id_),
            )
        index = _indices(pending)[0]
        frag = next(fragment(bid, envelope, fsize, [index]))
        return Outgoing(id_, edge, Priority(prio), frag, bid)

    def sent(self, out: Outgoing, nbytes: int, ack_timeout: float) -> None:
        """``out`` was published (the broker has it). When it was the row's last
        pending fragment, an ack is due within ``ack_timeout``."""
        now = time.time()
        with self._tx():
            row = self._db.execute("SELECT pending, count FROM outbox WHERE id = ?", (out.id,)).fetchone()
            if row is None:
                return
            if out.fragment is not None:
                left = [i for i in _indices(row[0]) if i != out.fragment.index]
                self._db.execute(
                    "UPDATE outbox SET pending = ?, sent_bytes = sent_bytes + ?, fragments_sent = fragments_sent + 1, "
                    "next_poll = CASE WHEN ? THEN ? ELSE next_poll END, updated = ? WHERE id = ?",
                    (_bits(row[1], left), nbytes, not left, now + ack_timeout, now, out.id),
                )
            else:
                self._db.execute(  # the next poll's time was set, with backoff, by due_poll()
                    "UPDATE outbox SET sent_bytes = sent_bytes + ?, polls = polls + 1, updated = ? WHERE id = ?",
                    (nbytes, now, out.id),
                )
            self._db.execute("INSERT INTO link_log VALUES (?, ?, ?)", (now, out.edge, nbytes))

    def due_poll(self, ack_timeout: float, max_interval: float, edges: Iterable[str] | None = None) -> Outgoing | None:
        """A row whose fragments are all out and whose ack is overdue; the
        interval doubles with every unanswered poll, up to ``max_interval``."""
        now = time.time()
        rows = self._db.execute(
            "SELECT id, edge, priority, bundle_id, polls, next_poll, pending FROM outbox WHERE state = ? "
            "AND next_poll IS NOT NULL AND next_poll <= ? ORDER BY priority, next_poll",
            (str(State.SENDING), now),
        ).fetchall()
        wanted = set(edges) if edges is not None else None
        for id_, edge, prio, bid, polls, _, pending in rows:
            if _indices(pending) or (wanted is not None and edge not in wanted):
                continue
            # the next poll's wait is set in sent(); stretch it here by the backoff
            wait = min(ack_timeout * 2 ** polls, max_interval)
            self._db.execute("UPDATE outbox SET next_poll = ? WHERE id = ?", (now + wait, id_))
            return Outgoing(id_, edge, Priority(prio), None, bid)
        return None

    def on_ack(self, ack: Ack, edge: str, ack_timeout: float) -> tuple[Item | None, list[bytes]]:
        """Apply an edge's ack. Returns the row (None if unknown) and the profile
        ids now known to be on the edge (acknowledged bundles' full profiles)."""
        now = time.time()
        with self._tx():
            row = self._db.execute(
                "SELECT id, state, count, pending, profiles FROM outbox WHERE bundle_id = ? AND edge = ?",
                (ack.bundle_id, edge),
            ).fetchone()
            if row is None:
                return None, []
            id_, state, count, pending, profiles = row
            delivered: list[bytes] = []
            if state != State.SENDING:
                pass  # a late or duplicate ack: nothing to do
            elif ack.state == AckState.ACCEPTED:
                self._db.execute("UPDATE outbox SET state = ?, acked = ?, pending = NULL, next_poll = NULL, "
                                 "updated = ? WHERE id = ?", (str(State.ACKNOWLEDGED), now, now, id_))
                delivered = [bytes.fromhex(p) for p in json.loads(profiles)]
            elif ack.state == AckState.REJECTED:
                self._db.execute("UPDATE outbox SET state = ?, reason = ?, next_poll = NULL, updated = ? WHERE id = ?",
                                 (str(State.FAILED), f"edge rejected it: {ack.reason}", now, id_))
            else:
                holes = set(range(count)) if ack.state == AckState.UNKNOWN else ack.missing_indices()
                holes = {i for i in holes if i < count} | set(_indices(pending))
                self._db.execute("UPDATE outbox SET pending = ?, polls = 0, next_poll = ?, updated = ? WHERE id = ?",
                                 (_bits(count, holes), None if holes else now + ack_timeout, now, id_))
        item = self.get(id_)
        return item, delivered

    # --- operators -------------------------------------------------------------------------------

    def get(self, row: int) -> Item:
        found = self._db.execute(f"SELECT {_COLUMNS} FROM outbox WHERE id = ?", (row,)).fetchone()
        if found is None:
            raise OutboxError(f"no queue entry {row} (relay queue ls lists them)")
        return _item(found)

    def items(self, states: Iterable[State] | None = None, edge: str | None = None) -> list[Item]:
        states = list(states) if states is not None else list(State)
        args: list = [str(s) for s in states]
        where = f"state IN ({','.join('?' * len(args))})"
        if edge:
            where += " AND edge = ?"
            args.append(edge)
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM outbox WHERE {where} ORDER BY priority, rank, id", args)
        return [_item(r) for r in rows]

    def cancel(self, row: int) -> Item:
        item = self.get(row)
        if item.state not in ACTIVE:
            raise OutboxError(f"queue entry {row} is {item.state}; only waiting or sending entries can be cancelled")
        self._db.execute("UPDATE outbox SET state = ?, reason = ?, updated = ? WHERE id = ? AND state IN (?, ?, ?, ?)",
                         (str(State.CANCELLED), "cancelled by an operator", time.time(), row, *map(str, ACTIVE)))
        return self.get(row)

    def bump(self, row: int, priority: Priority | None = None) -> Item:
        """Move an entry to the front of its priority class (or of ``priority``'s)."""
        item = self.get(row)
        if item.state not in ACTIVE:
            raise OutboxError(f"queue entry {row} is {item.state}; only waiting or sending entries can be bumped")
        prio = int(priority if priority is not None else item.priority)
        first = self._db.execute("SELECT min(rank) FROM outbox WHERE priority = ?", (prio,)).fetchone()[0]
        rank = (first if first is not None else time.time()) - 1.0
        self._db.execute("UPDATE outbox SET priority = ?, rank = ?, updated = ? WHERE id = ?",
                         (prio, rank, time.time(), row))
        return self.get(row)

    def backlog(self, edge: str) -> tuple[int, int]:
        """(entries, link bytes still to send) for ``edge``; unencoded audio counts 0 bytes."""
        n, total = 0, 0
        for item in self.items(ACTIVE, edge):
            n += 1
            if item.state == State.SENDING and item.count:
                size = (item.envelope_size or 0) / item.count  # average fragment
                total += int(item.pending * size)
            elif item.bundle_size:
                total += item.bundle_size + 100  # envelope and headers, roughly
        return n, total

    def rate(self, edge: str, window: float = 600.0) -> float:
        """Link bytes per second sent to ``edge`` over the last ``window`` seconds."""
        since = time.time() - window
        row = self._db.execute("SELECT sum(bytes), min(t) FROM link_log WHERE edge = ? AND t >= ?",
                               (edge, since)).fetchone()
        if not row[0]:
            return 0.0
        return row[0] / max(time.time() - row[1], 1.0)

    def totals(self, edge: str) -> dict:
        row = self._db.execute(
            "SELECT count(*), coalesce(sum(sent_bytes), 0), coalesce(sum(length(bundle)), 0) FROM outbox "
            "WHERE edge = ? AND state = ?", (edge, str(State.ACKNOWLEDGED))).fetchone()
        sent = self._db.execute("SELECT coalesce(sum(sent_bytes), 0) FROM outbox WHERE edge = ?", (edge,)).fetchone()
        return {"acknowledged": row[0], "acknowledged_bundle_bytes": row[2], "link_bytes_sent": sent[0]}

    def edges(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT DISTINCT edge FROM outbox ORDER BY edge")]

    def prune_log(self, keep: float = 3600.0) -> None:
        self._db.execute("DELETE FROM link_log WHERE t < ?", (time.time() - keep,))

    # --- helpers ---------------------------------------------------------------------------------

    def _tx(self):
        return _Transaction(self._db)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT on an autocommit connection (so the CLI and
    the daemon never interleave a read-modify-write)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, *_: object) -> None:
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")

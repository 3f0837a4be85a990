"""The ground's durable queue: every bundle from "queued" to "delivered" and "played".

One SQLite table in WAL mode, shared by the ground daemon and the operator's
``relay ground queue`` commands. Each row moves through

    queued -> encoding -> ready -> sending -> delivered   (then played, or quarantined, by the edge's report)
                     \\-> failed (with a reason)           cancelled (by an operator)

and every step is one transaction, so a kill -9 at any moment leaves a state
a restart can resume from: an ``encoding`` row goes back to ``queued`` (the
audio is encoded again, nothing was sent); a ``sending`` row keeps its bitmap
of parts still to send and its signed manifest, so it resumes where it
stopped without signing again; a ``delivered`` row is never sent again.

*Delivered* means the edge said, in an ack signed with its own key, that it
verified and stored the bundle; *played* (or *quarantined*, with the edge's
reason) comes later from the edge's play report. A ``failed`` row failed for
a reason an operator can act on (the edge refused the bundle, the audio could
not be encoded); a full disk never fails a row, the daemon waits instead.

The sender asks :meth:`Outbox.next_out` for one message at a time, so a flash
bundle queued while a bulk one is in flight goes out at the next fragment
(priority first, then the operator's order, then age), and an overdue poll
for a flash bundle goes before a bulk bundle's fragments.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from pathlib import Path

from relay.db import connect, transaction
from relay.errors import RelayError
from relay.format.bundle import Bundle
from relay.format.limits import DEFAULT_LIMITS, Limits
from relay.link.messages import POLL, Ack, AckState, Poll, Priority, RejectCode
from relay.link.signing import SigningKey
from relay.link.transfer import OutgoingTransfer
from relay.storage import Durable, Waiter

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
    head BLOB,
    fragment_size INTEGER,
    count INTEGER,
    pending BLOB,
    sent_bytes INTEGER NOT NULL DEFAULT 0,
    fragments_sent INTEGER NOT NULL DEFAULT 0,
    polls INTEGER NOT NULL DEFAULT 0,
    polls_sent INTEGER NOT NULL DEFAULT 0,
    next_poll REAL,
    profiles TEXT NOT NULL DEFAULT '[]',
    created REAL NOT NULL,
    updated REAL NOT NULL,
    delivered REAL,
    seq INTEGER,
    signed_at INTEGER,
    resigns INTEGER NOT NULL DEFAULT 0,
    played REAL,
    play_state TEXT,
    play_reason TEXT,
    batch INTEGER,
    size INTEGER
);
CREATE TABLE IF NOT EXISTS bundles (bundle_id BLOB PRIMARY KEY, data BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS outbox_state ON outbox (state, priority, rank, id);
CREATE TABLE IF NOT EXISTS link_log (t REAL NOT NULL, edge TEXT NOT NULL, bytes INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS edge_seq (edge TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS edge_heard (edge TEXT PRIMARY KEY, t REAL NOT NULL, counter INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS link_state (
    id INTEGER PRIMARY KEY CHECK (id = 1), connected INTEGER NOT NULL, since REAL NOT NULL, beat REAL NOT NULL,
    stopped INTEGER NOT NULL DEFAULT 0
);
"""
SCHEMA_VERSION = 3  # 3: entries for a fleet (one row per edge, a batch per entry) and bundles kept once
INDEXES = """
DROP INDEX IF EXISTS outbox_bundle;
CREATE UNIQUE INDEX IF NOT EXISTS outbox_bundle_edge ON outbox (bundle_id, edge) WHERE bundle_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS outbox_batch ON outbox (batch);
CREATE INDEX IF NOT EXISTS outbox_edge ON outbox (edge, state);
"""
MAX_RESIGNS = 3  # an edge that keeps calling a fresh signature stale has a clock problem: fail with its reason


class OutboxError(RelayError):
    """An operator asked for something the queue cannot do (unknown id, wrong state)."""


class State(StrEnum):
    QUEUED = "queued"
    ENCODING = "encoding"
    READY = "ready"
    SENDING = "sending"
    DELIVERED = "delivered"
    FAILED = "failed"
    CANCELLED = "cancelled"


class PlayState(StrEnum):
    PLAYED = "played"
    QUARANTINED = "quarantined"


ACTIVE = (State.QUEUED, State.ENCODING, State.READY, State.SENDING)  # in the order an entry moves through them
FINISHED = (State.DELIVERED, State.FAILED, State.CANCELLED)


@dataclass(frozen=True, slots=True)
class Item:
    """One row, as the CLI and the daemon see it (without the blobs)."""

    id: int  # this edge's row
    edge: str
    priority: Priority
    title: str
    source: str | None
    state: State
    reason: str | None
    bundle_id: bytes | None
    bundle_size: int | None
    head_size: int | None
    count: int | None
    pending: int  # fragments still to send this round
    sent_bytes: int
    fragments_sent: int
    polls: int  # sent, in all
    created: float
    updated: float
    delivered: float | None
    seq: int | None
    signed_at: int | None  # when its transfer started (signed); None before
    played: float | None
    play_state: PlayState | None
    play_reason: str | None
    entry: int  # the entry it belongs to: the id an operator sees, one per recording, however many edges

    def to_dict(self) -> dict:
        return {
            "id": self.id, "entry": self.entry, "edge": self.edge, "priority": self.priority.name.lower(),
            "title": self.title, "source": self.source, "state": str(self.state), "reason": self.reason,
            "bundle_id": self.bundle_id.hex() if self.bundle_id else None, "bundle_bytes": self.bundle_size,
            "fragments": self.count, "pending_fragments": self.pending, "link_bytes_sent": self.sent_bytes,
            "fragments_sent": self.fragments_sent, "polls": self.polls, "created": self.created,
            "updated": self.updated, "delivered": self.delivered, "seq": self.seq, "started": self.signed_at,
            "played": self.played, "play_state": str(self.play_state) if self.play_state else None,
            "play_reason": self.play_reason,
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
    "id, edge, priority, title, source, state, reason, bundle_id, size, length(head), count, pending, "
    "sent_bytes, fragments_sent, polls_sent, created, updated, delivered, seq, signed_at, played, play_state, "
    "play_reason, batch"
)


def _item(row: tuple) -> Item:
    (id_, edge, prio, title, source, state, reason, bid, blen, hlen, count, pending, sent, frags, polls,
     created, updated, delivered, seq, signed_at, played, play_state, play_reason, batch) = row
    return Item(id_, edge, Priority(prio), title, source, State(state), reason, bid, blen, hlen, count,
                len(_indices(pending)), sent, frags, polls, created, updated, delivered, seq, signed_at, played,
                PlayState(play_state) if play_state else None, play_reason, batch or id_)


@dataclass(frozen=True, slots=True)
class Entry:
    """One recording or bundle queued for one edge or many: what an operator
    cancels, bumps and watches. ``edges`` are its rows, one per edge, each
    with its own transfer, priority, delivery and play report."""

    id: int
    title: str
    source: str | None
    edges: tuple[Item, ...]

    @property
    def priority(self) -> Priority:
        """The most urgent of its edges'."""
        return min(i.priority for i in self.edges)

    @property
    def bundle_size(self) -> int | None:
        return next((i.bundle_size for i in self.edges if i.bundle_size), None)

    @property
    def created(self) -> float:
        return min(i.created for i in self.edges)

    @property
    def updated(self) -> float:
        return max(i.updated for i in self.edges)

    def count(self, *states: State) -> int:
        return sum(i.state in states for i in self.edges)

    @property
    def played(self) -> int:
        return sum(i.play_state == PlayState.PLAYED for i in self.edges)

    @property
    def state(self) -> str:
        """The least advanced of its edges' states while any is active, else the one
        they all ended in, or ``finished`` when they ended differently."""
        active = [i.state for i in self.edges if i.state in ACTIVE]
        if active:
            return str(min(active, key=ACTIVE.index))
        ends = {i.state for i in self.edges}
        return str(ends.pop()) if len(ends) == 1 else "finished"

    @property
    def active(self) -> bool:
        return any(i.state in ACTIVE for i in self.edges)

    def unheard(self) -> list[str]:
        """The edges that have not yet played it (cancelled and failed ones included: they never will)."""
        return [i.edge for i in self.edges if i.play_state != PlayState.PLAYED]

    def to_dict(self) -> dict:
        return {
            "id": self.id, "title": self.title, "source": self.source, "priority": self.priority.name.lower(),
            "state": self.state, "bundle_bytes": self.bundle_size, "created": self.created, "updated": self.updated,
            "edges": len(self.edges), "delivered": self.count(State.DELIVERED), "played": self.played,
            "failed": self.count(State.FAILED), "cancelled": self.count(State.CANCELLED),
            "unheard": self.unheard(),
        }


@dataclass(frozen=True, slots=True)
class Outgoing:
    """What the sender publishes next for one row: a fragment, or a poll."""

    id: int
    edge: str
    priority: Priority
    bundle_id: bytes
    payload: bytes
    index: int | None  # the part's index; None for a poll
    seq: int | None = None  # the transfer a part belongs to


@dataclass(frozen=True, slots=True)
class AckOutcome:
    """What an edge's ack changed: the row (None if the ground does not know
    the bundle, or refused the ack), the profile ids now known to be on the
    edge, and a line for the log."""

    item: Item | None
    delivered_profiles: list[bytes]
    note: str
    refused: str | None = None  # why a verified ack changed nothing (a tag for counting): replay, future...


@dataclass(frozen=True, slots=True)
class LinkState:
    """The ground daemon's broker connection as it last wrote it: ``connected``
    since ``since``; ``beat`` is when the daemon last said it was alive (a
    daemon killed outright leaves an old beat, not a false "connected")."""

    connected: bool
    since: float
    beat: float
    stopped: bool = False  # the daemon stopped cleanly at ``beat`` (not a crash, not a lost link)

    def alive(self, now: float | None = None, within: float = 90.0) -> bool:
        return not self.stopped and (now or time.time()) - self.beat <= within

    def describe(self, now: float | None = None) -> str:
        """One line for an operator: up, down and retrying, stopped, or silent (killed)."""
        now = now or time.time()
        if self.stopped:
            return f"ground daemon stopped {_ago(now - self.beat)} ago"
        if not self.alive(now):
            return f"ground daemon not running (last heard {_ago(now - self.beat)} ago)"
        if self.connected:
            return f"broker link up for {_ago(now - self.since)}"
        return f"broker link DOWN for {_ago(now - self.since)}: reconnecting"


def _ago(seconds: float) -> str:
    s = max(0, int(seconds))
    return f"{s} s" if s < 120 else f"{s // 60} min" if s < 7200 else f"{s // 3600} h"


class Outbox:
    """The ground's queue. One instance per thread (SQLite connections are not shared)."""

    def __init__(self, path: str | Path, limits: Limits = DEFAULT_LIMITS) -> None:
        self.path = Path(path)
        self.limits = limits
        self._db = connect(self.path, _migrate_sql(self.path) + SCHEMA, "the ground queue", OutboxError)
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(outbox)")}
        added = (("polls_sent", "INTEGER NOT NULL DEFAULT 0"), ("ack_counter", "INTEGER NOT NULL DEFAULT 0"),
                 ("not_before", "INTEGER"), ("poll_at", "INTEGER"), ("batch", "INTEGER"), ("size", "INTEGER"))
        for column, kind in added:
            if column not in columns:
                self._db.execute(f"ALTER TABLE outbox ADD COLUMN {column} {kind}")
        if "counter" not in {r[1] for r in self._db.execute("PRAGMA table_info(edge_heard)")}:
            self._db.execute("ALTER TABLE edge_heard ADD COLUMN counter INTEGER NOT NULL DEFAULT 0")
        if "stopped" not in {r[1] for r in self._db.execute("PRAGMA table_info(link_state)")}:
            self._db.execute("ALTER TABLE link_state ADD COLUMN stopped INTEGER NOT NULL DEFAULT 0")
        if self._db.execute("PRAGMA user_version").fetchone()[0] < 3:
            with self._tx():  # each old row is an entry of its own; its bundle moves to the shared table
                self._db.execute("UPDATE outbox SET batch = id WHERE batch IS NULL")
                self._db.execute("UPDATE outbox SET size = length(bundle) WHERE bundle IS NOT NULL")
                self._db.execute("INSERT OR IGNORE INTO bundles SELECT bundle_id, bundle FROM outbox "
                                 "WHERE bundle IS NOT NULL AND bundle_id IS NOT NULL")
                self._db.execute("UPDATE outbox SET bundle = NULL WHERE bundle IS NOT NULL")
        for statement in filter(str.strip, INDEXES.split(";")):
            self._db.execute(statement)
        self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        self._db.close()

    def _tx(self) -> AbstractContextManager[None]:
        return transaction(self._db)

    # --- adding ----------------------------------------------------------------------------------

    def _insert(self, edges: str | Sequence[str], priority: Priority, title: str, source: str | None, state: State,
                bundle_id: bytes | None = None, bundle: bytes | None = None, profiles: Iterable[bytes] = ()) -> int:
        """One entry, a row per edge, in one transaction; the entry's id (its first row's)."""
        names = [edges] if isinstance(edges, str) else list(edges)
        if not names or len(set(names)) != len(names):
            raise OutboxError(f"an entry goes to one or more different edges, not {names}")
        now = time.time()
        listed = json.dumps([p.hex() for p in profiles])
        with self._tx():
            if bundle is not None:
                self._db.execute("INSERT OR IGNORE INTO bundles VALUES (?, ?)", (bundle_id, bundle))
            first = 0
            for edge in names:
                try:
                    cur = self._db.execute(
                        "INSERT INTO outbox (edge, priority, rank, title, source, state, bundle_id, size, profiles, "
                        "created, updated, batch) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (edge, int(priority), now, title, source, str(state), bundle_id,
                         len(bundle) if bundle is not None else None, listed, now, now, first or None),
                    )
                except sqlite3.IntegrityError:
                    raise OutboxError(f"bundle {bundle_id.hex() if bundle_id else ''} is already queued for "
                                      f"{edge}") from None
                if not first:
                    first = int(cur.lastrowid or 0)
                    self._db.execute("UPDATE outbox SET batch = id WHERE id = ?", (first,))
        return first

    def add_audio(self, path: str | Path, edges: str | Sequence[str], priority: Priority = Priority.NORMAL,
                  title: str = "") -> int:
        """Queue an audio file for one edge or several; the ground daemon encodes
        it once for all of them. The entry's id."""
        path = Path(path).resolve()
        return self._insert(edges, priority, title or path.stem, str(path), State.QUEUED)

    def add_bundle(self, data: bytes, edges: str | Sequence[str], priority: Priority = Priority.NORMAL,
                   title: str = "", source: str | None = None, profiles: Iterable[bytes] = (),
                   decoded: Bundle | None = None) -> int:
        """Queue an encoded bundle for one edge or several, ready to send: refused
        (:class:`relay.errors.BundleError`) if it is corrupt or over the limits,
        since an edge would refuse it too. ``decoded``: what the caller already
        decoded ``data`` to, off the event loop (a daemon must not spend a
        bundle's decoding time on its loop). The entry's id."""
        from relay.format.wire import decode_bundle

        bundle = decoded if decoded is not None else decode_bundle(data, source, self.limits)
        return self._insert(edges, priority, title or bundle.source.title or "untitled", source, State.READY,
                            bundle.bundle_id, data, profiles)

    # --- encoding --------------------------------------------------------------------------------

    def recover(self) -> int:
        """After a restart: rows caught mid-encoding are queued again. Returns how many."""
        cur = self._db.execute("UPDATE outbox SET state = ?, updated = ? WHERE state = ?",
                               (str(State.QUEUED), time.time(), str(State.ENCODING)))
        return cur.rowcount

    def claim_encoding(self) -> Item | None:
        """The most urgent queued audio, now marked encoding with every edge of
        its entry still waiting for it (:meth:`encoding_for` names them): it is
        encoded once for all of them."""
        with self._tx():
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM outbox WHERE state = ? ORDER BY priority, rank, id LIMIT 1",
                (str(State.QUEUED),),
            ).fetchone()
            if row is None:
                return None
            item = _item(row)
            self._db.execute("UPDATE outbox SET state = ?, updated = ? WHERE batch = ? AND state = ?",
                             (str(State.ENCODING), time.time(), item.entry, str(State.QUEUED)))
        return item

    def encoding_for(self, entry: int) -> list[str]:
        """The edges entry ``entry`` is being encoded for (those not cancelled meanwhile)."""
        return [r[0] for r in self._db.execute("SELECT edge FROM outbox WHERE batch = ? AND state = ? ORDER BY id",
                                               (entry, str(State.ENCODING)))]

    def encoded(self, entry: int, data: bytes, profiles: Iterable[bytes] = (), decoded: Bundle | None = None) -> bool:
        """Store the bundle of an encoding entry, for each of its edges, checked
        as an edge would check it (``decoded``: what the caller, off the event
        loop, decoded it to). False if every edge's row was cancelled meanwhile."""
        from relay.format.wire import decode_bundle

        bundle = decoded if decoded is not None else decode_bundle(data, f"entry {entry}", self.limits)
        with self._tx():
            cur = self._db.execute(
                "UPDATE outbox SET state = ?, bundle_id = ?, size = ?, profiles = ?, updated = ? "
                "WHERE batch = ? AND state = ?",
                (str(State.READY), bundle.bundle_id, len(data), json.dumps([p.hex() for p in profiles]), time.time(),
                 entry, str(State.ENCODING)),
            )
            if cur.rowcount:
                self._db.execute("INSERT OR IGNORE INTO bundles VALUES (?, ?)", (bundle.bundle_id, data))
        return cur.rowcount > 0

    def fail(self, entry: int, reason: str) -> None:
        """The entry's audio could not be encoded: every edge's row fails with ``reason``."""
        self._db.execute("UPDATE outbox SET state = ?, reason = ?, updated = ? WHERE batch = ? AND state IN (?, ?)",
                         (str(State.FAILED), reason, time.time(), entry, str(State.QUEUED), str(State.ENCODING)))

    # --- sending ---------------------------------------------------------------------------------

    def next_out(self, fragment_size: int | Mapping[str, int], key: SigningKey, edges: Iterable[str] | None = None,
                 ack_timeout: float = 120.0, max_poll_interval: float = 3600.0) -> Outgoing | None:
        """The next message to publish: a fragment of the most urgent row with
        parts still to send (a ready row starts: its manifest is signed now,
        with its edge's ``fragment_size``), or a poll for a row whose ack is
        overdue, whichever is more urgent. ``edges``: only these, and at equal
        priority the one listed first (the daemon lists the edge it served
        least recently first, so no ship waits behind another's backlog)."""
        names = list(edges) if edges is not None else None
        if names is not None and not names:
            return None
        frag = self._next_fragment_row(names)
        poll = self._due_poll_row(names)
        if frag is None and poll is None:
            return None
        if poll is not None and (frag is None or poll[1:] < frag[1:4]):
            return self._poll(poll[0], key, ack_timeout, max_poll_interval)
        if frag is None:
            return None
        size = fragment_size if isinstance(fragment_size, int) else fragment_size[frag[4]]
        return self._fragment(frag[0], size, key)

    def _edge_filter(self, names: list[str] | None) -> tuple[str, str, list]:
        """(a WHERE clause for ``names``, an ORDER BY term for their order, its arguments)."""
        if names is None:
            return "", "0", []
        marks = ",".join("?" * len(names))
        order = "CASE edge " + " ".join("WHEN ? THEN ?" for _ in names) + " END" if len(names) > 1 else "0"
        ranks = [x for i, n in enumerate(names) for x in (n, i)] if len(names) > 1 else []
        return f" AND edge IN ({marks})", order, [*names, *ranks]

    def _next_fragment_row(self, names: list[str] | None) -> tuple | None:
        where, order, args = self._edge_filter(names)
        cut = len(names) if names is not None else 0
        return self._db.execute(
            f"SELECT id, priority, {order} AS fair, rank, edge FROM outbox WHERE (state = ? OR (state = ? AND "
            f"pending IS NOT NULL AND pending != zeroblob(length(pending)))){where} "
            "ORDER BY priority, fair, rank, id LIMIT 1",
            [*args[cut:], str(State.READY), str(State.SENDING), *args[:cut]],
        ).fetchone()

    def _due_poll_row(self, names: list[str] | None) -> tuple | None:
        where, order, args = self._edge_filter(names)
        cut = len(names) if names is not None else 0
        found = self._db.execute(
            f"SELECT id, priority, {order} AS fair, rank FROM outbox WHERE state = ? AND next_poll IS NOT NULL AND "
            f"next_poll <= ? AND (pending IS NULL OR pending = zeroblob(length(pending))){where} "
            "ORDER BY priority, fair, rank, id LIMIT 1",
            [*args[cut:], str(State.SENDING), time.time(), *args[:cut]],
        ).fetchone()
        return found

    def _fragment(self, row: int, fragment_size: int, key: SigningKey) -> Outgoing:
        with self._tx():
            id_, edge, prio, state, bid, bundle, head, fsize, pending, seq = self._db.execute(
                "SELECT o.id, o.edge, o.priority, o.state, o.bundle_id, b.data, o.head, o.fragment_size, o.pending, "
                "o.seq FROM outbox o JOIN bundles b USING (bundle_id) WHERE o.id = ?", (row,)).fetchone()
            if state == State.READY:
                seq = self._next_seq(edge)
                signed_at = self._signing_time(id_)
                transfer = OutgoingTransfer.create(bid, bundle, edge, Priority(prio), fragment_size, key, seq,
                                                   signed_at)
                pending = _bits(transfer.count, range(transfer.count))
                self._db.execute(
                    "UPDATE outbox SET state = ?, head = ?, fragment_size = ?, count = ?, pending = ?, polls = 0, "
                    "next_poll = NULL, seq = ?, signed_at = ?, updated = ? WHERE id = ?",
                    (str(State.SENDING), transfer.head_blob(), fragment_size, transfer.count, pending, seq,
                     signed_at, time.time(), id_),
                )
            else:
                transfer = OutgoingTransfer.resume(bid, bundle, head, fsize)
        index = _indices(pending)[0]
        return Outgoing(id_, edge, Priority(prio), bid, transfer.fragment(index).pack(), index, seq)

    def _signing_time(self, row: int) -> int:
        """Now, or the time the edge asked us not to sign before (its store began
        after our clock's now: it refused a transfer as signed too early)."""
        not_before = self._db.execute("SELECT not_before FROM outbox WHERE id = ?", (row,)).fetchone()[0]
        return max(int(time.time()), not_before or 0)

    def _next_seq(self, edge: str) -> int:
        row = self._db.execute("SELECT seq FROM edge_seq WHERE edge = ?", (edge,)).fetchone()
        seq = (row[0] if row else 0) + 1
        self._db.execute("INSERT INTO edge_seq VALUES (?, ?) ON CONFLICT(edge) DO UPDATE SET seq = excluded.seq",
                         (edge, seq))
        return seq

    def _poll(self, row: int, key: SigningKey, ack_timeout: float, max_interval: float) -> Outgoing:
        id_, edge, prio, bid, polls, seq, last = self._db.execute(
            "SELECT id, edge, priority, bundle_id, polls, seq, poll_at FROM outbox WHERE id = ?", (row,)).fetchone()
        # the next poll's time: stretched by the backoff (sent() counts this one)
        wait = min(ack_timeout * 2 ** min(polls, 30), max_interval)
        # signed now, but always after the row's last poll sent (the edge ignores one no newer: a replay)
        at = max(int(time.time()), (last or 0) + 1)
        self._db.execute("UPDATE outbox SET next_poll = ? WHERE id = ?", (time.time() + wait, id_))
        poll = Poll.create(bid, edge, key, at, seq or 0)
        return Outgoing(id_, edge, Priority(prio), bid, poll.pack(), None)

    def sent(self, out: Outgoing, ack_timeout: float) -> None:
        """``out`` was published (the broker has it). When it was the row's last
        pending fragment, an ack is due within ``ack_timeout``."""
        now = time.time()
        nbytes = len(out.payload)
        with self._tx():
            row = self._db.execute("SELECT pending, count, seq FROM outbox WHERE id = ?", (out.id,)).fetchone()
            if row is None:
                return
            if out.index is not None and (row[1] is None or row[0] is None or row[2] != out.seq):
                # the transfer it belonged to ended while it was on its way (delivered, or signed again after
                # the edge called it stale): the bytes count for the link, the part for nothing
                self._db.execute("UPDATE outbox SET sent_bytes = sent_bytes + ?, updated = ? WHERE id = ?",
                                 (nbytes, now, out.id))
            elif out.index is not None:
                left = [i for i in _indices(row[0]) if i != out.index]
                self._db.execute(
                    "UPDATE outbox SET pending = ?, sent_bytes = sent_bytes + ?, fragments_sent = fragments_sent + 1, "
                    "next_poll = CASE WHEN ? THEN ? ELSE next_poll END, updated = ? WHERE id = ?",
                    (_bits(row[1], left), nbytes, not left, now + ack_timeout, now, out.id),
                )
            else:
                at = POLL.unpack(out.payload)[2] if len(out.payload) == POLL.size else None
                self._db.execute(
                    "UPDATE outbox SET sent_bytes = sent_bytes + ?, polls = polls + 1, polls_sent = polls_sent + 1, "
                    "poll_at = coalesce(?, poll_at), updated = ? WHERE id = ?",
                    (nbytes, at, now, out.id),
                )
            self._db.execute("INSERT INTO link_log VALUES (?, ?, ?)", (now, out.edge, nbytes))

    def poll_urgent_now(self, edges: Iterable[str] | None = None, up_to: Priority = Priority.PRIORITY) -> int:
        """After a (re)connect: every flash and priority row waiting for its ack
        is polled at once, most urgent first, instead of after its timeout (what
        was in flight when the link dropped may be lost, and an urgent bundle
        must not wait for it). Less urgent rows keep their timeouts: a poll
        costs the thin link 85 bytes, and the broker keeps acks for a ground
        that is away, so most are not lost at all."""
        names = list(edges) if edges is not None else None
        where, args = (f" AND edge IN ({','.join('?' * len(names))})", names) if names is not None else ("", [])
        cur = self._db.execute(
            "UPDATE outbox SET next_poll = ?, polls = 0 WHERE state = ? AND next_poll IS NOT NULL AND priority <= ?"
            f"{where}", [time.time(), str(State.SENDING), int(up_to), *args])
        return cur.rowcount

    def on_ack(self, ack: Ack, edge: str, ack_timeout: float, max_skew: float = 600.0) -> AckOutcome:
        """Apply an edge's (verified) ack, if it is fresh: not from the future
        (beyond ``max_skew``), and, where it would make the ground act again
        (resend, sign again, fail), about the transfer in flight and newer than
        the last such ack applied (the edge's counter only grows): a genuine ack
        captured and replayed later changes nothing."""
        now = time.time()
        if ack.at > now + max_skew:
            return AckOutcome(None, [], f"ack from {edge} signed {ack.at - now:.0f} s in the future by this "
                                        "ground's clock (is the edge's clock right?); ignored", "future")
        with self._tx():
            heard = self._db.execute("SELECT counter FROM edge_heard WHERE edge = ?", (edge,)).fetchone()
            if heard is None or ack.counter > heard[0]:  # the edge's last word, not a replay of an old one
                self._db.execute("INSERT INTO edge_heard VALUES (?, ?, ?) ON CONFLICT(edge) DO UPDATE SET "
                                 "t = excluded.t, counter = excluded.counter", (edge, now, ack.counter))
            row = self._db.execute(
                "SELECT id, state, count, pending, profiles, resigns, play_state, seq, ack_counter FROM outbox "
                "WHERE bundle_id = ? AND edge = ?", (ack.bundle_id, edge)).fetchone()
            if row is None:
                return AckOutcome(None, [], f"ack from {edge} for unknown bundle {ack.bundle_id.hex()} ignored")
            id_, state, count, pending, profiles, resigns, play_state, seq, last = row
            delivered: list[bytes] = []
            note = ""
            if ack.state in (AckState.ACCEPTED, AckState.PLAYED, AckState.QUARANTINED):
                # what only ever moves forward: delivered, then played (or quarantined) - safe to hear twice
                if state == State.SENDING:
                    self._db.execute("UPDATE outbox SET state = ?, delivered = ?, pending = NULL, next_poll = NULL, "
                                     "reason = NULL, updated = ? WHERE id = ?", (str(State.DELIVERED), now, now, id_))
                    delivered = [bytes.fromhex(p) for p in json.loads(profiles)]
                    note = "delivered"
                if ack.state != AckState.ACCEPTED and state in (State.SENDING, State.DELIVERED):
                    how = PlayState.PLAYED if ack.state == AckState.PLAYED else PlayState.QUARANTINED
                    if play_state != PlayState.PLAYED:  # a later manual replay may turn quarantined into played
                        self._db.execute("UPDATE outbox SET played = ?, play_state = ?, play_reason = ?, updated = ? "
                                         "WHERE id = ?", (now, str(how), ack.reason or None, now, id_))
                        note = f"{note}, {how}" if note else str(how)
                self._db.execute("UPDATE outbox SET ack_counter = max(ack_counter, ?) WHERE id = ?",
                                 (ack.counter, id_))
            elif state != State.SENDING:
                pass  # a late or duplicate ack: nothing to do
            elif ack.seq != seq:
                return AckOutcome(None, [], f"ack from {edge} about transfer {ack.seq} of bundle "
                                            f"{ack.bundle_id.hex()}, which is now transfer {seq}: an old answer, "
                                            "ignored", "old transfer")
            elif ack.state == AckState.REJECTED and ack.code == RejectCode.STALE:
                # bound to this transfer, whose seq a new signature changes: heard once, even if replayed
                if resigns >= MAX_RESIGNS:
                    self._db.execute("UPDATE outbox SET state = ?, reason = ?, next_poll = NULL, updated = ? "
                                     "WHERE id = ?", (str(State.FAILED), f"edge rejected it: {ack.reason}", now, id_))
                    note = "rejected"
                else:
                    self._db.execute(
                        "UPDATE outbox SET state = ?, head = NULL, pending = NULL, count = NULL, next_poll = NULL, "
                        "resigns = resigns + 1, reason = ?, not_before = ?, ack_counter = 0, updated = ? WHERE id = ?",
                        (str(State.READY), f"edge called the signature stale ({ack.reason}); signed again",
                         ack.not_before or None, now, id_))
                    note = "stale at the edge: signing again"
            elif ack.counter <= last:
                return AckOutcome(None, [], f"ack from {edge} for bundle {ack.bundle_id.hex()} no newer than one "
                                            f"applied already (counter {ack.counter} <= {last}): a replay, ignored",
                                  "replay")
            elif ack.state == AckState.REJECTED:
                self._db.execute("UPDATE outbox SET state = ?, reason = ?, next_poll = NULL, ack_counter = ?, "
                                 "updated = ? WHERE id = ?",
                                 (str(State.FAILED), f"edge rejected it: {ack.reason}", ack.counter, now, id_))
                note = "rejected"
            else:
                holes = set(range(count)) if ack.state == AckState.UNKNOWN else ack.missing_indices()
                holes = {i for i in holes if i < count} | set(_indices(pending))
                self._db.execute("UPDATE outbox SET pending = ?, polls = 0, next_poll = ?, ack_counter = ?, "
                                 "updated = ? WHERE id = ?",
                                 (_bits(count, holes), None if holes else now + ack_timeout, ack.counter, now, id_))
                note = f"{len(holes)} fragment(s) to resend" if holes else "nothing missing"
        return AckOutcome(self.get(id_), delivered, note)

    # --- operators -------------------------------------------------------------------------------

    def get(self, row: int) -> Item:
        found = self._db.execute(f"SELECT {_COLUMNS} FROM outbox WHERE id = ?", (row,)).fetchone()
        if found is None:
            raise OutboxError(f"no queue entry {row} (relay ground queue ls lists them)")
        return _item(found)

    def items(self, states: Iterable[State] | None = None, edge: str | None = None) -> list[Item]:
        wanted = list(states) if states is not None else list(State)
        args: list = [str(s) for s in wanted]
        where = f"state IN ({','.join('?' * len(args))})"
        if edge:
            where += " AND edge = ?"
            args.append(edge)
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM outbox WHERE {where} ORDER BY priority, rank, id", args)
        return [_item(r) for r in rows]

    def bundle_of(self, row: int) -> bytes | None:
        """The bundle row ``row`` sends (None before it is encoded)."""
        found = self._db.execute("SELECT b.data FROM outbox o JOIN bundles b USING (bundle_id) WHERE o.id = ?",
                                 (row,)).fetchone()
        return bytes(found[0]) if found else None

    def export(self, row: int, key: SigningKey, fragment_size: int) -> OutgoingTransfer:
        """Entry ``row``'s transfer, whole, for carrying by hand (:mod:`relay.link.by_hand`):
        the one the link already signed, or a new one signed now. The entry is
        not changed: its delivery is known when the edge acknowledges it."""
        item = self.get(row)
        bid, bundle, head, fsize = self._db.execute(
            "SELECT o.bundle_id, b.data, o.head, o.fragment_size FROM outbox o LEFT JOIN bundles b USING (bundle_id) "
            "WHERE o.id = ?", (row,)).fetchone()
        if bundle is None:
            raise OutboxError(f"queue entry {row} is {item.state}: it has no bundle to export"
                              + (" yet" if item.state in ACTIVE else ""))
        if head is not None and fsize:
            return OutgoingTransfer.resume(bytes(bid), bytes(bundle), bytes(head), int(fsize))
        with self._tx():
            seq = self._next_seq(item.edge)
        return OutgoingTransfer.create(bytes(bid), bytes(bundle), item.edge, item.priority, fragment_size, key, seq,
                                       self._signing_time(row))

    def entry(self, entry: int) -> Entry:
        """Entry ``entry`` with every edge's row; one line if there is none (naming
        the entry a row id belongs to, when the operator gave one)."""
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM outbox WHERE batch = ? ORDER BY edge", (entry,)).fetchall()
        if not rows:
            part = self._db.execute("SELECT batch, edge FROM outbox WHERE id = ?", (entry,)).fetchone()
            if part is not None:
                raise OutboxError(f"{entry} is not an entry: it is {part[1]}'s part of entry {part[0]} "
                                  f"(--edge {part[1]} names it)")
            raise OutboxError(f"no queue entry {entry} (relay ground queue ls lists them)")
        items = tuple(_item(r) for r in rows)
        return Entry(entry, items[0].title, items[0].source, items)

    def entries(self, active_only: bool = False, edge: str | None = None, limit: int | None = None) -> list[Entry]:
        """Entries, most urgent first (by their most urgent edge); with
        ``active_only``, those any edge still waits for; ``edge``: those going to it;
        ``limit``: the first so many."""
        where, args = [], []
        if active_only:
            where.append(f"batch IN (SELECT batch FROM outbox WHERE state IN ({','.join('?' * len(ACTIVE))}))")
            args += [str(s) for s in ACTIVE]
        if edge:
            where.append("batch IN (SELECT batch FROM outbox WHERE edge = ?)")
            args.append(edge)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        order = ("SELECT batch, min(priority) AS p, min(rank) AS r FROM outbox "
                 f"{clause} GROUP BY batch ORDER BY p, r, batch" + (f" LIMIT {int(limit)}" if limit else ""))
        batches = [r[0] for r in self._db.execute(order, args)]
        if not batches:
            return []
        grouped: dict[int, list[Item]] = {b: [] for b in batches}
        for chunk in range(0, len(batches), 500):
            part = batches[chunk:chunk + 500]
            for r in self._db.execute(f"SELECT {_COLUMNS} FROM outbox WHERE batch IN ({','.join('?' * len(part))}) "
                                      "ORDER BY edge", part):
                item = _item(r)
                grouped[item.entry].append(item)
        return [Entry(b, items[0].title, items[0].source, tuple(items)) for b, items in grouped.items() if items]

    def _rows_of(self, entry: int, edge: str | None, verb: str) -> list[Item]:
        """The active rows of ``entry`` (``edge``'s alone if named), or one line why there are none."""
        found = self.entry(entry)
        rows = list(found.edges)
        if edge is not None:
            rows = [i for i in rows if i.edge == edge]
            if not rows:
                raise OutboxError(f"entry {entry} does not go to {edge} (it goes to "
                                  f"{', '.join(i.edge for i in found.edges)})")
        active = [i for i in rows if i.state in ACTIVE]
        if not active:
            which = f"for {edge} " if edge else ""
            raise OutboxError(f"entry {entry} {which}is {rows[0].state if len(rows) == 1 else found.state}; only "
                              f"waiting or sending entries can be {verb}")
        return active

    def cancel_entry(self, entry: int, edge: str | None = None) -> list[Item]:
        """Stop sending entry ``entry`` to every edge still waiting for it, or to ``edge`` alone."""
        rows = self._rows_of(entry, edge, "cancelled")
        with self._tx():
            for i in rows:
                self._db.execute("UPDATE outbox SET state = ?, reason = ?, updated = ? WHERE id = ? "
                                 "AND state IN (?, ?, ?, ?)", (str(State.CANCELLED), "cancelled by an operator",
                                                               time.time(), i.id, *map(str, ACTIVE)))
        return [self.get(i.id) for i in rows]

    def bump_entry(self, entry: int, edge: str | None = None, priority: Priority | None = None) -> list[Item]:
        """Move entry ``entry`` (for every edge still waiting, or ``edge`` alone) to
        the front of its priority class, or of ``priority``'s."""
        rows = self._rows_of(entry, edge, "bumped")
        with self._tx():
            return [self.bump(i.id, priority) for i in rows]

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

    @staticmethod
    def bytes_left(item: Item) -> int:
        """Link bytes ``item`` still needs (roughly: headers and hashes included); 0 for audio not yet encoded."""
        if item.state == State.SENDING and item.count:
            size = ((item.head_size or 0) + (item.bundle_size or 0)) / item.count + 13  # average fragment
            return int(item.pending * size)
        if item.state in ACTIVE and item.bundle_size:
            return int(item.bundle_size * 1.1) + 150  # manifest, hashes and headers, roughly
        return 0

    def backlogs(self) -> dict[str, tuple[int, int, int]]:
        """edge -> (active rows, link bytes still to send, rows not yet encoded), in one reading."""
        out: dict[str, tuple[int, int, int]] = {}
        for item in self.items(ACTIVE):
            n, left, unsized = out.get(item.edge, (0, 0, 0))
            out[item.edge] = (n + 1, left + self.bytes_left(item), unsized + (item.bundle_size is None))
        return out

    def recent_fleet(self, count: int) -> list[Entry]:
        """The ``count`` newest entries that went to more than one edge."""
        batches = [r[0] for r in self._db.execute(
            "SELECT batch FROM outbox GROUP BY batch HAVING count(*) > 1 ORDER BY batch DESC LIMIT ?", (count,))]
        return [self.entry(b) for b in batches]

    def rate(self, edge: str, window: float = 600.0) -> float:
        """Link bytes per second sent to ``edge`` over the last ``window`` seconds."""
        since = time.time() - window
        row = self._db.execute("SELECT sum(bytes), min(t) FROM link_log WHERE edge = ? AND t >= ?",
                               (edge, since)).fetchone()
        if not row[0]:
            return 0.0
        return row[0] / max(time.time() - row[1], 1.0)

    def totals(self, edge: str) -> dict:
        delivered, played, quarantined, size = self._db.execute(
            "SELECT count(*), count(play_state = 'played' OR NULL), count(play_state = 'quarantined' OR NULL), "
            "coalesce(sum(size), 0) FROM outbox WHERE edge = ? AND state = ?",
            (edge, str(State.DELIVERED))).fetchone()
        failed = self._db.execute("SELECT count(*) FROM outbox WHERE edge = ? AND state = ?",
                                  (edge, str(State.FAILED))).fetchone()[0]
        sent = self._db.execute("SELECT coalesce(sum(sent_bytes), 0) FROM outbox WHERE edge = ?", (edge,)).fetchone()
        return {"delivered": delivered, "played": played, "quarantined": quarantined, "failed": failed,
                "delivered_bundle_bytes": size, "link_bytes_sent": sent[0]}

    def edges(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT DISTINCT edge FROM outbox ORDER BY edge")]

    def heard(self) -> dict[str, float]:
        """When each edge's last verified ack arrived."""
        return dict(self._db.execute("SELECT edge, t FROM edge_heard").fetchall())

    def set_link(self, connected: bool, stopped: bool = False) -> None:
        """The daemon's broker connection came up or went down (also a heartbeat);
        ``stopped``: the daemon is stopping cleanly."""
        now = time.time()
        self._db.execute(
            "INSERT INTO link_state VALUES (1, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
            "since = CASE WHEN connected = excluded.connected THEN since ELSE excluded.since END, "
            "connected = excluded.connected, beat = excluded.beat, stopped = excluded.stopped",
            (int(connected), now, now, int(stopped)))

    def link(self) -> LinkState | None:
        """What the daemon last wrote of its connection; None if no daemon ever ran on this queue."""
        row = self._db.execute("SELECT connected, since, beat, stopped FROM link_state").fetchone()
        return LinkState(bool(row[0]), row[1], row[2], bool(row[3])) if row else None

    def version(self) -> tuple:
        """Changes whenever an entry, an edge's last ack or the link's state does (a console's live view)."""
        return (self._db.execute("SELECT count(*), max(updated) FROM outbox").fetchone()
                + self._db.execute("SELECT max(t) FROM edge_heard").fetchone()
                + (self._db.execute("SELECT connected, beat, stopped FROM link_state").fetchone() or ()))

    def finished_before(self, before: float) -> list[Item]:
        """The rows of entries finished (delivered, failed, cancelled) for every
        edge and not changed since ``before``: what retention may remove (an
        entry leaves whole, so a fleet's view never loses the ships that heard it
        first). A delivered row still waiting for its play report counts once it
        is that old (the edge may never have played it)."""
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM outbox WHERE batch NOT IN (SELECT batch FROM outbox WHERE "
            "state NOT IN (?, ?, ?) OR updated >= ?) ORDER BY id", (*map(str, FINISHED), before))
        return [_item(r) for r in rows]

    def remove(self, rows: list[int]) -> None:
        """Remove finished entries (their bundle ids may then be queued again)."""
        with self._tx():
            self._db.executemany("DELETE FROM outbox WHERE id = ? AND state IN (?, ?, ?)",
                                 [(r, *map(str, FINISHED)) for r in rows])
            self._db.execute("DELETE FROM bundles WHERE bundle_id NOT IN "
                             "(SELECT bundle_id FROM outbox WHERE bundle_id IS NOT NULL)")

    def prune_log(self, keep: float = 3600.0) -> None:
        self._db.execute("DELETE FROM link_log WHERE t < ?", (time.time() - keep,))


def _migrate_sql(path: Path) -> str:
    """SQL that brings a queue written by link protocol v1 up to date: states
    renamed, v1 envelopes dropped (those rows are signed again, in v2)."""
    if not path.exists():
        return ""
    try:
        db = sqlite3.connect(path, timeout=10)
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            columns = {r[1] for r in db.execute("PRAGMA table_info(outbox)")}
        finally:
            db.close()
    except sqlite3.Error:
        return ""  # connect() reports it
    if version >= 2 or not columns:  # 2 -> 3 is Outbox.__init__'s
        return ""
    return """
ALTER TABLE outbox RENAME COLUMN envelope TO head;
ALTER TABLE outbox RENAME COLUMN acked TO delivered;
ALTER TABLE outbox ADD COLUMN seq INTEGER;
ALTER TABLE outbox ADD COLUMN signed_at INTEGER;
ALTER TABLE outbox ADD COLUMN resigns INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN played REAL;
ALTER TABLE outbox ADD COLUMN play_state TEXT;
ALTER TABLE outbox ADD COLUMN play_reason TEXT;
ALTER TABLE outbox ADD COLUMN polls_sent INTEGER NOT NULL DEFAULT 0;
UPDATE outbox SET state = 'delivered' WHERE state = 'acknowledged';
UPDATE outbox SET state = 'ready', head = NULL, pending = NULL, count = NULL, next_poll = NULL
    WHERE state = 'sending';
"""


class DurableOutbox(Durable):
    """The daemon's queue: every call waits out a full or failing disk (the
    waiter prunes once, then retries with a pause, logging the episode's start
    and end) instead of failing, so the daemon reads as what it does
    (``await queue.sent(...)``). The CLI and the console use :class:`Outbox`
    itself: an operator is told at once."""

    def __init__(self, outbox: Outbox, waiter: Waiter) -> None:
        super().__init__(waiter)
        self.outbox = outbox

    async def recover(self) -> int:
        return await self._do(self.outbox.recover)

    async def claim_encoding(self) -> Item | None:
        return await self._do(self.outbox.claim_encoding)

    async def encoded(self, row: int, data: bytes, profiles: Iterable[bytes], decoded: Bundle | None) -> bool:
        return await self._do(partial(self.outbox.encoded, row, data, profiles, decoded))

    async def fail(self, row: int, reason: str) -> None:
        await self._do(partial(self.outbox.fail, row, reason))

    async def next_out(self, fragment_size: int | Mapping[str, int], key: SigningKey, edges: Iterable[str] | None,
                       ack_timeout: float, max_poll_interval: float) -> Outgoing | None:
        return await self._do(partial(self.outbox.next_out, fragment_size, key, edges, ack_timeout,
                                      max_poll_interval))

    async def sent(self, out: Outgoing, ack_timeout: float) -> None:
        await self._do(partial(self.outbox.sent, out, ack_timeout))

    async def on_ack(self, ack: Ack, edge: str, ack_timeout: float, max_skew: float) -> AckOutcome:
        return await self._do(partial(self.outbox.on_ack, ack, edge, ack_timeout, max_skew))

    async def poll_urgent_now(self, edges: Iterable[str] | None) -> int:
        return await self._do(partial(self.outbox.poll_urgent_now, edges))

    async def set_link(self, connected: bool) -> None:
        await self._do(partial(self.outbox.set_link, connected))

    async def prune_log(self) -> None:
        await self._do(self.outbox.prune_log)

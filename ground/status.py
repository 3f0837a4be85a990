"""What an operator watches: each edge's link and the queue with its ETAs.

One reading of the queue (:class:`ground.queue.Outbox`) and the
configuration, shared by ``relay ground status``, ``relay ground queue ls``
and the ground's console, so all say the same thing. The ETA of an edge's
row is the time until that edge's link has sent everything ahead of it and
then it, at the edge's budget (or, with no budget, the rate measured over
the last ten minutes), counting only its link windows; an entry for a fleet
is through when its last edge's row is. Audio not yet encoded has no size,
so no ETA: it says so rather than "0 s".
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from ground.queue import ACTIVE, Entry, Item, Outbox, State
from relay.config import GroundConfig
from relay.link.budget import eta, seconds_to_window


@dataclass(frozen=True, slots=True)
class EdgeStatus:
    edge: str
    connected: bool | None  # the ground's link to the broker (None: no daemon is running)
    last_ack: float | None  # when this edge's last verified ack arrived
    rate_bytes_per_s: float  # sent to it over the last ten minutes
    budget_bytes_per_s: float | None  # the configured link rate; None: no limit
    window_opens_in_s: float  # 0: the link window is open now
    backlog_entries: int
    backlog_bytes: int
    eta_s: float | None  # None: no rate to estimate from, or nothing encoded yet to measure
    to_encode: int  # entries in the backlog still waiting to be encoded (their size is not known yet)
    delivered: int
    played: int
    quarantined: int
    failed: int
    delivered_bundle_bytes: int
    link_bytes_sent: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class QueueRow:
    """One edge's row of an entry, with its ETA."""

    item: Item
    bytes_left: int
    eta_s: float | None  # until it is through; None without a rate or a size to estimate from, or when finished

    def to_dict(self) -> dict:
        return {**self.item.to_dict(), "bytes_left": self.bytes_left, "eta_s": self.eta_s}


@dataclass(frozen=True, slots=True)
class EntryRow:
    """An entry and each of its edges' rows; its ETA is its last edge's."""

    entry: Entry
    edges: list[QueueRow]

    @property
    def eta_s(self) -> float | None:
        waiting = [q for q in self.edges if q.item.state in ACTIVE]
        if not waiting or any(q.eta_s is None for q in waiting):
            return None
        return max(q.eta_s for q in waiting if q.eta_s is not None)

    def to_dict(self) -> dict:
        return {**self.entry.to_dict(), "eta_s": self.eta_s, "rows": [q.to_dict() for q in self.edges]}


def _rate(cfg: GroundConfig, outbox: Outbox, edge: str) -> float:
    return cfg.link_for(edge).rate or outbox.rate(edge)


def edges(outbox: Outbox, cfg: GroundConfig, now: float | None = None) -> list[EdgeStatus]:
    """Every configured edge (and any the queue still names), by name."""
    now = now or time.time()
    link, heard = outbox.link(), outbox.heard()
    connected = link.connected if link is not None and link.alive(now) else None
    at = datetime.fromtimestamp(now, UTC)
    backlogs = outbox.backlogs()
    rows = []
    for edge in sorted(set(outbox.edges()) | set(cfg.edges)):
        n, backlog, unsized = backlogs.get(edge, (0, 0, 0))
        settings = cfg.link_for(edge)
        windows = settings.parsed_windows()
        rows.append(EdgeStatus(
            edge, connected, heard.get(edge), round(outbox.rate(edge), 2), settings.rate or None,
            seconds_to_window(windows, at), n, backlog,
            (eta(backlog, _rate(cfg, outbox, edge), windows, at) if backlog else None) if n else 0.0, unsized,
            **outbox.totals(edge)))
    return rows


def _etas(outbox: Outbox, cfg: GroundConfig, items: list[Item], at: datetime) -> dict[int, tuple[int, float | None]]:
    """row id -> (bytes left, ETA) for active rows, each edge's in its sending order."""
    ahead: dict[str, int] = {}
    rates: dict[str, float] = {}
    out = {}
    for item in items:
        left = outbox.bytes_left(item)
        ahead[item.edge] = ahead.get(item.edge, 0) + left
        if item.edge not in rates:
            rates[item.edge] = _rate(cfg, outbox, item.edge)
        windows = cfg.link_for(item.edge).parsed_windows()
        out[item.id] = (left, eta(ahead[item.edge], rates[item.edge], windows, at) if left else None)
    return out


def entries(outbox: Outbox, cfg: GroundConfig, active_only: bool = True, finished: int | None = None,
            edge: str | None = None, now: float | None = None) -> list[EntryRow]:
    """Entries most urgent first, each with its edges' rows and ETAs; with
    ``active_only`` False, also those finished (``finished`` of them at most,
    the most recent, after the active ones)."""
    at = datetime.fromtimestamp(now or time.time(), UTC)
    etas = _etas(outbox, cfg, outbox.items(ACTIVE), at)
    found = outbox.entries(active_only=active_only, edge=edge)
    live = [e for e in found if e.active]
    ended = sorted((e for e in found if not e.active), key=lambda e: e.updated, reverse=True)
    if finished is not None:
        ended = ended[:finished]

    def row(e: Entry) -> EntryRow:
        return EntryRow(e, [QueueRow(i, *etas.get(i.id, (0, None))) for i in e.edges])

    return [row(e) for e in live] + [row(e) for e in ended]


def fleet(outbox: Outbox, cfg: GroundConfig, recent: int = 20) -> list[dict]:
    """The recent entries sent to more than one edge: which ships have heard each, which not yet."""
    out = []
    for e in outbox.recent_fleet(recent):
        out.append({"id": e.id, "title": e.title, "priority": e.priority.name.lower(), "created": e.created,
                    "edges": len(e.edges), "delivered": e.count(State.DELIVERED), "played": e.played,
                    "heard": sorted(i.edge for i in e.edges if i.play_state is not None
                                    and str(i.play_state) == "played"),
                    "not_yet": e.unheard()})
    return out

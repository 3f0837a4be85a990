"""What an operator watches: each edge's link and the queue with its ETAs.

One reading of the queue (:class:`ground.queue.Outbox`) and the
configuration, shared by ``relay ground status`` and the ground's console,
so both say the same thing. The ETA of an entry is the time until the link
has sent everything ahead of it for its edge and then it, at the budget's
rate (or, with no budget, the rate measured over the last ten minutes),
counting only the link windows.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from ground.queue import ACTIVE, Item, Outbox
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
    eta_s: float | None
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
    item: Item
    bytes_left: int
    eta_s: float | None  # until it is through; None without a rate to estimate from, or when finished

    def to_dict(self) -> dict:
        return {**self.item.to_dict(), "bytes_left": self.bytes_left, "eta_s": self.eta_s}


def _rate(cfg: GroundConfig, outbox: Outbox, edge: str) -> float:
    return cfg.link.rate or outbox.rate(edge)


def edges(outbox: Outbox, cfg: GroundConfig, now: float | None = None) -> list[EdgeStatus]:
    """Every configured edge (and any the queue still names), by name."""
    now = now or time.time()
    link, heard, windows = outbox.link(), outbox.heard(), cfg.link.parsed_windows()
    connected = link.connected if link is not None and link.alive(now) else None
    at = datetime.fromtimestamp(now, UTC)
    rows = []
    for edge in sorted(set(outbox.edges()) | set(cfg.edges)):
        n, backlog = outbox.backlog(edge)
        rows.append(EdgeStatus(
            edge, connected, heard.get(edge), round(outbox.rate(edge), 2), cfg.link.rate or None,
            seconds_to_window(windows, at), n, backlog,
            eta(backlog, _rate(cfg, outbox, edge), windows, at) if n else 0.0, **outbox.totals(edge)))
    return rows


def queue(outbox: Outbox, cfg: GroundConfig, finished: int = 20, now: float | None = None) -> list[QueueRow]:
    """The active entries in sending order, each with its ETA, then the ``finished`` most recent others."""
    at = datetime.fromtimestamp(now or time.time(), UTC)
    windows = cfg.link.parsed_windows()
    ahead: dict[str, int] = {}
    rows = []
    for item in outbox.items(ACTIVE):
        left = outbox.bytes_left(item)
        ahead[item.edge] = ahead.get(item.edge, 0) + left
        rows.append(QueueRow(item, left, eta(ahead[item.edge], _rate(cfg, outbox, item.edge), windows, at)
                             if left else None))
    done = sorted((i for i in outbox.items() if i.state not in ACTIVE), key=lambda i: i.updated, reverse=True)
    return rows + [QueueRow(i, 0, None) for i in done[:finished]]

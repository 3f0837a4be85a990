"""A transfer file carried by hand, received at the edge as the link would have delivered it.

The file format is the link's (:mod:`relay.link.by_hand`); each part goes
through the edge's receiver, so an import is checked and stored exactly as a
reception, and a bundle the edge already holds is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.store import ACCEPTED, Inbox
from relay.link.by_hand import read
from relay.link.messages import LinkError


@dataclass(frozen=True, slots=True)
class Imported:
    """What an import did: ``stored`` (accepted, to be played), ``rejected``
    (authentic but unusable; kept as the link keeps it, with the reason) or
    ``known`` (the edge held it already: nothing changed)."""

    bundle_id: bytes
    outcome: str
    title: str | None = None
    reason: str | None = None


def import_transfer(inbox: Inbox, data: bytes) -> Imported:
    """Receive a transfer file as the link would have delivered it. A part
    that fails its check is refused with the reason, and a transfer this
    import started is dropped again (one the link had begun is left to it)."""
    carried = read(data, inbox.link.max_fragment)  # a damaged copy is refused here, even of a bundle held
    if carried.edge is not None and carried.edge != inbox.edge:
        raise LinkError("edge", f"this transfer was exported for edge {carried.edge!r}; this is {inbox.edge!r}: "
                                f"carry it to {carried.edge}, or export the entry again with --edge {inbox.edge}")
    fragments = carried.fragments
    bid = fragments[0].bundle_id
    known = inbox.get(bid)
    if known is not None:
        return Imported(bid, "known", known.title, known.reason)
    arriving = {b for b, _, _ in inbox.partial()}
    for frag in fragments:
        result = inbox.receive(frag)
        if result.dropped:
            if bid not in arriving:
                inbox.discard(bid)
            raise LinkError(result.dropped, result.note or f"bundle {bid.hex()}: refused ({result.dropped})")
    decided = inbox.finish(bid).decided
    if decided is None:  # the assembly did not match its signed digest: nothing kept
        inbox.discard(bid)
        raise LinkError("assembly", f"bundle {bid.hex()}: its parts do not make the bundle they were signed for")
    if decided.state == ACCEPTED:
        return Imported(bid, "stored", decided.title)
    return Imported(bid, "rejected", decided.title, decided.reason)

"""Taking a file into the queue: the one check every way in shares (the
``relay ground queue add`` command, the spool folder, the console's upload).

Audio must decode, whatever its name (its first frames are decoded now, so
a file that would fail hours later in the encoder is refused at the door),
and a ``.bundle`` must be one an edge would accept; the destination must be
edges this ground serves (:mod:`ground.fleet`: names, ``@group``s, ``all``).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ground.queue import Outbox
from relay.config import GroundConfig
from relay.format.bundle import Bundle
from relay.link.messages import Priority


def destination(cfg: GroundConfig, to: str | None, flag: str = "--to") -> list[str]:
    """The edges ``to`` names, or the configured default; one line
    (:class:`relay.errors.UsageError`) if it names anything this ground does not serve."""
    from ground.fleet import recipients

    return recipients(cfg, to, flag)


@dataclass(frozen=True, slots=True)
class Checked:
    """A file that passed the check: audio (``bundle`` None), or a bundle's bytes and what they decode to."""

    path: Path
    data: bytes | None = None
    bundle: Bundle | None = None


def check_file(cfg: GroundConfig, path: Path, cancel: threading.Event | None = None) -> Checked:
    """The slow half, without the queue (a daemon runs it in a worker thread):
    audio's first frames decoded, or a bundle decoded under the edge's limits
    and the CPU budget they give its size; ``cancel`` abandons that decoding."""
    from relay.audio.io import probe_audio

    if path.suffix.lower() == ".bundle":
        from relay.fileio import read_bytes
        from relay.format.limits import DecodeBudget
        from relay.format.wire import decode_bundle

        data = read_bytes(path, "bundle", cfg.limits.max_bundle_bytes)
        return Checked(path, data, decode_bundle(data, str(path), cfg.limits,
                                                 DecodeBudget.of(cfg.limits, len(data), cancel)))
    probe_audio(path)
    return Checked(path)


def enqueue(outbox: Outbox, checked: Checked, edges: str | Sequence[str], priority: Priority = Priority.NORMAL,
            title: str = "", source: str | None = None) -> int:
    """The quick half: the checked file into the queue for ``edges`` (encoded
    once, sent to each); the new entry's id."""
    if checked.data is not None and checked.bundle is not None:
        return outbox.add_bundle(checked.data, edges, priority, title, source or str(checked.path.resolve()),
                                 decoded=checked.bundle)
    return outbox.add_audio(checked.path, edges, priority, title)


def queue_file(outbox: Outbox, cfg: GroundConfig, path: Path, edges: str | Sequence[str],
               priority: Priority = Priority.NORMAL, title: str = "", source: str | None = None) -> int:
    """Check ``path`` and queue it for ``edges``: the new entry's id."""
    return enqueue(outbox, check_file(cfg, path), edges, priority, title, source)

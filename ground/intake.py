"""Taking a file into the queue: the one check every way in shares (the
``relay ground queue add`` command, the spool folder, the console's upload).

Audio must decode, whatever its name (its first frames are decoded now, so
a file that would fail hours later in the encoder is refused at the door),
and a ``.bundle`` must be one an edge would accept; the destination must be
an edge this ground serves.
"""

from __future__ import annotations

from pathlib import Path

from relay.config import GroundConfig
from relay.errors import RelayError
from relay.link.messages import Priority
from relay.link.outbox import Outbox


def destination(cfg: GroundConfig, edge: str | None, flag: str = "--to") -> str:
    """``edge``, or the configured default; one line if it is not an edge this ground serves."""
    name = edge or cfg.ground.default_edge
    if not name:
        raise RelayError(f"{flag}: no edge named, and no default_edge in the configuration")
    if name not in cfg.edges:
        known = ", ".join(sorted(cfg.edges)) or "none"
        raise RelayError(f"{flag} {name}: not an edge this ground serves (configured: {known})")
    return name


def queue_file(outbox: Outbox, cfg: GroundConfig, path: Path, edge: str, priority: Priority = Priority.NORMAL,
               title: str = "", source: str | None = None) -> int:
    """Check ``path`` and queue it for ``edge``: the new entry's id."""
    from relay.audio.io import probe_audio

    if path.suffix.lower() == ".bundle":
        from relay.fileio import read_bytes

        return outbox.add_bundle(read_bytes(path, "bundle"), edge, priority, title, source or str(path.resolve()))
    probe_audio(path)
    return outbox.add_audio(path, edge, priority, title)

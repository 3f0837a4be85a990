"""What the edge lets go of, so that a node at sea lives a year on its disk.

Left alone, an edge keeps everything: a WAV for every bundle it spoke (about
44 KB a second of speech), a rendering for every bundle a console played (an
800 MB file for one long bundle), every bundle's data in its store. The
``[retention]`` section of edge.toml bounds each of these, and
:func:`prune` applies it: the daemon every ``retention.every`` seconds and
before it waits for space on a full disk, ``relay edge prune`` by hand
(``--dry-run`` says what would go).

What is never removed: a bundle not yet played (accepted, waiting, or being
spoken), a file being written (anything modified in the last minute), the
transcript of a bundle whose data goes (it is indexed first, and the index
keeps the newest within ``transcripts_mb``), and a bundle's id for as long
as a replay of its transfer could still be fresh (twice ``link.max_age``):
the id is what keeps a bundle from being played twice.
"""

from __future__ import annotations

import time
from pathlib import Path

from relay.config import EdgeConfig
from relay.errors import RelayError
from relay.retention import DAY, MB, Pruned, Removed, prune_folder, unlink


def output_wavs(cfg: EdgeConfig, now: float, need: int = 0) -> list[Removed]:
    """The WAVs the daemon spoke into (``output_dir``) that may go, ``need`` more bytes to come."""
    r = cfg.retention
    return prune_folder(cfg.edge.played_dir, "*.wav", r.played_days, r.played_mb, now, "spoken WAV", need)


def console_cache(cfg: EdgeConfig, now: float, need: int = 0) -> list[Removed]:
    """The console's renderings (``state_dir/web``) that may go."""
    r = cfg.retention
    return prune_folder(cfg.edge.state_dir / "web", "*.wav", r.cache_days, r.cache_mb, now, "console rendering",
                        need)


def prune(cfg: EdgeConfig, dry_run: bool = False, now: float | None = None) -> Pruned:
    """Apply ``[retention]`` to the edge's folders, store and search index (its
    own connections: a daemon runs this in a worker thread)."""
    from edge.search import TranscriptIndex
    from edge.store import Inbox

    now = now or time.time()
    r = cfg.retention
    result = Pruned(dry_run)
    result.items += output_wavs(cfg, now) + console_cache(cfg, now)
    if not dry_run:
        unlink(result.items)
    inbox = Inbox.of(cfg)
    index = TranscriptIndex(cfg.edge.transcripts_db, cfg.limits)
    try:
        shed = inbox.sheddable(now - r.bundles_days * DAY, r.bundles_max)
        if shed:
            index.sync(inbox)  # every transcript indexed before its bundle's data goes
        sizes = dict(inbox.data_sizes(shed))
        result.items += [Removed(f"bundle {b.hex()}", sizes.get(b, 0), "bundle data past bundles_days / "
                                 "bundles_max") for b in shed]
        if not dry_run:
            inbox.shed(shed)
        max_age = cfg.link.max_age  # (dry, the records whose data goes now are not counted among these)
        forget = inbox.forgettable(now - max(2 * max_age, max_age + r.bundles_days * DAY)) if max_age else []
        if not dry_run:
            inbox.forget(forget)
        dropped = index.trim(int(r.transcripts_mb * MB), dry_run)
        result.counts = {"bundles' data": len(shed), "old records": len(forget), "transcripts": len(dropped)}
    finally:
        inbox.close()
        index.close()
    return result


class WontFit(RelayError):
    """A bundle's WAV can never be written within the configured limits (the daemon quarantines it)."""


class NoRoomYet(RelayError):
    """A bundle's WAV does not fit on the output disk now, even after pruning (it waits; others play meanwhile)."""

    def __init__(self, need: int, free: int, where: Path) -> None:
        super().__init__(f"its WAV needs {need / MB:.1f} MB and {where} has {free / MB:.1f} MB free "
                         "(after pruning)")
        self.need, self.free = need, free


RESERVE = 16 * MB  # what a WAV must leave free on the output disk (the store may share it), or 5 % of a small one


def make_room(cfg: EdgeConfig, size: int, now: float | None = None) -> None:
    """Before ``size`` bytes of WAV are written to the output folder: refuse one
    that can never fit (over ``wav_mb``, ``played_mb`` or the disk itself,
    :class:`WontFit`), prune old WAVs to make room for it, and say so if there
    is still none (:class:`NoRoomYet`)."""
    from relay.storage import disk_bytes, free_bytes

    r, folder = cfg.retention, cfg.edge.played_dir
    if size > r.wav_mb * MB:
        raise WontFit(f"its WAV would be {size / MB:.0f} MB, over [retention] wav_mb ({r.wav_mb:g} MB): speak it on "
                      "a sound card (relay edge play), or raise wav_mb")
    disk = disk_bytes(folder)
    reserve = int(min(RESERVE, disk / 20)) if disk is not None else RESERVE
    limit = min(r.played_mb * MB, disk - reserve if disk is not None else r.played_mb * MB)
    if size > limit:
        raise WontFit(f"its WAV would be {size / MB:.0f} MB, more than the output folder may ever hold "
                      f"({limit / MB:.0f} MB: [retention] played_mb, or the disk)")
    unlink(output_wavs(cfg, now or time.time(), need=size))
    free = free_bytes(folder)
    if free is not None and free < size + reserve:
        raise NoRoomYet(size, free, folder)

"""What the ground lets go of: the recordings it took once their bundle is
through, refused spool files, and finished queue entries.

Every file the spool takes moves to ``spool_dir/.taken`` and every upload
to ``state_dir/uploads``, where the encoder reads it; once its entry is
finished (delivered, failed or cancelled) for ``retention.files_days``, the
file is no longer needed. A file nobody queued (a daemon killed between the
move and the queue, a failed upload's leftovers) goes after the same time;
refused spool files after ``rejected_days``; finished entries leave the queue
after ``queue_days``. Files outside those two folders (``relay ground queue
add /home/ops/brief.wav``) are the operator's and never touched. The daemon
prunes every ``retention.every`` seconds and before it waits for space;
``relay ground prune [--dry-run]`` does it by hand.
"""

from __future__ import annotations

import time
from pathlib import Path

from ground.queue import FINISHED, Item, Outbox
from relay.config import GroundConfig
from relay.retention import DAY, Pruned, Removed, files_in, strays, unlink


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except (ValueError, OSError):
        return False
    return True


def prune(cfg: GroundConfig, dry_run: bool = False, now: float | None = None) -> Pruned:
    """Apply ``[retention]`` to the spool's folders, the uploads and the queue
    (its own connection: a daemon runs this in a worker thread)."""
    now = now or time.time()
    r, g = cfg.retention, cfg.ground
    result = Pruned(dry_run)
    folders = [g.state_dir / "uploads"]
    if g.spool_dir is not None:  # .taken, and a folder in it per edge or group the spool's folders named
        taken = g.spool_dir / ".taken"
        folders.append(taken)
        try:
            folders += sorted(p for p in taken.iterdir() if p.is_dir() and not p.is_symlink())
        except OSError:
            pass
    outbox = Outbox(g.queue_db, cfg.limits)
    try:
        entries = outbox.items()
        live = {Path(i.source).resolve() for i in entries if i.source and i.state not in FINISHED}
        done: dict[Path, Item] = {}  # a recording sent to a fleet is done when its last edge's row is
        for i in sorted((i for i in entries if i.source and i.state in FINISHED), key=lambda i: i.updated):
            done[Path(i.source or "").resolve()] = i
        for folder in folders:
            for path, size, mtime in files_in(folder, "*"):
                key = path.resolve()
                if key in live or path.name.endswith((".part", ".tmp")):
                    continue
                entry = done.get(key)
                since = entry.updated if entry is not None else mtime
                if now - since > r.files_days * DAY:
                    why = (f"entry {entry.entry} {entry.state} over {r.files_days:g} days ago" if entry is not None
                           else f"queued by no entry, {r.files_days:g} days old")
                    result.items.append(Removed(str(path), size, why))
            result.items += strays(folder, now)
        if g.spool_dir is not None:
            for path, size, mtime in files_in(g.spool_dir / ".rejected", "*"):
                if now - mtime > r.rejected_days * DAY:
                    result.items.append(Removed(str(path), size, f"refused over {r.rejected_days:g} days ago"))
        old = outbox.finished_before(now - r.queue_days * DAY)
        result.items += [Removed(f"entry {i.id}", (i.bundle_size or 0) + (i.head_size or 0),
                                 f"{i.state} over {r.queue_days:g} days ago") for i in old]
        result.counts = {"queue entries": len(old)}
        if not dry_run:
            unlink(result.items)
            outbox.remove([i.id for i in old])
    finally:
        outbox.close()
    return result

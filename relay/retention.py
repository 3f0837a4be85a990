"""Pruning, the part both sides share: what was removed (or would be), and a
folder kept within an age and a total size. Each side's policy is its own
(:mod:`edge.retention`, :mod:`ground.retention`); ``[retention]`` in either
configuration sets it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

MB = 1_000_000
DAY = 86400.0
BUSY = 60.0  # seconds since a file was last written under which it counts as being written
STRAY = 3600.0  # a temporary file (".name.tmp", "*.partial.wav", "*.part") untouched this long was left by a crash


@dataclass(frozen=True, slots=True)
class Removed:
    """One thing pruning removed (or would): a file, a bundle's data, a queue entry; its bytes, and why."""

    what: str
    size: int
    why: str


@dataclass
class Pruned:
    """What one pruning removed (or, dry, would remove)."""

    dry_run: bool = False
    items: list[Removed] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # what else, by kind: "records", "transcripts"...

    @property
    def bytes(self) -> int:
        return sum(i.size for i in self.items)

    @property
    def files(self) -> int:
        return sum(1 for i in self.items if i.what.startswith("/"))

    def summary(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        others = "".join(f", {n} {kind}" for kind, n in self.counts.items())
        return f"{verb} {self.files} file(s){others}: {self.bytes / MB:.1f} MB"

    def to_dict(self) -> dict:
        return {"dry_run": self.dry_run, "bytes": self.bytes, "files": self.files, **self.counts,
                "items": [{"what": i.what, "bytes": i.size, "why": i.why} for i in self.items]}


def files_in(folder: Path, pattern: str) -> list[tuple[Path, int, float]]:
    """(path, bytes, last touched) of the regular files in ``folder`` matching
    ``pattern``: touched is the later of the file's modification and its
    inode's change (a rename, as the spool's move to .taken, is a change: an
    old recording just taken is young here)."""
    out: list[tuple[Path, int, float]] = []
    try:
        entries = list(folder.glob(pattern))
    except OSError:
        return out
    for p in entries:
        try:
            st = p.lstat()
        except OSError:
            continue  # gone meanwhile
        if p.is_file() and not p.is_symlink():
            out.append((p, st.st_size, max(st.st_mtime, st.st_ctime)))
    return out


def strays(folder: Path, now: float, patterns: tuple[str, ...] = ("*.tmp", ".*.tmp", "*.partial.wav", "*.part")
           ) -> list[Removed]:
    """Temporary files an interrupted write left in ``folder``."""
    seen: set[Path] = set()
    out = []
    for pattern in patterns:
        for p, size, mtime in files_in(folder, pattern):
            if p not in seen and now - mtime > STRAY:
                seen.add(p)
                out.append(Removed(str(p), size, "left by an interrupted write"))
    return out


def prune_folder(folder: Path, pattern: str, max_days: float, max_mb: float, now: float, what: str,
                 need: int = 0) -> list[Removed]:
    """What to remove from ``folder`` (files matching ``pattern``): those older
    than ``max_days``, then the oldest until the rest and ``need`` more bytes
    fit in ``max_mb``, then temporary files a crash left. A file written in
    the last minute is never chosen."""
    out: list[Removed] = []
    kept: list[tuple[Path, int, float]] = []
    for p, size, mtime in sorted(files_in(folder, pattern), key=lambda f: f[2]):
        if now - mtime >= BUSY and now - mtime > max_days * DAY:
            out.append(Removed(str(p), size, f"{what} older than {max_days:g} days"))
        else:
            kept.append((p, size, mtime))
    total = sum(size for _, size, _ in kept)
    for p, size, mtime in kept:
        if total + need <= max_mb * MB:
            break
        if now - mtime < BUSY:
            continue
        out.append(Removed(str(p), size, f"{what} over {max_mb:g} MB in all (oldest first)"))
        total -= size
    chosen = {r.what for r in out}
    return out + [r for r in strays(folder, now) if r.what not in chosen]


def unlink(items: list[Removed]) -> None:
    """Remove the files among ``items`` (those already gone are fine)."""
    for r in items:
        if r.what.startswith("/"):
            try:
                Path(r.what).unlink(missing_ok=True)
            except IsADirectoryError:
                pass


class Pruner:
    """A daemon's pruning: ``prune()`` in a worker thread (on its own
    connections), what it removed in one line, and a failure said once an
    hour: on a full store pruning removes the old files it can and the store
    waits for room, which is no news every ten minutes."""

    def __init__(self, prune: Callable[[], Pruned], log: logging.Logger) -> None:
        self.prune, self.log = prune, log
        self._said = -1e18

    async def __call__(self) -> Pruned | None:
        from relay.storage import classify

        try:
            done = await asyncio.to_thread(self.prune)
        except Exception as err:  # a full or failing store, a busy one: tried again next time
            if time.monotonic() - self._said > 3600:
                self._said = time.monotonic()
                if classify(err) == "full":
                    self.log.warning("pruning removed the old files it could; the store itself has no room to "
                                     "change yet")
                else:
                    self.log.error("pruning failed: %s: %s", err.__class__.__name__, err)
            return None
        self._said = -1e18
        if done.items or any(done.counts.values()):
            self.log.info("retention: %s", done.summary())
        return done


def show(done: Pruned, as_json: bool) -> None:
    """What ``relay edge prune`` and ``relay ground prune`` print."""
    import json

    if as_json:
        print(json.dumps(done.to_dict(), indent=2))
        return
    for item in done.items:
        print(f"{item.what}  {item.size / MB:.1f} MB  {item.why}")
    print(done.summary())

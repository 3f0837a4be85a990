"""A year unattended (issue 24): what each side lets go of under
``[retention]``, what it never lets go of, and telling a full disk from a
failing one."""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge.retention import NoRoomYet, WontFit, make_room
from edge.retention import prune as prune_edge
from edge.search import TranscriptIndex
from edge.store import ACCEPTED, Inbox
from ground.queue import Outbox, State
from ground.retention import prune as prune_ground
from relay.config import EdgeConfig, GroundConfig
from relay.format.limits import DEFAULT_LIMITS
from relay.format.wire import encode_bundle
from relay.link.messages import Priority
from relay.link.signing import SigningKey
from relay.link.transfer import OutgoingTransfer
from relay.storage import Waiter, classify
from relay.testing.bundles import conversation
from relay.testing.configs import SAME_CLOCK

RELAY = str(Path(sys.executable).with_name("relay"))
DAY = 86400.0


def edge_config(tmp: Path, key: SigningKey, **retention) -> EdgeConfig:
    return EdgeConfig.model_validate({
        "edge": {"name": "ship", "state_dir": str(tmp / "edge"), "output_dir": str(tmp / "played"),
                 "trusted_keys": [key.public.text()]},
        "link": SAME_CLOCK.model_dump(), "retention": retention})


def receive(inbox: Inbox, key: SigningKey, data: bytes, bid: bytes, signed: int | None = None) -> None:
    t = OutgoingTransfer.create(bid, data, "ship", Priority.NORMAL, 340, key, 1, signed or int(time.time()))
    for i in range(t.count):
        got = inbox.receive(t.fragment(i))
    assert got.complete is not None
    assert inbox.finish(bid).decided.state == ACCEPTED


def test_the_edge_prunes_old_output_and_renderings_and_never_what_is_being_written(tmp_path):
    cfg = edge_config(tmp_path, SigningKey.generate(), played_days=30, played_mb=1, cache_days=7, cache_mb=100)
    played, cache = cfg.edge.played_dir, cfg.edge.state_dir / "web"
    for folder in (played, cache):
        folder.mkdir(parents=True)
    for i in range(5):  # 5 x 300 kB of spoken WAVs: over 1 MB in all
        (played / f"2026010{i}-{i:016x}.wav").write_bytes(bytes(300_000))
        time.sleep(0.01)
    (cache / "0123456789abcdef.wav").write_bytes(bytes(1000))
    (played / ".x.wav.0a1b.tmp").write_bytes(bytes(10))  # a write interrupted by a crash
    now = time.time() + 120  # a little later: nothing is being written
    dry = prune_edge(cfg, dry_run=True, now=now)
    assert len(list(played.iterdir())) == 6 and dry.dry_run
    done = prune_edge(cfg, now=now)
    assert [i.what for i in done.items] == [i.what for i in dry.items]
    left = sorted(p.name for p in played.glob("*.wav"))
    assert left == [f"2026010{i}-{i:016x}.wav" for i in (2, 3, 4)]  # the oldest go first, to 0.9 MB
    assert (cache / "0123456789abcdef.wav").exists()  # a day old: kept
    assert (played / ".x.wav.0a1b.tmp").exists()  # a temporary file is someone's write for an hour
    assert ".x.wav.0a1b.tmp" in [Path(i.what).name for i in prune_edge(cfg, now=now + 2 * 3600).items]
    later = prune_edge(cfg, now=now + 8 * DAY)
    assert not (cache / "0123456789abcdef.wav").exists() and any("console rendering" in i.why for i in later.items)
    assert not (played / ".x.wav.0a1b.tmp").exists()
    # a file written in the last minute is never chosen, however far over the limit
    fresh = played / "20270101-ffffffffffffffff.wav"
    fresh.write_bytes(bytes(2_000_000))
    prune_edge(cfg)
    assert fresh.exists()


def test_the_edge_sheds_played_bundles_keeps_unplayed_ones_and_their_transcripts(tmp_path):
    key = SigningKey.generate()
    cfg = edge_config(tmp_path, key, bundles_days=90, bundles_max=2)
    inbox = Inbox.of(cfg)
    ids, first = [], ""
    for i in range(4):
        b = conversation(4, seed=i, title=f"watch {i}")
        receive(inbox, key, encode_bundle(b, 1), b.bundle_id)
        ids.append(b.bundle_id)
        first = first or " ".join(b.segments[0].text.split()[:3])
    for bid in ids[:3]:  # the newest is not played yet
        inbox.start_play(bid)
        inbox.played(bid, "auto", None)
    done = prune_edge(cfg)
    # bundles_max = 2: the two oldest played lose their data; the unplayed one never does
    assert done.counts["bundles' data"] == 2
    with pytest.raises(Exception, match="data removed"):
        inbox.data(ids[0])
    assert inbox.data(ids[3]) and inbox.data(ids[2])
    assert inbox.get(ids[0]).state == ACCEPTED  # its record stays: a resend is not played again
    # its transcript was indexed before its data went, and is found
    index = TranscriptIndex(cfg.edge.transcripts_db, cfg.limits)
    assert len(index) == 4 and any(h.bundle_id == ids[0] for h in index.search(first))
    # a year on: every played bundle's data is gone, the unplayed one's kept, and records older than
    # twice max_age that the ground has heard about are forgotten (a replay of them is stale anyway)
    assert prune_edge(cfg, now=time.time() + 400 * DAY).counts["old records"] == 0  # the ground not told yet
    for report in inbox.reports():
        inbox.reported(report)
    year = prune_edge(cfg, now=time.time() + 400 * DAY)
    assert year.counts["old records"] == 3 and inbox.get(ids[0]) is None
    assert inbox.data(ids[3]) and inbox.next_to_play().bundle_id == ids[3]


def test_the_search_index_keeps_the_newest_transcripts_within_its_cap(tmp_path):
    index = TranscriptIndex(tmp_path / "t.db", DEFAULT_LIMITS)
    bundles = [conversation(30, seed=i, title=f"report {i}") for i in range(60)]
    for b in bundles:
        index.add(b)
    full = index.size()
    dropped = index.trim(full // 2)
    assert dropped and index.size() <= full // 2
    held = {bytes(r[0]) for r in index._db.execute("SELECT DISTINCT bundle_id FROM phrases")}
    assert bundles[0].bundle_id not in held and bundles[-1].bundle_id in held  # the oldest go first
    assert dropped == [b.bundle_id for b in bundles[:len(dropped)]]
    assert len(index) == 60  # each still marked indexed: a later sync does not bring it back


def test_make_room_refuses_what_can_never_fit_and_says_when_there_is_no_room_yet(tmp_path):
    cfg = edge_config(tmp_path, SigningKey.generate(), wav_mb=100, played_mb=50)
    cfg.edge.played_dir.mkdir(parents=True)
    with pytest.raises(WontFit, match="over \\[retention\\] wav_mb"):
        make_room(cfg, 926_000_000)  # 6 hours declared in 85 bytes
    with pytest.raises(WontFit, match="more than the output folder may ever hold"):
        make_room(cfg, 60_000_000)
    make_room(cfg, 1_000_000)  # fits
    small = edge_config(tmp_path, SigningKey.generate(), wav_mb=10**7, played_mb=10**7)
    free = __import__("shutil").disk_usage(tmp_path).free
    with pytest.raises((NoRoomYet, WontFit)):
        make_room(small, free + 10**9)


def test_the_ground_prunes_taken_and_uploaded_files_of_finished_entries_only(tmp_path):
    spool = tmp_path / "spool"
    cfg = GroundConfig.model_validate({"ground": {"state_dir": str(tmp_path / "g"), "spool_dir": str(spool)},
                                       "retention": {"files_days": 7, "rejected_days": 30, "queue_days": 90}})
    taken, uploads, rejected = spool / ".taken", tmp_path / "g" / "uploads", spool / ".rejected"
    for folder in (taken, uploads, rejected):
        folder.mkdir(parents=True)
    outbox = Outbox(cfg.ground.queue_db)
    files = {name: folder / name for folder, name in
             [(taken, "1-a.wav"), (taken, "2-b.wav"), (uploads, "c.wav"), (taken, "3-orphan.wav")]}
    for p in files.values():
        p.write_bytes(b"RIFF" + bytes(1000))
    (rejected / "x.txt").write_text("not audio")
    (rejected / "x.txt.reason").write_text("not audio\n")
    outside = tmp_path / "ops.wav"
    outside.write_bytes(bytes(10))
    delivered = outbox.add_audio(files["1-a.wav"], "ship")
    waiting = outbox.add_audio(files["2-b.wav"], "ship")
    failed = outbox.add_audio(files["c.wav"], "ship")
    mine = outbox.add_audio(outside, "ship")
    outbox._db.execute("UPDATE outbox SET state = 'delivered' WHERE id IN (?, ?)", (delivered, mine))
    outbox.fail(failed, "could not be encoded")
    assert prune_ground(cfg).items == []  # nothing is old enough yet
    later = time.time() + 8 * DAY
    done = prune_ground(cfg, now=later)
    assert not files["1-a.wav"].exists() and not files["c.wav"].exists() and not files["3-orphan.wav"].exists()
    assert files["2-b.wav"].exists()  # its entry is still waiting: never
    assert outside.exists()  # the operator's own file, queued from elsewhere: never
    assert (rejected / "x.txt").exists()  # refused 8 days ago: kept 30
    assert {Path(i.what).name for i in done.items} == {"1-a.wav", "c.wav", "3-orphan.wav"}
    prune_ground(cfg, now=time.time() + 31 * DAY)
    assert not (rejected / "x.txt").exists() and not (rejected / "x.txt.reason").exists()
    gone = prune_ground(cfg, now=time.time() + 91 * DAY)
    assert gone.counts["queue entries"] == 3
    assert [i.id for i in outbox.items()] == [waiting] and outbox.get(waiting).state == State.QUEUED


def test_prune_from_the_command_line_says_what_it_would_remove(tmp_path):
    from tests.test_daemons import write_configs

    ground, edge = write_configs(tmp_path, 1, 2, SigningKey.generate(), 100.0)
    played = tmp_path / "played"
    played.mkdir()
    old = played / "20250101-0000000000000000.wav"
    old.write_bytes(bytes(100))
    os.utime(old, (time.time() - 40 * DAY,) * 2)
    out = subprocess.run([RELAY, "edge", "prune", "--dry-run", "-c", str(edge)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "would remove" in out.stdout
    out = subprocess.run([RELAY, "ground", "prune", "--json", "-c", str(ground)], capture_output=True, text=True)
    assert out.returncode == 0 and '"dry_run": false' in out.stdout, out.stderr


def test_a_full_disk_and_a_failing_one_are_told_apart(tmp_path, caplog):
    assert classify(OSError(errno.ENOSPC, "No space left on device")) == "full"
    assert classify(OSError(errno.EDQUOT, "Disk quota exceeded")) == "full"
    assert classify(OSError(errno.EIO, "Input/output error")) == "io"
    assert classify(OSError(errno.EROFS, "Read-only file system")) == "io"
    assert classify(OSError(errno.EFBIG, "File too large")) is None  # not a full disk: waiting will not help
    assert classify(OSError(errno.EACCES, "Permission denied")) is None
    full = sqlite3.OperationalError("database or disk is full")
    assert classify(full) == "full"
    ioerr = sqlite3.OperationalError("disk I/O error")
    assert classify(ioerr, tmp_path) == "io"  # room on the disk: the disk is failing, not full
    wrapped = RuntimeError("while writing")
    wrapped.__cause__ = OSError(errno.EIO, "Input/output error")
    assert classify(wrapped) == "io"
    log = logging.getLogger("test.storage")
    with caplog.at_level(logging.INFO, logger="test.storage"):
        w = Waiter(log, "edge state", where=tmp_path)
        w.delay(ioerr)
        w.ok()
        w2 = Waiter(log, "edge output", where=tmp_path)
        w2.delay(OSError(errno.ENOSPC, "No space left on device"))
    text = caplog.text
    assert "edge state: I/O error" in text and "disk full" not in text.split("edge output")[0]
    assert "edge output: disk full" in text


def test_a_failing_disk_is_retried_under_its_own_name_and_a_full_one_pruned_first(tmp_path, caplog):
    """What a daemon's store writes go through (relay.storage.persist): an I/O
    error is waited out as an I/O error (it used to be called a full disk); a
    full disk is pruned once, then waited out; anything else is raised."""
    import asyncio

    from relay.storage import persist

    log = logging.getLogger("test.persist")
    failures = [sqlite3.OperationalError("disk I/O error")] * 2 + [OSError(errno.EIO, "Input/output error")]
    pruned: list[int] = []

    def write() -> str:
        if failures:
            raise failures.pop(0)
        return "written"

    async def prune() -> None:
        pruned.append(1)

    async def run() -> list[str]:
        io = Waiter(log, "edge state", where=tmp_path, io_pause=0.01)
        io.on_full = prune
        got = [await persist(write, io)]
        failures.extend([OSError(errno.ENOSPC, "No space left on device")] * 2)
        full = Waiter(log, "edge output", where=tmp_path, first=0.01)
        full.on_full = prune
        got.append(await persist(write, full))
        with pytest.raises(PermissionError):
            failures.append(PermissionError(errno.EACCES, "Permission denied"))
            await persist(write, full)
        return got

    with caplog.at_level(logging.INFO, logger="test.persist"):
        assert asyncio.run(run()) == ["written", "written"]
    assert pruned == [1]  # once for the full disk's spell, not for the failing one
    text = caplog.text
    assert "edge state: I/O error" in text and "edge state: disk full" not in text
    assert "edge state: writes work again" in text
    assert "edge output: disk full" in text and "edge output: space again" in text

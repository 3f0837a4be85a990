"""Full disks: the daemons wait, log one line, mark nothing failed, and resume.

Each daemon runs in its own mount namespace (``unshare``) with its state or
output folder on a tmpfs of a few megabytes; the test fills it from outside
(through ``/proc/<pid>/root``), sends bundles, checks that nothing was lost
or marked failed while the disk was full, frees the space and checks that
everything goes through.
"""

from __future__ import annotations

import errno
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from relay.testing.broker import LocalBroker, mosquitto_path
from relay.testing.bundles import real_bundle
from relay.testing.configs import write_station

RELAY = str(Path(sys.executable).with_name("relay"))
UNSHARE = shutil.which("unshare")


def _namespaces_work() -> bool:
    if UNSHARE is None:
        return False
    probe = subprocess.run([UNSHARE, "-Urm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt && echo ok"],
                           capture_output=True, text=True)
    return probe.stdout.strip() == "ok"


pytestmark = [
    pytest.mark.slow,  # runs the daemons for minutes
    pytest.mark.skipif(mosquitto_path() is None, reason="mosquitto is not installed (scripts/setup.sh)"),
    pytest.mark.skipif(not _namespaces_work(), reason="no user and mount namespaces here (unshare -Urm)"),
]


def in_small_disk(cmd: list[str], mounts: dict[Path, str], log: Path) -> subprocess.Popen:
    """``cmd`` with each folder in ``mounts`` on its own tmpfs of that size, seen by it alone."""
    setup = "".join(f"mount -t tmpfs -o size={size} tmpfs {shlex.quote(str(p))} && " for p, size in mounts.items())
    for p in mounts:
        p.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([UNSHARE, "-Urm", "sh", "-c", setup + "exec " + shlex.join(cmd)],
                            stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})


def seen_by(proc: subprocess.Popen, path: Path) -> Path:
    return Path(f"/proc/{proc.pid}/root") / str(path).lstrip("/")


def fill(folder: Path, leave: int = 0) -> Path:
    """Fill the filesystem holding ``folder`` to the last byte (but ``leave``)."""
    filler = folder / "filler"
    with filler.open("wb") as f:
        block = b"\0" * 65536
        try:
            while True:
                f.write(block)
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC
    if leave:
        os.truncate(filler, max(0, filler.stat().st_size - leave))
    return filler


def wait_for(predicate, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def configs(tmp: Path, port: int) -> tuple[Path, Path]:
    station = write_station(tmp, port, ground={"link": {"ack_timeout": 2, "max_poll_interval": 4}},
                            edges={"link": {"max_clock_skew": 600}})
    return station.ground, station.edge


def relay(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([RELAY, *args], capture_output=True, text=True, timeout=120)


def entries(ground: Path) -> list[dict]:
    proc = relay("ground", "queue", "ls", "--all", "--json", "-c", str(ground))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def stop(*procs: subprocess.Popen) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            p.wait(30)


def test_a_full_output_disk_delays_playback_and_loses_nothing(tmp_path):
    with LocalBroker(tmp_path / "broker") as broker:
        ground_cfg, edge_cfg = configs(tmp_path, broker.port)
        for i in range(6):
            path = tmp_path / f"b{i}.bundle"
            path.write_bytes(real_bundle(40, f"b{i}", seed=i))
            assert relay("ground", "queue", "add", str(path), "-c", str(ground_cfg)).returncode == 0
        played = tmp_path / "played"
        edge = in_small_disk([RELAY, "edge", "run", "-c", str(edge_cfg)], {played: "16m"}, tmp_path / "edge.log")
        ground = None
        try:
            wait_for(lambda: seen_by(edge, played).exists() and
                     "connected" in (tmp_path / "edge.log").read_text(), 600, "the edge")
            filler = fill(seen_by(edge, played))  # full before the first bundle can arrive
            ground = subprocess.Popen([RELAY, "ground", "run", "-c", str(ground_cfg)],
                                      stdout=(tmp_path / "ground.log").open("ab"), stderr=subprocess.STDOUT)
            wait_for(lambda: all(e["state"] == "delivered" for e in entries(ground_cfg)), 600, "delivery")
            wait_for(lambda: "no room for bundle" in (tmp_path / "edge.log").read_text(), 600, "the player to try")
            assert not any(e["play_state"] for e in entries(ground_cfg))  # nothing played, nothing failed
            log = (tmp_path / "edge.log").read_text()
            assert log.count("no room for bundle") == 1 and "quarantined" not in log  # one line for the spell
            filler.unlink()
            wait_for(lambda: all(e["play_state"] == "played" for e in entries(ground_cfg)), 600, "every bundle played")
            assert len(list(seen_by(edge, played).glob("*.wav"))) == 6
            assert "room again" in (tmp_path / "edge.log").read_text()
            assert edge.poll() is None and ground.poll() is None
        finally:
            stop(*(p for p in (ground, edge) if p is not None))


def test_a_full_state_disk_holds_messages_at_the_broker_until_space_returns(tmp_path):
    with LocalBroker(tmp_path / "broker") as broker:
        ground_cfg, edge_cfg = configs(tmp_path, broker.port)
        state = tmp_path / "edge"
        edge = in_small_disk([RELAY, "edge", "run", "-c", str(edge_cfg)], {state: "3m"}, tmp_path / "edge.log")
        ground = subprocess.Popen([RELAY, "ground", "run", "-c", str(ground_cfg)],
                                  stdout=(tmp_path / "ground.log").open("ab"), stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: "connected" in (tmp_path / "edge.log").read_text(), 600, "the edge")
            filler = fill(seen_by(edge, state))
            for i in range(4):
                path = tmp_path / f"b{i}.bundle"
                path.write_bytes(real_bundle(300, f"b{i}", seed=i))
                assert relay("ground", "queue", "add", str(path), "-c", str(ground_cfg)).returncode == 0
            wait_for(lambda: "disk full" in (tmp_path / "edge.log").read_text(), 600, "the edge to notice")
            # the ground keeps sending and polling meanwhile: time for a crash or a wrong ack to show
            tries = lambda: sum(e["polls"] + e["fragments_sent"] for e in entries(ground_cfg))  # noqa: E731
            before = tries()
            wait_for(lambda: tries() >= before + 4, 600, "the ground to try again")
            assert edge.poll() is None  # waiting, not crash-looping
            assert not any(e["state"] in ("delivered", "failed") for e in entries(ground_cfg))
            filler.unlink()
            wait_for(lambda: all(e["play_state"] == "played" for e in entries(ground_cfg)), 600, "every bundle")
            log = (tmp_path / "edge.log").read_text()
            assert log.count("disk full") == 1 and "Traceback" not in log
        finally:
            stop(ground, edge)


def test_an_edge_started_on_a_full_disk_waits_instead_of_crash_looping(tmp_path):
    with LocalBroker(tmp_path / "broker") as broker:
        _, edge_cfg = configs(tmp_path, broker.port)
        state = tmp_path / "edge"
        script = (f"mount -t tmpfs -o size=1m tmpfs {state} && head -c 2000000 /dev/zero > {state}/filler 2>/dev/null;"
                  f" exec {RELAY} edge run -c {edge_cfg}")
        state.mkdir()
        edge = subprocess.Popen([UNSHARE, "-Urm", "sh", "-c", script], stdout=(tmp_path / "edge.log").open("ab"),
                                stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: "disk full" in (tmp_path / "edge.log").read_text(), 600, "the edge to notice")
            assert edge.poll() is None
            (seen_by(edge, state) / "filler").unlink()
            wait_for(lambda: "connected" in (tmp_path / "edge.log").read_text(), 600, "the edge to start")
            assert edge.poll() is None  # the same process: it waited, it did not exit (nothing restarts it here)
        finally:
            stop(edge)


def test_queue_add_on_a_full_disk_is_one_line(tmp_path):
    with LocalBroker(tmp_path / "broker") as broker:
        ground_cfg, _ = configs(tmp_path, broker.port)
        state = tmp_path / "ground"
        bundle = tmp_path / "b.bundle"
        bundle.write_bytes(real_bundle(100))
        state.mkdir()
        script = (f"mount -t tmpfs -o size=1m tmpfs {state} && {RELAY} ground queue ls -c {ground_cfg} >/dev/null && "
                  f"head -c 2000000 /dev/zero > {state}/filler 2>/dev/null; "
                  f"exec {RELAY} ground queue add {bundle} -c {ground_cfg}")
        proc = subprocess.run([UNSHARE, "-Urm", "sh", "-c", script], capture_output=True, text=True, timeout=120)
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert proc.returncode == 1 and len(lines) == 1, proc.stderr
        assert lines[0].startswith("error: ") and "disk full" in lines[0] and "Traceback" not in proc.stderr


def test_a_wav_that_can_never_fit_is_quarantined_and_the_next_one_plays(tmp_path):
    """An 85-byte bundle may declare hours; its WAV (44 KB a second) used to be
    tried for ever on a disk it could never fit ("disk full, nothing is
    dropped" with 20 MB free), and the bundles behind it never played. Now it
    is quarantined before a byte is written, with the reason, and reported."""
    from relay.format.bundle import Bundle, Segment, SourceInfo, Speaker, Word
    from relay.format.wire import encode_bundle

    with LocalBroker(tmp_path / "broker") as broker:
        ground_cfg, edge_cfg = configs(tmp_path, broker.port)
        word = (Word("attention", 0.5, 1.2),)
        long = Bundle(SourceInfo("ten minutes", 600.0, "en"), [Speaker("S1")], [Segment(0, 0.5, 1.2, "attention",
                                                                                          word)])
        (tmp_path / "long.bundle").write_bytes(encode_bundle(long, 1))
        assert relay("ground", "queue", "add", str(tmp_path / "long.bundle"), "-p", "flash",
                     "-c", str(ground_cfg)).returncode == 0
        (tmp_path / "after.bundle").write_bytes(real_bundle(40, "after", seed=3))
        assert relay("ground", "queue", "add", str(tmp_path / "after.bundle"), "-c", str(ground_cfg)).returncode == 0
        played = tmp_path / "played"
        edge = in_small_disk([RELAY, "edge", "run", "-c", str(edge_cfg)], {played: "8m"}, tmp_path / "edge.log")
        ground = subprocess.Popen([RELAY, "ground", "run", "-c", str(ground_cfg)],
                                  stdout=(tmp_path / "ground.log").open("ab"), stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: all(e["play_state"] for e in entries(ground_cfg)), 600, "both decided")
            by_title = {e["title"]: e for e in entries(ground_cfg)}
            assert by_title["ten minutes"]["play_state"] == "quarantined"
            assert "more than the output folder may ever hold" in by_title["ten minutes"]["play_reason"]
            assert by_title["after"]["play_state"] == "played"
            assert [p.name for p in seen_by(edge, played).glob("*")] == [
                next(p.name for p in seen_by(edge, played).glob("*.wav"))]  # one WAV, no half-written other
            log = (tmp_path / "edge.log").read_text()
            assert "disk full" not in log and "Traceback" not in log
        finally:
            stop(ground, edge)


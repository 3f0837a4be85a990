#!/usr/bin/env python3
"""The edge on a Pi-like CPU: does playback keep up, and how much memory does it take?

A Raspberry Pi 4 renders Kokoro several times slower than this machine, so
the edge's playback plan (:mod:`edge.speed`) is measured here under a CPU
quota standing in for one: a cgroup (v2 ``cpu.max`` or v1 CFS quota) of
``--cpus`` CPUs (default 0.5 of this machine's 2 cores, which puts Kokoro's
real-time factor where a Pi 4's is reported: 2 to 3). The ground encodes
outside the quota (the real ground, fitting off); the edge, inside it:

1. measures each engine's RTF here (``edge.speed.profile``);
2. plays the demo call (30 s, two speakers, the edge's own Kokoro cast)
   with the plan (rendered ahead as far as the RTF needs) and without it;
3. plays a briefing of ``--briefing-minutes`` (the call's turns repeated
   on one timeline, as a long recorded briefing is) with the plan;
4. plays the call as a live stream, ``--part`` seconds a part, each part
   handed over when the capture would have finished it, with the plan
   (voices faster than real time here) and with the cast forced to Kokoro.

The sound card is the absent hardware here: a paced output stands in for
it (a 0.5 s buffer drained in real time), and counts every time it ran dry
after the first sound: a gap the listener hears. Reported per run: time to
first audio, gaps (count, total seconds), the lead rendered before the first
sound; and the edge process's peak RSS (text model and Kokoro loaded). The
edge runs as a Pi installs it, without torch (``--with-torch``: as an x86
edge, which also measures espeak-ng's voices with the speaker encoder).

    .venv/bin/python benchmarks/slow_edge.py [--cpus 0.5] [--briefing-minutes 10] [--part 10] [--json OUT]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BUFFER_S = 0.5  # what a sound card holds queued


class PacedOutput:
    """A sound card stand-in: takes blocks, drains them in real time, counts when it ran dry."""

    def __init__(self, sample_rate: int, device: object = None) -> None:
        self.sample_rate = sample_rate
        self.until: float | None = None  # wall time the queued audio runs out
        self.gaps: list[float] = []

    def write(self, block: np.ndarray) -> None:
        now = time.perf_counter()
        if self.until is not None and now > self.until + 0.05:
            self.gaps.append(now - self.until)
        start = now if self.until is None or now > self.until else self.until
        self.until = start + len(block) / self.sample_rate
        ahead = self.until - time.perf_counter() - BUFFER_S
        if ahead > 0:
            time.sleep(ahead)

    def close(self) -> None:
        if self.until is not None:
            time.sleep(max(0.0, self.until - time.perf_counter()))


class _NoTorch:
    """An import finder that finds no torch: this process is an edge installed from ``.[edge]``."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name.split(".")[0] in ("torch", "torchaudio"):
            raise ImportError(f"No module named {name!r} (an edge as a Pi installs it)")
        return None


def _cgroup(cpus: float) -> Path | None:
    """A cgroup limited to ``cpus`` CPUs (v2, else v1 CFS); None when this machine allows none."""
    period = 100_000
    v2 = Path("/sys/fs/cgroup/cgroup.controllers")
    try:
        if v2.exists() and "cpu" in v2.read_text():
            group = Path("/sys/fs/cgroup/speech-relay-slow-edge")
            group.mkdir(exist_ok=True)
            (group / "cpu.max").write_text(f"{int(cpus * period)} {period}")
            return group
        group = Path("/sys/fs/cgroup/cpu/speech-relay-slow-edge")
        group.mkdir(exist_ok=True)
        (group / "cpu.cfs_period_us").write_text(str(period))
        (group / "cpu.cfs_quota_us").write_text(str(int(cpus * period)))
        return group
    except OSError as exc:
        print(f"slow_edge: no CPU quota here ({exc}); run as root on a machine with cgroups", file=sys.stderr)
        return None


def make_bundles(folder: Path, part: float) -> None:
    """The ground, outside the quota: the call, and the call cut into live parts."""
    import importlib.util

    from ground.encoder import Encoder
    from relay.audio.io import load_audio
    from relay.config import GroundConfig
    from relay.format.bundle import StreamPart
    from relay.profiles import ProfileStore

    spec = importlib.util.find_spec("pyannote.audio")
    assert spec and spec.origin
    call = load_audio(Path(spec.origin).parent / "sample" / "sample.wav")
    encoder = Encoder(GroundConfig.model_validate({"ground": {"fit_voices": False}}),
                      store=ProfileStore(folder / "profiles.db"))
    result = encoder.encode(call, "the demo call")
    encoder.commit(result, sent=True)
    (folder / "call.bundle").write_bytes(result.data)
    step = int(part * 16000)
    starts = list(range(0, len(call), step))
    for seq, a in enumerate(starts):
        where = StreamPart(b"live", seq, a / 16000, last=seq == len(starts) - 1)
        r = encoder.encode(call[a : a + step], "live", stream=where)
        encoder.commit(r, sent=True)
        (folder / f"part{seq:03d}.bundle").write_bytes(r.data)


def _briefing(call, minutes: float):  # noqa: ANN001, ANN202 - a Bundle in and out
    """The call's turns repeated on one timeline to ``minutes``: a long briefing, same voices."""
    from relay.format.bundle import Segment, Word

    length = call.source.duration + 1.0
    copies = max(1, int(minutes * 60 // length))
    segments = []
    for k in range(copies):
        shift = k * length
        for s in call.segments:
            words = tuple(Word(w.text, w.start + shift, w.end + shift) for w in s.words)
            segments.append(Segment(s.speaker, s.start + shift, s.end + shift, s.text, words))
    source = dataclasses.replace(call.source, title="briefing", duration=copies * length)
    return dataclasses.replace(call, source=source, segments=segments)


def inside(folder: Path, minutes: float, low_memory: bool = False) -> dict:
    """The edge, under the quota."""
    import edge.player as player_module
    from edge import speed
    from edge.player import Player
    from relay.config import EdgeConfig
    from relay.format.wire import decode_bundle

    outputs: list[PacedOutput] = []

    def device(rate: int, _device: object = None) -> PacedOutput:
        outputs.append(PacedOutput(rate))
        return outputs[-1]

    player_module.DeviceOutput = device  # type: ignore[assignment,misc]  # the sound card this machine lacks
    config = EdgeConfig.model_validate({"edge": {"state_dir": str(folder / "edge"), "low_memory": low_memory}})
    player = Player(config)
    out: dict = {"device": speed.device()}
    t0 = time.perf_counter()
    speeds = player.measure_speeds()
    out["rtf"] = speeds.rtf
    out["measure_s"] = round(time.perf_counter() - t0, 1)
    print(f"RTF here: {speeds.rtf} (measured in {out['measure_s']} s)", flush=True)

    def run(name: str, bundles: list, plan: bool = True, urgent: bool = False) -> None:
        outputs.clear()
        saved = player._speeds
        if not plan:
            player._speeds = speed.SpeedProfile("none", "none")  # no figures: no lead, no fast voices
        start = time.perf_counter()
        first, leads, voices = None, [], set()
        origin = bundles[0].source.stream.start + bundles[0].source.duration if bundles[0].source.stream else 0.0
        for b in bundles:
            if b.source.stream:  # a live part exists only once the capture has it (the first one: now)
                wait = b.source.stream.start + b.source.duration - origin - (time.perf_counter() - start)
                if wait > 0:
                    time.sleep(wait)
            handed = time.perf_counter()
            performance = player.prepare(b, urgent=urgent)
            voices.update(c.voice for c in performance.choices)
            leads.append(player.lead(performance))
            playing = time.perf_counter()
            report = player.to_device(performance)
            if first is None and report.first_sound_s is not None:  # from the hand-over: casting counts too
                first = playing - handed + report.first_sound_s
        player.end_stream()
        player._speeds = saved
        gaps = [g for o in outputs for g in o.gaps]
        out[name] = {"first_audio_s": round(first or 0.0, 2), "gaps": len(gaps), "gap_s": round(sum(gaps), 2),
                     "lead_s": round(max(leads, default=0.0), 1), "voices": sorted(voices),
                     "wall_s": round(time.perf_counter() - start, 1)}
        print(f"{name}: {out[name]}", flush=True)

    def decoded(path: Path):  # noqa: ANN202 - as the daemon decodes: the text model let go after, if low_memory
        bundle = decode_bundle(path.read_bytes())
        if low_memory:
            from relay.format.textmodel import release_text_model

            release_text_model()
        return bundle

    call = decoded(folder / "call.bundle")
    parts = [decoded(p) for p in sorted(folder.glob("part*.bundle"))]
    run("call, planned", [call])
    run("call, no plan", [call], plan=False)
    run("live stream, planned", parts)
    run("live stream, no plan", parts, plan=False)
    if minutes > 0:
        run(f"briefing {minutes:g} min, planned", [_briefing(call, minutes)])
    status = Path("/proc/self/status").read_text()
    out["peak_rss_mb"] = int(status.split("VmHWM:")[1].split()[0]) // 1024
    print(f"peak RSS {out['peak_rss_mb']} MB", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpus", type=float, default=0.5)
    ap.add_argument("--briefing-minutes", type=float, default=10.0)
    ap.add_argument("--part", type=float, default=10.0, help="seconds a live part holds")
    ap.add_argument("--low-memory", action="store_true", help="[edge] low_memory: the text model let go to render")
    ap.add_argument("--with-torch", action="store_true",
                    help="let the edge load torch (the speaker encoder), as an x86 edge does; a Pi's has none")
    ap.add_argument("--json")
    ap.add_argument("--inside", help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("SPEECH_RELAY_FIT_VOICES", "0")
    if args.inside:
        if not args.with_torch:  # the edge as a Pi installs it (.[edge]): no torch, so no speaker encoder
            sys.meta_path.insert(0, _NoTorch())
        result = inside(Path(args.inside), args.briefing_minutes, args.low_memory)
        Path(args.inside, "result.json").write_text(json.dumps(result))
        return
    group = _cgroup(args.cpus)
    if group is None:
        sys.exit(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_bundles(folder, args.part)
        env = {**os.environ, "SPEECH_RELAY_HOME": str(folder / "home")}
        child = subprocess.Popen([sys.executable, __file__, "--inside", tmp,
                                  "--briefing-minutes", str(args.briefing_minutes)]
                                 + (["--low-memory"] if args.low_memory else [])
                                 + (["--with-torch"] if args.with_torch else []), env=env)
        (group / "cgroup.procs").write_text(str(child.pid))  # before it loads anything
        if child.wait() != 0:
            sys.exit(f"slow_edge: the edge run failed ({child.returncode})")
        result = json.loads((folder / "result.json").read_text())
    result["cpus"], result["low_memory"] = args.cpus, args.low_memory
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

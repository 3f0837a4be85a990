"""How fast this device speaks with each engine, and the playback plan that follows.

A Pi renders Kokoro several times slower than this project's x86 machine,
so whether a phrase is ready when the sound card reaches it depends on the
device. The edge measures each engine once (a fixed passage rendered and
moved in pitch and colour as a cast would: :data:`PASSAGE`), keeps the
real-time factors in ``speed.json`` under its state folder, and measures
again when its voices, CPU count or CPU quota change. From them:

* :func:`lead_seconds`: a stored bundle is rendered that far ahead before
  the first sound, so the rest renders while the start plays and playback
  never waits (a renderer at RTF r needs ``(1 - 1/r)`` of the timeline in
  hand; :data:`MARGIN` covers a busier moment);
* :func:`fast_engines`: a live stream's part and a flash bundle are spoken
  only by engines faster than real time here, so they never fall behind;
  where none is, the edge says so once and plays what it has rendered.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from relay.voice.catalog import Catalog

log = logging.getLogger("relay.edge")
PASSAGE = ("The relief ship left the harbour at dawn and should reach the station by Thursday. "
           "Keep the generator running and log the wind every hour until it arrives.")
MARGIN = 1.25  # a measured RTF is taken this much slower: another process may take the CPU for a while
FAST = 0.8  # an engine at or under this RTF (after MARGIN) keeps ahead of a live stream
REPRESENTATIVE = {  # the voice each engine is timed with (the first available)
    "kokoro": ("kokoro:af_heart", "kokoro:jf_alpha"),
    "piper": ("piper:en_US-joe-medium",),
    "espeak": ("espeak:en-us+m3", "espeak:en-us+f3"),
}


def cpu_quota() -> float | None:
    """CPUs this process may use under a cgroup quota (v2 ``cpu.max`` or v1 CFS), None when unlimited."""
    for quota_file, period_file in (("/sys/fs/cgroup/cpu.max", None),
                                    ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us")):
        try:
            text = Path(quota_file).read_text().split()
            if period_file is None:
                quota, period = text[0], text[1]
            else:
                quota, period = text[0], Path(period_file).read_text().strip()
            if quota not in ("max", "-1"):
                return int(quota) / int(period)
        except (OSError, ValueError, IndexError):
            continue
    return None


def device() -> str:
    """What the measurement is valid for: the machine, its CPUs and any quota on them."""
    quota = cpu_quota()
    return f"{platform.machine()} x{os.cpu_count()}" + (f" quota {quota:.2f}" if quota else "")


@dataclass(slots=True)
class SpeedProfile:
    """Real-time factor per engine on this device (seconds of work per second of speech, prosody included)."""

    device: str
    voices: str  # the catalog's voice keys, hashed: a new voice or engine is measured again
    rtf: dict[str, float] = field(default_factory=dict)
    measured: float = 0.0  # unix time

    def fastest(self) -> tuple[str, float] | None:
        return min(self.rtf.items(), key=lambda kv: kv[1]) if self.rtf else None


def _voices_key(catalog: Catalog) -> str:
    import hashlib

    keys = sorted(v.key for v in catalog.voices(variants=False))
    return hashlib.blake2b("\n".join(keys).encode(), digest_size=8).hexdigest()


def measure_engine(catalog: Catalog, engine: str) -> float | None:
    """The engine's RTF here: its representative voice reads :data:`PASSAGE`, then moved 2 semitones
    and equalised as a cast does. None when the engine has no voice here."""
    from relay.voice.prosody import Prosody, ratio_of

    for key in REPRESENTATIVE.get(engine, ()):
        try:
            voice = catalog.load(key)
        except Exception:  # noqa: BLE001 - a voice this edge lacks: try the next
            continue
        voice.synthesize("Ready.")  # the first call loads the model: not part of the rate
        start = time.perf_counter()
        audio = voice.synthesize(PASSAGE)
        Prosody(ratio_of(2.0), 1.1, tuple([1.5] * 16)).apply(audio, voice.sample_rate, 1.05)
        seconds = len(audio) / voice.sample_rate
        return (time.perf_counter() - start) / seconds if seconds > 0 else None
    return None


def load(path: Path) -> SpeedProfile | None:
    try:
        data = json.loads(path.read_text())
        rtf = {str(k): float(v) for k, v in dict(data["rtf"]).items()}
        if not all(math.isfinite(v) and v > 0 for v in rtf.values()):
            return None  # a damaged file: measured again, not trusted
        return SpeedProfile(str(data["device"]), str(data["voices"]), rtf, float(data["measured"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def profile(catalog: Catalog, path: Path, remeasure: bool = False) -> SpeedProfile:
    """The cached profile if it still describes this device and these voices, else measured now and saved."""
    here, voices = device(), _voices_key(catalog)
    cached = None if remeasure else load(path)
    if cached is not None and cached.device == here and cached.voices == voices:
        return cached
    measured = SpeedProfile(here, voices, measured=time.time())
    for engine in REPRESENTATIVE:
        if catalog.status(engine).available:
            rtf = measure_engine(catalog, engine)
            if rtf is not None:
                measured.rtf[engine] = round(rtf, 3)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(measured)))
        os.replace(tmp, path)
    except OSError as exc:  # a full or read-only disk: the figures still serve this run
        log.warning("speed: cannot save %s (%s)", path, exc)
    log.info("speed on %s: %s", here, ", ".join(f"{k} RTF {v:.2f}" for k, v in measured.rtf.items()) or "no engine")
    return measured


def lead_seconds(rtf: float, timeline: float) -> float:
    """Seconds of the timeline to have rendered before the first sound, so a renderer at ``rtf``
    never makes playback wait: ``(1 - 1/r) * timeline`` with r = ``rtf`` * :data:`MARGIN`; 0 when faster."""
    r = rtf * MARGIN
    return 0.0 if r <= 1.0 else float(np.clip((1.0 - 1.0 / r) * timeline, 0.0, timeline))


def fast_engines(speeds: SpeedProfile) -> set[str]:
    """Engines that keep ahead of real time here, margin included."""
    return {engine for engine, rtf in speeds.rtf.items() if rtf * MARGIN <= FAST}

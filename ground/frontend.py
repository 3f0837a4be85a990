"""What the models hear: loudness levelled, and where the speech is.

Far-field meeting speech reaches the microphone 20-40 dB below a close
talker; Silero VAD and Whisper, trained mostly on close speech, then drop it
(two of the shared AMI snippets gave bundles with no words at all). Two fixes,
both independent of any one recording:

* :func:`level` is a slow automatic gain control: each moment is brought to
  a speech level of ``TARGET_DB`` from the level of the *speech* around it
  (frames well above the recording's noise floor, within ``WINDOW`` seconds),
  never by more than ``MAX_GAIN_DB``, and limited so no sample clips. Quiet
  talkers are lifted, loud ones lowered, the silence between keeps its ratio
  to the speech beside it.
* :func:`speech_regions` is the union of Silero VAD on the levelled audio and
  the diarizer's speech turns (pyannote's segmentation hears overlapped and
  distant speech that a VAD trained on single close voices drops), merged and
  padded, which is what the ASR is then run on.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from relay.audio.io import SAMPLE_RATE, frame_stats

FRAME = 0.02  # seconds
TARGET_DB = -23.0  # speech level after levelling (dBFS RMS), the broadcast loudness norm
MAX_GAIN_DB = 30.0  # never lift more: beyond this it is noise being lifted
MIN_GAIN_DB = -12.0
WINDOW = 3.0  # seconds of context the gain follows; slower than syllables, faster than turns
SPEECH_OVER_FLOOR_DB = 10.0  # a frame this far above the noise floor is taken as speech for the level
PEAK = 0.97


@dataclass(frozen=True, slots=True)
class Region:
    """Speech from ``start`` to ``end`` seconds."""

    start: float
    end: float


def gain_curve(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The levelling gain in dB, one value per ``FRAME``."""
    hop = int(FRAME * sample_rate)
    power, peaks = frame_stats(audio, hop)
    if power.size == 0:
        return np.zeros(0)
    db = 10 * np.log10(power)
    floor = float(np.percentile(db, 10))
    speech = db > max(floor + SPEECH_OVER_FLOOR_DB, -75.0)
    if not speech.any():
        return np.zeros_like(db)
    # mean speech power within +-WINDOW/2 of each frame (running sums: O(n))
    half = int(WINDOW / 2 / FRAME)
    sp = np.where(speech, power, 0.0)
    csum = np.concatenate([[0.0], np.cumsum(sp)])
    ccount = np.concatenate([[0], np.cumsum(speech)])
    idx = np.arange(len(db))
    lo, hi = np.maximum(idx - half, 0), np.minimum(idx + half + 1, len(db))
    count = ccount[hi] - ccount[lo]
    level = np.full(len(db), np.nan)
    has = count > 0
    level[has] = 10 * np.log10((csum[hi] - csum[lo])[has] / count[has])
    if not has.all():  # far from any speech: hold the nearest speech level
        known = np.flatnonzero(has)
        nearest = known[np.clip(np.searchsorted(known, idx), 0, len(known) - 1)]
        before = known[np.clip(np.searchsorted(known, idx) - 1, 0, len(known) - 1)]
        pick = np.where(np.abs(before - idx) < np.abs(nearest - idx), before, nearest)
        level[~has] = level[pick[~has]]
    gain = np.clip(TARGET_DB - level, MIN_GAIN_DB, MAX_GAIN_DB)
    # never clip: a frame's peak after gain stays under PEAK
    gain = np.minimum(gain, 20 * np.log10(PEAK / peaks))
    # smooth over ~100 ms so the gain itself adds no audible steps
    kernel = np.hanning(11)
    kernel /= kernel.sum()
    padded = np.pad(gain, 5, mode="edge")
    smooth = np.convolve(padded, kernel, mode="valid")
    return np.minimum(smooth, gain)  # smoothing must not undo the peak limit


def level(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """``audio`` with its speech brought to ``TARGET_DB`` (float32, same length)."""
    audio = np.asarray(audio, dtype=np.float32)
    gain_db = gain_curve(audio, sample_rate)
    if gain_db.size == 0:
        return audio.copy()
    hop = int(FRAME * sample_rate)
    centres = (np.arange(len(gain_db)) + 0.5) * hop
    out = np.empty_like(audio)
    block = 60 * sample_rate  # a minute at a time: no 64-bit copies of a whole long recording
    for a in range(0, len(audio), block):
        index = np.arange(a, min(a + block, len(audio)))
        gain = 10.0 ** (np.interp(index, centres, gain_db) / 20.0)
        out[a : a + len(index)] = np.clip(audio[a : a + len(index)] * gain, -1.0, 1.0)
    return out


VAD_BLOCK = 120.0  # seconds given to the VAD at once: its framing copies the input several times (600 s: +0.26 GB)


def vad_regions(audio: np.ndarray, min_silence_ms: int = 500, sample_rate: int = SAMPLE_RATE) -> list[Region]:
    """Silero VAD (the model inside the faster-whisper wheel), ``VAD_BLOCK``
    seconds at a time so a long recording costs no more memory than two
    minutes do; speech cut at a block's edge is joined again by :func:`merge`."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(min_silence_duration_ms=min_silence_ms)
    block = int(VAD_BLOCK * sample_rate)
    regions = []
    for a in range(0, len(audio), block):
        for c in get_speech_timestamps(audio[a : a + block], options):
            regions.append(Region((a + c["start"]) / sample_rate, (a + c["end"]) / sample_rate))
    return regions


def merge(regions: Iterable[Region], pad: float = 0.2, gap: float = 0.5, duration: float | None = None) -> list[Region]:
    """Union of ``regions``, each padded by ``pad`` s, joining gaps under ``gap`` s."""
    spans = sorted((max(0.0, r.start - pad), r.end + pad) for r in regions if r.end > r.start)
    out: list[list[float]] = []
    for start, end in spans:
        if duration is not None:
            end = min(end, duration)
        if out and start - out[-1][1] < gap:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [Region(round(a, 3), round(b, 3)) for a, b in out if b > a]


def speech_regions(vad: Sequence[Region], turns: Iterable[Region] = (), duration: float | None = None) -> list[Region]:
    """Where the ASR should listen: VAD's speech and the diarizer's, together."""
    return merge([*vad, *turns], duration=duration)

"""Pitch, pitch range, formants and duration of speech changed by TD-PSOLA.

The method of Praat's "Change gender" (Moulines and Charpentier's
time-domain pitch-synchronous overlap-add), written in NumPy so that it runs
the same on an arm64 edge, which has no Praat wheel, as on x86:

1. formants: the sound is resampled by the formant ratio, which moves every
   frequency (formants and pitch) by it and changes the length by its inverse;
2. pitch marks: in voiced stretches, one mark per period on the waveform's
   peak (:mod:`relay.audio.pitch` gives the period); in unvoiced stretches,
   marks every 5 ms;
3. synthesis: the output's own marks are laid at the new periods (the
   contour's median moved, its excursions scaled in semitones around it);
   each takes the two-period, Hann-windowed grain of the analysis mark
   nearest its time on the original timeline, which is stretched by the
   duration factor. Unvoiced grains are laid at slightly uneven steps, so a
   repeated grain does not buzz; the unevenness comes from a fixed seed, so
   the same phrase always renders the same.
"""

from __future__ import annotations

import numpy as np

from relay.audio.io import resample
from relay.audio.pitch import PitchTrack, track

UNVOICED_STEP = 0.005  # seconds between unvoiced marks
SEED = 5  # any fixed seed: what matters is that it is the same every time


def contour(pitch: PitchTrack, samples: int, sample_rate: int) -> np.ndarray:
    """F0 at every sample (0 where unvoiced)."""
    return pitch.at(np.arange(samples) / sample_rate) if len(pitch.f0) else np.zeros(samples)


def pitch_marks(x: np.ndarray, sample_rate: int, f0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mark positions in samples, voiced flag per mark), sorted, covering the whole signal;
    ``f0`` is the pitch at every sample (:func:`contour`)."""
    voiced = f0 > 0
    marks: list[int] = []
    flags: list[bool] = []
    edges = np.flatnonzero(np.diff(np.concatenate([[0], voiced.astype(np.int8), [0]])))
    cursor = 0
    unvoiced_step = max(1, int(UNVOICED_STEP * sample_rate))
    for start, end in zip(edges[::2], edges[1::2]):
        marks.extend(range(cursor, start, unvoiced_step))
        flags.extend([False] * len(range(cursor, start, unvoiced_step)))
        run = _voiced_marks(x, f0, sample_rate, int(start), int(end))
        marks.extend(run)
        flags.extend([True] * len(run))
        cursor = (run[-1] + unvoiced_step) if run else int(end)
    tail = range(cursor, len(x), unvoiced_step)
    marks.extend(tail)
    flags.extend([False] * len(tail))
    order = np.argsort(marks, kind="stable")
    return np.asarray(marks, dtype=np.int64)[order], np.asarray(flags, dtype=bool)[order]


def _voiced_marks(x: np.ndarray, f0: np.ndarray, sample_rate: int, start: int, end: int) -> list[int]:
    """One mark a period through ``x[start:end]``, each on the largest peak near where the period puts it."""
    mid = (start + end) // 2
    period = sample_rate / f0[mid]
    lo, hi = max(start, int(mid - period / 2)), min(end, int(mid + period / 2) + 1)
    if hi <= lo:
        return []
    anchor = lo + int(np.argmax(x[lo:hi]))
    out = [anchor]
    for direction in (1, -1):
        m = anchor
        while True:
            period = sample_rate / f0[m] if f0[m] > 0 else period
            guess = m + direction * period
            lo, hi = int(guess - 0.2 * period), int(guess + 0.2 * period) + 1
            lo, hi = max(lo, start), min(hi, end)
            if hi <= lo or (direction > 0 and lo <= m) or (direction < 0 and hi > m):
                break
            m = lo + int(np.argmax(x[lo:hi]))
            out.append(m)
    return sorted(out)


def change_gender(
    audio: np.ndarray,
    sample_rate: int,
    *,
    floor: float,
    ceiling: float,
    formant_ratio: float = 1.0,
    pitch_ratio: float = 1.0,
    range_factor: float = 1.0,
    duration: float = 1.0,
) -> np.ndarray:
    """``audio`` with formants times ``formant_ratio``, pitch median times
    ``pitch_ratio``, pitch excursions times ``range_factor`` (in semitones,
    around the median) and length times ``duration``; float32 at ``sample_rate``.
    Where no pitch is found (a whisper, noise) only formants and length change."""
    x = np.asarray(audio, dtype=np.float64)
    if formant_ratio != 1.0:
        # played at sample_rate, a sound resampled to sample_rate / k is k times higher and 1/k as long
        x = resample(x.astype(np.float32), sample_rate, sample_rate / formant_ratio).astype(np.float64)
        duration *= formant_ratio
    pitch = track(x, sample_rate, floor, ceiling)
    voiced_f0 = pitch.f0[pitch.f0 > 0]
    median = float(np.median(voiced_f0)) if len(voiced_f0) else 0.0
    target = median / formant_ratio * pitch_ratio  # the resampling moved the pitch too: undo that
    f0 = contour(pitch, len(x), sample_rate)
    marks, voiced = pitch_marks(x, sample_rate, f0)
    if not len(marks):
        return x.astype(np.float32)
    left = np.diff(np.concatenate([[0], marks]))
    right = np.diff(np.concatenate([marks, [len(x)]]))
    cap = int(sample_rate / floor)
    left, right = np.clip(left, 1, cap), np.clip(right, 1, cap)

    n_out = int(round(len(x) * duration))
    padded = np.concatenate([np.zeros(cap), x, np.zeros(cap)])
    out = np.zeros(n_out + 2 * cap + 2)
    rng = np.random.default_rng(SEED)
    t = float(marks[0]) * duration
    while t < n_out:
        source = t / duration
        i = int(np.searchsorted(marks, source))
        if i == len(marks) or (i > 0 and source - marks[i - 1] < marks[i] - source):
            i -= 1
        m, lp, rp = int(marks[i]), int(left[i]), int(right[i])
        grain = padded[cap + m - lp : cap + m + rp] * _window(lp, rp)
        at = int(round(t))
        out[cap + at - lp : cap + at + rp] += grain
        f = float(f0[min(m, len(f0) - 1)])
        if voiced[i] and median > 0 and f > 0:
            new_f = target * (f / median) ** range_factor
            step = sample_rate / float(np.clip(new_f, floor / 2, ceiling * 2))
        else:
            step = 0.5 * (lp + rp) * (0.75 + 0.5 * rng.random())
        t += max(step, 1.0)
    return out[cap : cap + n_out].astype(np.float32)


_windows: dict[tuple[int, int], np.ndarray] = {}


def _window(lp: int, rp: int) -> np.ndarray:
    """A Hann window rising over ``lp`` samples to the mark and falling over ``rp`` after it."""
    w = _windows.get((lp, rp))
    if w is None:
        rise = 0.5 - 0.5 * np.cos(np.pi * np.arange(lp) / lp)
        fall = 0.5 + 0.5 * np.cos(np.pi * np.arange(rp) / rp)
        w = np.concatenate([rise, fall])
        if len(_windows) < 4096:  # periods repeat; the cache stays small whatever the input
            _windows[(lp, rp)] = w
    return w

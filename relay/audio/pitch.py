"""Pitch of speech, measured the same way on both ends and on any CPU.

Boersma's autocorrelation method (1993), the one Praat's "To Pitch (ac)"
implements and phoneticians use, written in NumPy so that an arm64 edge,
which has no Praat wheel, measures exactly as an x86 ground does: per
10 ms frame a Hann-windowed autocorrelation divided by the window's own
(which makes a periodic signal score near 1 at its period), up to 15
candidates per frame with an octave cost that prefers the higher of two
equally good periods, an "unvoiced" candidate scored from the frame's
loudness, and a Viterbi path through them that charges for octave jumps and
voicing changes. Praat's parameters are kept (voicing 0.45, silence 0.03,
octave 0.01, octave jump 0.35, voiced-unvoiced 0.14), and
``tests/test_pitch.py`` checks the medians and ranges against Praat's own on
recorded speech.

The ground measures speakers with it for their voice profiles; the edge
measures its TTS voices with it, so the two can be compared in semitones; and
:mod:`relay.audio.psola` places its pitch marks by it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from relay.audio.io import SAMPLE_RATE

TIME_STEP = 0.01
MAX_CANDIDATES = 15
SILENCE, VOICING, OCTAVE_COST, OCTAVE_JUMP, VOICED_UNVOICED = 0.03, 0.45, 0.01, 0.35, 0.14
PERIODS_PER_WINDOW = 3.0


@dataclass(frozen=True, slots=True)
class PitchTrack:
    """F0 per frame (Hz, 0 where unvoiced); frame ``i`` is centred at ``start + i * step`` seconds."""

    f0: np.ndarray
    start: float
    step: float

    @property
    def times(self) -> np.ndarray:
        return self.start + self.step * np.arange(len(self.f0))

    def at(self, seconds: np.ndarray) -> np.ndarray:
        """F0 of the frame nearest each time (0: unvoiced or outside the track)."""
        if not len(self.f0):
            return np.zeros(np.shape(seconds))
        i = np.rint((np.asarray(seconds) - self.start) / self.step).astype(np.int64)
        inside = (i >= 0) & (i < len(self.f0))
        return np.where(inside, self.f0[np.clip(i, 0, len(self.f0) - 1)], 0.0)


CHUNK = 1024  # frames analysed at once: memory stays bounded on an hour of audio


def track(
    audio: np.ndarray,
    sample_rate: int,
    floor: float = 75.0,
    ceiling: float = 600.0,
    time_step: float = TIME_STEP,
) -> PitchTrack:
    """The pitch contour of ``audio``: Boersma's autocorrelation method, Praat's defaults."""
    x = np.asarray(audio, dtype=np.float64)
    width = int(round(PERIODS_PER_WINDOW / floor * sample_rate))
    hop = max(1, int(round(time_step * sample_rate)))
    if len(x) < width or floor <= 0 or ceiling <= floor:
        return PitchTrack(np.zeros(0), 0.0, time_step)
    n = 1 + (len(x) - width) // hop
    first = (len(x) - ((n - 1) * hop + width)) // 2  # frames centred in the signal, as Praat does
    global_peak = float(np.max(np.abs(x - x.mean()))) or 1.0
    window = np.hanning(width + 2)[1:-1]
    nfft = 1 << int(np.ceil(np.log2(width * 1.5)))
    rw = np.fft.irfft(np.abs(np.fft.rfft(window, nfft)) ** 2, nfft)
    min_lag = max(2, int(np.floor(sample_rate / ceiling)))
    max_lag = min(int(np.ceil(sample_rate / floor)), width // 2 - 1)
    lags = np.arange(min_lag - 1, max_lag + 2)
    freqs, strengths = [], []
    for c in range(0, n, CHUNK):
        starts = first + hop * np.arange(c, min(n, c + CHUNK))
        frames = x[starts[:, None] + np.arange(width)[None, :]]
        f, s = _candidates(frames, window, rw, lags, nfft, global_peak, sample_rate, ceiling)
        freqs.append(f)
        strengths.append(s)
    f0 = _viterbi(np.concatenate(freqs), np.concatenate(strengths), TIME_STEP / time_step)
    return PitchTrack(f0, (first + width / 2) / sample_rate, hop / sample_rate)


def _candidates(
    frames: np.ndarray,
    window: np.ndarray,
    rw: np.ndarray,
    lags: np.ndarray,
    nfft: int,
    global_peak: float,
    sample_rate: int,
    ceiling: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Each frame's candidates: (frequencies, 0 for unvoiced; strengths), unvoiced first."""
    frames = (frames - frames.mean(axis=1, keepdims=True)) * window
    # Praat's intensity: the windowed frame's peak within half the longest period of its centre
    half, centre = int(lags[-1]) // 2, len(window) // 2
    local_peak = np.max(np.abs(frames[:, centre - half : centre + half + 1]), axis=1)
    spectrum = np.fft.rfft(frames, nfft)
    r = np.fft.irfft(spectrum.real**2 + spectrum.imag**2, nfft)
    energy = r[:, :1]
    with np.errstate(divide="ignore", invalid="ignore"):
        norm = np.where(energy > 0, r[:, lags] / energy, 0.0) / (rw[lags] / rw[0])

    # local maxima inside [min_lag, max_lag], refined by a parabola through the three points
    mid, left, right = norm[:, 1:-1], norm[:, :-2], norm[:, 2:]
    peak = (mid > left) & (mid >= right) & (mid > 0.5 * VOICING)
    denom = left - 2 * mid + right
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where(denom < 0, 0.5 * (left - right) / np.where(denom < 0, denom, -1.0), 0.0)
    shift = np.clip(shift, -0.5, 0.5)
    value = mid - 0.25 * (left - right) * shift
    value = np.where(value > 1.0, 1.0 / np.maximum(value, 1.0), value)  # Praat's guard: over-interpolated peaks
    freq = sample_rate / (lags[1:-1][None, :] + shift)
    strength = np.where(peak, value - OCTAVE_COST * np.log2(ceiling / freq), -np.inf)

    k = min(MAX_CANDIDATES - 1, strength.shape[1])
    best = np.argpartition(-strength, k - 1, axis=1)[:, :k]
    cand_strength = np.take_along_axis(strength, best, axis=1)
    cand_freq = np.where(np.isfinite(cand_strength), np.take_along_axis(freq, best, axis=1), 0.0)
    unvoiced = VOICING + np.maximum(0.0, 2.0 - (local_peak / global_peak) / (SILENCE / (1.0 + VOICING)))
    return (
        np.concatenate([np.zeros((len(frames), 1)), cand_freq], axis=1),
        np.concatenate([unvoiced[:, None], cand_strength], axis=1),
    )


def _viterbi(freq: np.ndarray, strength: np.ndarray, step_correction: float) -> np.ndarray:
    """The best path through each frame's candidates: strengths summed, less octave-jump and voicing costs."""
    n, k = freq.shape
    voiced = freq > 0
    logf = np.log2(np.where(voiced, freq, 1.0))
    score = strength[0].copy()
    back = np.zeros((n, k), dtype=np.int64)
    for i in range(1, n):
        both = voiced[i - 1][:, None] & voiced[i][None, :]
        change = voiced[i - 1][:, None] != voiced[i][None, :]
        cost = np.where(both, OCTAVE_JUMP * np.abs(logf[i - 1][:, None] - logf[i][None, :]), 0.0)
        cost = (cost + np.where(change, VOICED_UNVOICED, 0.0)) * step_correction
        total = score[:, None] - cost
        back[i] = np.argmax(total, axis=0)
        score = total[back[i], np.arange(k)] + strength[i]
    path = np.empty(n, dtype=np.int64)
    path[-1] = int(np.argmax(score))
    for i in range(n - 1, 0, -1):
        path[i - 1] = back[i, path[i]]
    return freq[np.arange(n), path]


def pitch_stats(audio: np.ndarray, floor: float = 60.0, ceiling: float = 500.0) -> tuple[float, float]:
    """(median F0 in Hz, 10-90 % range in semitones) of 16 kHz audio; (0, 0) when nothing is voiced."""
    if len(audio) < SAMPLE_RATE // 10:
        return 0.0, 0.0
    f0 = track(audio, SAMPLE_RATE, floor, ceiling).f0
    voiced = f0[f0 > 0]
    if len(voiced) < 10:
        return 0.0, 0.0
    lo, med, hi = np.percentile(voiced, [10, 50, 90])
    return float(med), float(12 * np.log2(hi / lo))

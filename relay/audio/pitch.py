"""Pitch statistics of a voice, measured the same way on both ends.

Praat's autocorrelation pitch tracker (via parselmouth), the phoneticians'
standard: fast and robust on speech. The ground measures speakers with it
for their voice profiles; the edge measures its TTS voices with it, so the
two can be compared in semitones.
"""

from __future__ import annotations

import numpy as np

from relay.audio.io import SAMPLE_RATE


def pitch_stats(audio: np.ndarray, floor: float = 60.0, ceiling: float = 500.0) -> tuple[float, float]:
    """(median F0 in Hz, 10-90 % range in semitones) of 16 kHz audio; (0, 0) when nothing is voiced."""
    if len(audio) < SAMPLE_RATE // 10:
        return 0.0, 0.0
    import parselmouth

    sound = parselmouth.Sound(np.asarray(audio, dtype=np.float64), sampling_frequency=SAMPLE_RATE)
    f0 = sound.to_pitch(time_step=0.01, pitch_floor=floor, pitch_ceiling=ceiling).selected_array["frequency"]
    voiced = f0[f0 > 0]
    if len(voiced) < 10:
        return 0.0, 0.0
    lo, med, hi = np.percentile(voiced, [10, 50, 90])
    return float(med), float(12 * np.log2(hi / lo))

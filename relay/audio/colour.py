"""A voice's colour: its long-term average spectrum in 16 bands.

Two recordings of one person sound alike partly because of the vocal tract
and partly because of everything between the mouth and the listener (room,
microphone, codec); a TTS voice has its own studio colour. The ground
measures the speaker's long-term spectrum over their speech (16 bands on the
mel scale, in dB relative to the band mean, so loudness does not enter), the
profile carries it in 16 bytes, and the edge equalises each synthesized
phrase by the difference between the speaker's shape and the voice's own
(measured on the voice bank's passage), bounded so a few bands cannot turn
speech into a whistle. Shared by both sides so both measure alike.

An equaliser is the floor of voice likeness, not the goal: it
moves the long-term spectrum only, not the formants' movements or the pitch.
Sixteen bands: 8, 16, 32 and 64 measured 0.27, 0.30, 0.34 and 0.35 on the
independent judge's normalised scale for the LJSpeech reader, and 32 or 64
gained nothing on the call's two speakers (benchmarks/likeness.py).
"""

from __future__ import annotations

import numpy as np

from relay.format.profile import COLOUR_BYTES, COLOUR_STEP_DB

BANDS = COLOUR_BYTES
LOW_HZ, HIGH_HZ = 60.0, 7600.0  # inside a 16 kHz recording's band
STEP_DB = COLOUR_STEP_DB  # wire resolution
MAX_GAIN_DB = 12.0  # the equaliser never lifts or cuts a band by more
FFT = 512
TAPS = 255  # linear-phase FIR; 16 ms at 16 kHz, shorter than a phoneme's onset
# A narrowband channel: the shape falls this much from one band to the next, at 2 kHz or above
# (the telephone call: 30 dB between 3.5 and 4.2 kHz; wideband speech falls under 10 dB a band).
CLIFF_DB, CLIFF_FROM_HZ = 20.0, 2000.0
STOP_DB = 40.0  # what the equaliser leaves above a band-limited speaker's channel


def _mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def band_edges() -> np.ndarray:
    """``BANDS + 1`` edges in Hz, equally spaced in mel."""
    return _hz(np.linspace(_mel(LOW_HZ), _mel(HIGH_HZ), BANDS + 1))


def band_centres() -> np.ndarray:
    edges = band_edges()
    return np.sqrt(edges[:-1] * edges[1:])


def spectrum_shape(audio: np.ndarray, sample_rate: int) -> np.ndarray | None:
    """Mean power per band (dB, mean over bands removed) of the loud frames of
    ``audio``: the 40 % loudest frames that are also within 30 dB of the
    loudest, i.e. speech rather than the pauses' noise. None when there is
    too little audio (under 0.25 s of such frames)."""
    x = np.asarray(audio, dtype=np.float32)
    hop = FFT // 2
    n = (len(x) - FFT) // hop + 1
    if n < 1:
        return None
    window = np.hanning(FFT).astype(np.float32)
    starts = [(a, min(n, a + 2000)) for a in range(0, n, 2000)]  # blocks of frames

    def frames(a: int, b: int) -> np.ndarray:
        return x[np.arange(a, b)[:, None] * hop + np.arange(FFT)[None, :]] * window

    # frame energies first (Parseval: the windowed frame's energy), then the loud frames' spectra
    # summed block by block, so memory does not grow with the recording
    energy = np.concatenate([np.einsum("ij,ij->i", f, f, dtype=np.float64) for f in (frames(a, b) for a, b in starts)])
    db = 10 * np.log10(energy + 1e-12)
    loud = (db >= np.percentile(db, 60)) & (db >= db.max() - 30.0)
    if loud.sum() * hop / sample_rate < 0.25:
        return None
    total = np.zeros(FFT // 2 + 1)
    for a, b in starts:
        keep = loud[a:b]
        if keep.any():
            total += (np.abs(np.fft.rfft(frames(a, b)[keep], axis=1)) ** 2).sum(axis=0)
    power = total / loud.sum()
    freqs = np.fft.rfftfreq(FFT, 1.0 / sample_rate)
    edges = band_edges()
    bands = np.array([power[(freqs >= lo) & (freqs < hi)].mean() if np.any((freqs >= lo) & (freqs < hi))
                      else np.interp((lo + hi) / 2, freqs, power) for lo, hi in zip(edges[:-1], edges[1:])])
    shape = 10 * np.log10(bands + 1e-12)
    return shape - shape.mean()


def to_bytes(shape: np.ndarray) -> bytes:
    """16 signed bytes, ``STEP_DB`` each."""
    q = np.clip(np.round(np.asarray(shape, dtype=np.float64) / STEP_DB), -127, 127).astype(np.int8)
    return q.tobytes()


def from_bytes(data: bytes) -> np.ndarray:
    if len(data) != BANDS:
        raise ValueError(f"a voice colour is {BANDS} bytes, got {len(data)}")
    return np.frombuffer(data, dtype=np.int8).astype(np.float64) * STEP_DB


def bandwidth(shape: np.ndarray) -> float | None:
    """Where a narrowband channel (a telephone line, a low-rate codec) cuts the
    speaker's speech off: the upper edge of the band after which the shape
    falls :data:`CLIFF_DB` or more at once, at 2 kHz or above; None for
    wideband speech, whose spectrum slopes down without a cliff."""
    edges = band_edges()
    values = np.asarray(shape, dtype=np.float64)
    for i in range(len(values) - 1):
        if edges[i + 1] >= CLIFF_FROM_HZ and values[i] - values[i + 1] >= CLIFF_DB:
            return float(edges[i + 1])
    return None


def equaliser_gains(speaker: np.ndarray, voice: np.ndarray, top_hz: float | None = None) -> np.ndarray:
    """Per-band gain (dB) that gives ``voice``'s shape ``speaker``'s, bounded,
    mean zero (loudness is the level's business, not the colour's). With
    ``top_hz`` (a band-limited speaker, the voice low-passed there) only the
    bands below it are matched and the mean is taken over them."""
    gains = np.clip(np.asarray(speaker) - np.asarray(voice), -MAX_GAIN_DB, MAX_GAIN_DB)
    if top_hz is None:
        return gains - gains.mean()
    inside = band_centres() < top_hz
    gains = gains - gains[inside].mean()
    return np.where(inside, gains, 0.0)


def equalise(audio: np.ndarray, sample_rate: int, gains_db: np.ndarray, top_hz: float | None = None) -> np.ndarray:
    """``audio`` through a linear-phase FIR with ``gains_db`` at the band
    centres (interpolated in log frequency, flat beyond the outer bands), its
    RMS kept, and with ``top_hz`` nothing above it (:data:`STOP_DB` down: the
    speaker's channel ends there). The delay of the filter is removed, so
    timing is unchanged."""
    from scipy.signal import firwin2, oaconvolve

    x = np.asarray(audio, dtype=np.float32)
    if len(x) == 0 or (not np.any(np.asarray(gains_db)) and top_hz is None):
        return x
    nyquist = sample_rate / 2.0
    centres = band_centres()
    grid = np.linspace(0.0, nyquist, 257)
    logf = np.log(np.clip(grid, centres[0], centres[-1]))
    gain = 10.0 ** (np.interp(logf, np.log(centres), gains_db) / 20.0)
    if top_hz is not None:
        gain = np.where(grid <= top_hz, gain, 10.0 ** (-STOP_DB / 20.0))
    taps = firwin2(TAPS, grid / nyquist, gain)
    y = oaconvolve(x, taps.astype(np.float32), mode="full")[TAPS // 2 : TAPS // 2 + len(x)]
    rms_in, rms_out = float(np.sqrt(np.mean(x**2))), float(np.sqrt(np.mean(y**2)))
    if rms_out > 0:
        y = y * (rms_in / rms_out)
    peak = float(np.max(np.abs(y))) if len(y) else 0.0
    if peak > 0.99:
        y = y * (0.99 / peak)
    return y.astype(np.float32)

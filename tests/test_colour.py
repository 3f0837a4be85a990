"""A voice's colour (relay.audio.colour) on real recordings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from relay.audio.colour import MAX_GAIN_DB, band_centres, bandwidth, equalise, equaliser_gains, spectrum_shape
from relay.audio.io import load_audio

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


def test_one_reader_has_one_colour_and_another_recording_another():
    clips = sorted((DATA / "ljspeech").glob("*.flac"))
    first = spectrum_shape(np.concatenate([load_audio(c) for c in clips[:8]]), 16000)
    second = spectrum_shape(np.concatenate([load_audio(c) for c in clips[8:]]), 16000)
    jfk = spectrum_shape(load_audio(DATA / "whisper" / "jfk.flac"), 16000)
    assert first is not None and second is not None and jfk is not None
    assert abs(float(first.mean())) < 1e-6  # loudness is not colour
    assert _distance(first, second) < 2.0  # the same reader and microphone, other sentences
    assert _distance(first, jfk) > 2 * _distance(first, second)


def test_equaliser_gives_one_recording_the_colour_of_another_and_keeps_its_timing():
    clips = sorted((DATA / "ljspeech").glob("*.flac"))
    lj = load_audio(clips[0])
    jfk = load_audio(DATA / "whisper" / "jfk.flac")
    target, own = spectrum_shape(jfk, 16000), spectrum_shape(lj, 16000)
    out = equalise(lj, 16000, equaliser_gains(target, own))
    after = spectrum_shape(out, 16000)
    assert _distance(after, target) < 0.5 * _distance(own, target)
    assert len(out) == len(lj)
    assert np.sqrt(np.mean(out**2)) == pytest.approx(np.sqrt(np.mean(lj**2)), rel=0.02)
    # no delay: the equalised signal lines up with the original
    lag = int(np.argmax(np.correlate(out[8000:24000], lj[8000 - 200 : 24000 + 200], mode="valid"))) - 200
    assert abs(lag) <= 2


def test_gains_are_bounded_and_silence_has_no_colour():
    gains = equaliser_gains(np.full(16, 40.0) * np.sign(np.arange(16) - 7.5), np.zeros(16))
    assert np.all(np.abs(gains) <= MAX_GAIN_DB) and abs(float(gains.mean())) < 1e-9  # +-12, then centred
    assert spectrum_shape(np.zeros(100, np.float32), 16000) is None  # shorter than one frame


def test_a_telephone_speaker_is_spoken_through_a_telephone_band():
    """The call carries nothing above ~3.9 kHz (a 30 dB cliff); read speech and the
    far-field meetings slope down without one. The voice is cut there too, and
    only the bands below are matched."""
    call = spectrum_shape(load_audio(DATA / "pyannote" / "sample.wav"), 16000)
    assert call is not None and 3400 < (bandwidth(call) or 0) < 4300
    for wide in (DATA / "ljspeech" / "LJ001-0001.flac", DATA / "pyannote" / "dev00.wav", DATA / "whisper" / "jfk.flac"):
        shape = spectrum_shape(load_audio(wide), 16000)
        assert shape is not None and bandwidth(shape) is None, wide
    lj = load_audio(sorted((DATA / "ljspeech").glob("*.flac"))[0])
    own = spectrum_shape(lj, 16000)
    top = bandwidth(call)
    gains = equaliser_gains(call, own, top)
    assert np.all(gains[band_centres() > top] == 0) and abs(float(gains[band_centres() < top].mean())) < 1e-9
    out = equalise(lj, 16000, gains, top)
    after = spectrum_shape(out, 16000)
    inside = band_centres() < top
    assert after[~inside].max() < after[inside].min()  # the cliff is copied, not merely bounded at 12 dB
    assert _distance(after[inside] - after[inside].mean(), call[inside] - call[inside].mean()) < _distance(
        own[inside] - own[inside].mean(), call[inside] - call[inside].mean())

"""Audio -> bundle -> speech -> transcript again: the round trip a listener hears."""

from __future__ import annotations

import time

import jiwer
import numpy as np
import pytest

from edge.rehydrate import phrases, rehydrate, render
from relay.audio.io import SAMPLE_RATE, resample
from relay.format.wire import decode_bundle

pytestmark = pytest.mark.slow  # loads the speech models


def test_rehydrated_speech_says_what_the_bundle_says(lj_encoded, piper, base_listener, normalize):
    """dWER: the rehydrated speech, transcribed by Whisper base, against the
    transcript in the bundle, pooled over the 16 LJSpeech clips: <= 10 points;
    every clip within 5 % of the original's duration."""
    sent, heard, drift = [], [], []
    for _, _, res in lj_encoded:
        bundle = decode_bundle(res.data)
        audio, _ = render(bundle, piper)
        back = base_listener.transcribe(resample(audio, piper.sample_rate, SAMPLE_RATE))
        sent.append(normalize(bundle.text()))
        heard.append(normalize(" ".join(s.text for s in back.segments)))
        drift.append(len(audio) / piper.sample_rate / res.duration - 1)
    dwer = jiwer.wer(sent, heard)
    print(f"dWER {dwer:.2%}; duration error max {max(map(abs, drift)):.1%}")
    assert dwer <= 0.10
    assert max(map(abs, drift)) <= 0.05


def test_segments_keep_their_original_start(lj_encoded, piper):
    _, _, res = max(lj_encoded, key=lambda item: len(item[2].bundle.segments))
    bundle = decode_bundle(res.data)
    parts = list(rehydrate(bundle, piper))
    assert parts and all(p.audio.size > 0 for p in parts)
    for p in parts:
        assert p.start >= p.segment.start - 1e-9
    # nothing overlaps, and the first phrase starts where the speech started
    assert all(a.end <= b.start + 1e-6 for a, b in zip(parts, parts[1:]))
    assert abs(parts[0].start - bundle.segments[0].start) < 1e-6


def test_pauses_inside_a_segment_are_kept(lj_encoded, piper):
    """Readers pause mid-sentence; the rehydrated speech pauses there too."""
    split = []
    for _, _, res in lj_encoded:
        bundle = decode_bundle(res.data)
        if sum(len(phrases(seg)) for seg in bundle.segments) > len(bundle.segments):
            split.append(bundle)
    assert split, "no clip has a pause inside a Whisper segment"
    sr = piper.sample_rate
    for bundle in split[:2]:
        audio, parts = render(bundle, piper)
        gaps = [(a, b) for a, b in zip(parts, parts[1:]) if b.start - a.end > 0.2]
        assert gaps
        for a, b in gaps:  # silence between phrases, where the reader paused
            gap = audio[int(a.end * sr) + 50 : int(b.start * sr) - 50]
            assert np.max(np.abs(gap)) < 0.02


def test_playback_starts_before_the_bundle_is_spoken(lj_encoded, piper):
    """Streaming: the first phrase reaches the output before the last is synthesized,
    and the output carries the timeline (pauses included) from the first phrase on."""
    from edge.playback import RecordingOutput, play

    _, _, res = max(lj_encoded, key=lambda item: sum(len(phrases(s)) for s in item[2].bundle.segments))
    bundle = decode_bundle(res.data)
    made: list[float] = []

    def timed():
        for part in rehydrate(bundle, piper):
            made.append(time.perf_counter())
            yield part

    out = RecordingOutput(piper.sample_rate)
    report = play(timed(), out)
    assert report.phrases == len(made) >= 2
    assert out.first_write < made[-1]
    parts = report.segments
    assert abs(len(out.audio) / piper.sample_rate - (parts[-1].end - parts[0].start)) < 0.01
    assert report.first_sound_s is not None and report.first_sound_s < report.seconds


def test_playback_raises_what_synthesis_raised(piper):
    from edge.playback import RecordingOutput, play
    from relay.errors import ModelError

    def failing():
        yield from ()
        raise ModelError("voice model vanished")

    with pytest.raises(ModelError, match="vanished"):
        play(failing(), RecordingOutput(piper.sample_rate))


def test_no_output_device_is_one_clear_error():
    sd = pytest.importorskip("sounddevice")
    from edge.playback import DeviceOutput, PlaybackError

    if any(d["max_output_channels"] > 0 for d in sd.query_devices()):
        pytest.skip("this machine has an audio output")
    with pytest.raises(PlaybackError, match="no usable audio output"):
        DeviceOutput(22050)

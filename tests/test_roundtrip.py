"""Audio -> bundle -> speech -> transcript again: the round trip a listener hears."""

from __future__ import annotations

import jiwer
import numpy as np

from edge.rehydrate import phrases, rehydrate, render
from relay.audio import SAMPLE_RATE, resample
from relay.wire import decode_bundle


def test_rehydrated_speech_says_what_the_bundle_says(lj_encoded, piper, base_listener, normalize):
    """dWER: the rehydrated speech, transcribed by Whisper base, against the
    transcript in the bundle, pooled over the 16 LJSpeech clips: <= 10 points."""
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
    assert max(map(abs, drift)) <= 0.10


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

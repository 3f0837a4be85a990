"""Two people at once: the edge speaks overlapped phrases together (issue 29).

Real synthesis (espeak-ng, fast), real mixing and playback into a recording
output; no models."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from edge.playback import RecordingOutput, play
from edge.rehydrate import rehydrate, render
from relay.format.bundle import Bundle, Segment, SourceInfo, Speaker, Word
from relay.voice.engines.espeak import EspeakEngine

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs Debian's espeak-ng")


def _seg(speaker: int, text: str, start: float, end: float) -> Segment:
    words = text.split()
    step = (end - start) / len(words)
    ws = tuple(Word(w, round(start + i * step, 3), round(start + (i + 1) * step, 3)) for i, w in enumerate(words))
    return Segment(speaker, ws[0].start, ws[-1].end, text, ws)


def _bundle(*segments: Segment, duration: float = 8.0) -> Bundle:
    return Bundle(SourceInfo("overlap", duration, "en"), [Speaker("S1"), Speaker("S2")], list(segments))


@pytest.fixture(scope="module")
def voices():
    binary = shutil.which("espeak-ng")
    return {0: EspeakEngine(binary, "en-us", "m3"), 1: EspeakEngine(binary, "en-us", "f2")}


def _loud(audio: np.ndarray, sr: int, a: float, b: float) -> float:
    piece = audio[int(a * sr) : int(b * sr)]
    return float(np.sqrt(np.mean(piece**2))) if piece.size else 0.0


def test_a_second_voice_is_spoken_at_the_same_time(voices):
    bundle = _bundle(_seg(0, "I think we should leave the harbour before the weather turns", 0.5, 4.0),
                     _seg(1, "yes agreed", 2.0, 2.8),  # said while the first was still talking
                     _seg(0, "then we wait", 5.0, 6.0))
    parts = list(rehydrate(bundle, voices))
    assert len(parts) == 2  # the overlapped pair is one part, mixed
    first = parts[0]
    assert [j.segment.speaker for j in first.joined] == [1]
    assert abs(first.joined[0].start - 2.0) < 1e-6  # at its own time, not pushed after the first phrase
    sr = first.sample_rate
    alone = first.audio.copy()
    inner = first.joined[0]
    i = int(round((inner.start - first.start) * sr))
    alone[i : i + len(inner.audio)] -= inner.audio  # take the second voice out again
    assert _loud(first.audio - alone, sr, inner.start - first.start, inner.end - first.start) > 0.01
    assert parts[1].start >= first.end - 1e-6  # what follows never overlaps


def test_phrases_that_did_not_overlap_are_never_spoken_over_each_other(voices):
    # the first phrase is given far too little time, so it runs long; the next speaker waits for it
    bundle = _bundle(_seg(0, "a rather long sentence squeezed into very little time", 0.5, 1.5),
                     _seg(1, "my turn now", 1.6, 2.4))
    parts = list(rehydrate(bundle, voices))
    assert len(parts) == 2 and not parts[0].joined
    assert parts[1].start >= parts[0].end - 1e-6


def test_overlapped_speech_plays_and_renders_on_the_original_timeline(voices):
    bundle = _bundle(_seg(0, "the engine room reports all clear", 0.5, 3.0),
                     _seg(1, "copy that", 1.5, 2.2), _seg(1, "over", 4.0, 4.4), duration=6.0)
    audio, parts = render(bundle, voices)
    sr = parts[0].sample_rate
    assert len(audio) == pytest.approx(6.0 * sr, abs=sr * 0.01)
    out = RecordingOutput(sr)
    report = play(iter(parts), out, from_start=True, until=6.0)
    played = out.audio
    assert report.phrases == len(parts) == 2
    assert len(played) == pytest.approx(len(audio), abs=2)
    n = min(len(played), len(audio))
    assert np.allclose(played[:n], audio[:n], atol=1e-6)  # the player writes what the file holds

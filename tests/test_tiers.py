"""Tiers on real speech: hybrid keeps text where Whisper is sure and sends
audio where it is not or where there is no speech; a forced audio tier sends
every stretch of sound; a budget picks the richest tier that fits; the edge
plays clips on the same timeline as synthesised phrases."""

from __future__ import annotations

import jiwer
import numpy as np
import pytest
from conftest import encoder, shared

from ground.tiers import RICHNESS
from relay.audio.io import SAMPLE_RATE, load_audio, resample
from relay.format.wire import decode_bundle

pytestmark = pytest.mark.slow  # loads the speech models

JINGLE_HZ = 392.0  # G4: the jingle's fundamental


def jingle(seconds: float) -> np.ndarray:
    """A synthesised three-note chime with harmonics: shared/ holds no music,
    and what matters is that it is loud, tonal and not speech."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    notes = np.array([JINGLE_HZ, JINGLE_HZ * 1.26, JINGLE_HZ * 1.5])
    f = notes[np.minimum((t / seconds * 3).astype(int), 2)]
    f[: len(f) // 3] = JINGLE_HZ  # first and longest-lasting note: G4
    tone = sum(np.sin(2 * np.pi * k * np.cumsum(f) / SAMPLE_RATE) / k for k in (1, 2, 3))
    return (0.2 * tone * np.minimum(1, np.minimum(t, seconds - t) / 0.05)).astype(np.float32)


@pytest.fixture(scope="module")
def program(ljspeech):
    """Speech, a jingle, speech: (audio, jingle span, reference text)."""
    (a, ref_a), (b, ref_b) = [(load_audio(p), r) for p, r in ljspeech[:2]]
    gap = np.zeros(SAMPLE_RATE, np.float32)
    start = (len(a) + len(gap)) / SAMPLE_RATE
    audio = np.concatenate([a, gap, jingle(3.0), gap, b])
    return audio, (start, start + 3.0), f"{ref_a} {ref_b}"


def _covered(span: tuple[float, float], clips) -> float:
    a, b = span
    return sum(max(0.0, min(b, c.end) - max(a, c.start)) for c in clips) / (b - a)


def test_hybrid_sends_the_jingle_as_audio_and_the_speech_as_text(program, tiny, piper, normalize):
    from edge.rehydrate import render

    audio, span, ref = program
    res = encoder(tiny, tier="hybrid", codec="opus-6k").encode(audio, "news")
    bundle = decode_bundle(res.data)
    music = [c for c in bundle.clips if c.reason == "non-speech"]
    assert _covered(span, music) >= 0.9, bundle.clips
    assert all(c.speaker is None for c in music)
    assert jiwer.wer(normalize(ref), normalize(bundle.text())) <= 0.1  # the speech stayed text
    words = [w for s in bundle.segments for w in s.words]
    assert not any(w.start < span[1] - 0.2 and w.end > span[0] + 0.2 for w in words)  # no word over the jingle
    all_audio = encoder(tiny, tier="opus-6k").encode(audio, "news")
    assert len(res.data) < 0.5 * len(all_audio.data)

    out, parts = render(bundle, piper)
    assert any(p.clip is not None for p in parts) and any(p.clip is None for p in parts)
    assert [p.start for p in parts] == sorted(p.start for p in parts)  # one timeline
    heard = resample(out, piper.sample_rate, SAMPLE_RATE)
    first_note = heard[int((span[0] + 0.1) * SAMPLE_RATE) : int((span[0] + 0.9) * SAMPLE_RATE)]
    spectrum = np.abs(np.fft.rfft(first_note * np.hanning(len(first_note))))
    peak = np.fft.rfftfreq(len(first_note), 1 / SAMPLE_RATE)[int(np.argmax(spectrum))]
    assert abs(peak - JINGLE_HZ) < 0.03 * JINGLE_HZ  # the jingle plays where it was


def test_hybrid_sends_doubtful_segments_as_audio(program, tiny):
    audio = program[0]
    text_only = encoder(tiny).encode(audio, "news")
    conf = text_only.transcript.confidences
    assert len(conf) >= 2 and min(conf) < max(conf)
    threshold = (min(conf) + max(conf)) / 2  # between the least and the most sure: some each way
    res = encoder(tiny, tier="hybrid", min_logprob=threshold).encode(audio, "news")
    doubtful = [s for s, c in zip(text_only.bundle.segments, conf) if c < threshold]
    sure = [s for s, c in zip(text_only.bundle.segments, conf) if c >= threshold]
    clips = [c for c in res.bundle.clips if c.reason == "low-confidence"]
    assert [s.text for s in res.bundle.segments] == [s.text for s in sure]
    for seg in doubtful:
        assert _covered((seg.start, seg.end), clips) == pytest.approx(1.0)
    assert all(c.codec == "codec2-3200" and c.speaker == 0 for c in clips)


@pytest.fixture(scope="module")
def call(base_listener, diarizer):
    """The two-speaker pyannote sample: audio, text-tier result."""
    from ground.diarize import DiarizationOptions

    audio = load_audio(shared("pyannote", "sample.wav"))
    two = DiarizationOptions(num_speakers=2)
    return audio, encoder(base_listener, diarizer).encode(audio, "call", speakers=two)


def test_forced_audio_tier_sends_every_speaker_as_coded_audio(call, codecs, base_listener, diarizer, piper, normalize):
    from edge.rehydrate import render
    from ground.diarize import DiarizationOptions

    audio, text = call
    two = DiarizationOptions(num_speakers=2)
    res = choose = encoder(base_listener, diarizer, codecs=codecs, tier="lyra-6000").encode(audio, "call", speakers=two)
    bundle = decode_bundle(res.data)
    assert bundle.segments == [] and choose.tier == "lyra-6000"
    assert {c.speaker for c in bundle.clips if c.reason == "forced"} == {0, 1}  # diarization kept per clip
    assert all(c.codec == "lyra-6000" for c in bundle.clips)
    coded = sum(c.duration for c in bundle.clips)
    speech = sum(s.duration for s in text.bundle.segments)
    assert speech <= coded + 0.5 and coded <= 0.85 * len(audio) / SAMPLE_RATE  # all the speech; not the silences
    assert 6000 <= len(res.data) * 8 / coded <= 6000 * 1.05  # Lyra's 6 kbit/s, and little else
    out, _ = render(bundle, piper, codecs=codecs)
    assert abs(len(out) / piper.sample_rate - len(audio) / SAMPLE_RATE) < 0.1
    heard = base_listener.transcribe(resample(out, piper.sample_rate, SAMPLE_RATE))
    dwer = jiwer.wer(normalize(text.bundle.text()), normalize(" ".join(s.text for s in heard.segments)))
    print(f"lyra-6000 call: {len(res.data)} bytes, dWER {dwer:.1%}")
    # relay bench measured 6 % for lyra-6000 on this narrowband call (lyra-3200: 17-28 % over runs,
    # whole file or clips alike: the codec, not the clipping); a broken path is near 100 %
    assert dwer <= 0.15


def test_budget_picks_the_richest_tier_that_fits(call, codecs, base_listener, diarizer):
    from ground.diarize import DiarizationOptions

    audio, _ = call
    duration = len(audio) / SAMPLE_RATE
    two = DiarizationOptions(num_speakers=2)
    for budget in (3000.0, 1000.0):
        res = encoder(base_listener, diarizer, codecs=codecs, budget=budget).encode(audio, "call", speakers=two)
        assert len(res.data) * 8 / duration <= budget, res.tried
        assert res.tier not in ("text", "hybrid")  # an audio tier fits these budgets
        richer = RICHNESS[: RICHNESS.index(res.tier)]
        assert all(res.tried[t] * 8 / duration > budget for t in richer if t in res.tried)
        print(f"budget {budget:.0f} bit/s: {res.tier}, tried {res.tried}")
    res = encoder(base_listener, codecs=codecs, budget=20).encode(audio, "call")
    assert res.tier == "text"  # text always goes, even over a budget nothing meets


def test_reference_clips_carry_each_speakers_own_voice_once(call, base_listener, diarizer, tmp_path):
    from edge.cast import reference_audio
    from ground.diarize import DiarizationOptions
    from relay.audio.speaker_embedder import SpeakerEmbedder
    from relay.profiles import ProfileStore

    audio, text = call
    two = DiarizationOptions(num_speakers=2)
    ground = ProfileStore(tmp_path / "ground.db")
    station = encoder(base_listener, diarizer, ground, reference_clips="opus-6k")
    res = station.encode(audio, "call", speakers=two)
    bundle = decode_bundle(res.data)
    profiles = [s.profile for s in bundle.speakers]
    assert len(profiles) == 2 and all(p is not None and p.reference_codec == "opus-6k" for p in profiles)
    extra = len(res.data) - len(text.data)
    assert sum(len(p.reference) for p in profiles) <= extra + 64  # the clips are what the bundle grew by
    assert all(len(p.reference) <= 5 * 6000 / 8 * 1.1 for p in profiles)  # <= 5 s at 6 kbit/s
    campplus = SpeakerEmbedder()
    clips = [reference_audio(p) for p in profiles]
    assert all(3.0 <= len(c) / SAMPLE_RATE <= 5.2 for c in clips)
    heard = [campplus.embed(c) for c in clips]
    for i, p in enumerate(profiles):  # each clip is the voice of its own speaker, not the other's
        assert p.similarity(heard[i]) > p.similarity(heard[1 - i]), i
    edge = ProfileStore(tmp_path / "edge.db")
    edge.put(profiles[0])
    assert edge.get(profiles[0].profile_id).reference == profiles[0].reference  # the edge keeps it
    station.commit(res, sent=True)
    again = station.encode(audio, "call", speakers=two)
    assert all(s.profile is None and s.profile_id for s in again.bundle.speakers)  # known now: by id, no clip
    assert len(again.data) < len(text.data)


def test_edge_daemon_speaks_a_codec_bundle_with_its_configured_models(tmp_path, tiny, codecs, normalize):
    """The edge's player, configured as in edge.toml ([codecs] lyra_models),
    speaks a Lyra bundle into its output folder as the daemon does."""
    from edge.player import Player
    from relay.config import load_edge
    from relay.link.signing import SigningKey

    audio = load_audio(shared("whisper", "jfk.flac"))
    res = encoder(tiny, codecs=codecs, tier="lyra-6000").encode(audio, "jfk")
    cfg = tmp_path / "edge.toml"
    cfg.write_text(f"""
[edge]
name = "ship"
state_dir = "{tmp_path}/edge"
output_dir = "{tmp_path}/played"
play = false
voice = "espeak:en-us+m3"
trusted_keys = ["{SigningKey.generate().public.text()}"]

[codecs]
lyra_models = "{codecs.lyra_models}"
""")
    (tmp_path / "edge").mkdir()
    (tmp_path / "played").mkdir()
    where = Player(load_edge(cfg)).speak(res.data, res.bundle.bundle_id, 0.0)
    played = load_audio(where)
    assert abs(len(played) - len(audio)) < 0.05 * SAMPLE_RATE
    heard = normalize(" ".join(s.text for s in tiny.transcribe(played).segments))
    said = normalize(" ".join(s.text for s in res.transcript.segments))
    assert jiwer.wer(said, heard) <= 0.1


def test_a_clip_no_codec_can_read_is_one_line():
    from edge.rehydrate import decode_clip
    from relay.errors import RelayError
    from relay.format.bundle import AudioClip

    with pytest.raises(RelayError, match=r"audio clip at 1.00 s \(opus-6k\) cannot be decoded"):
        decode_clip(AudioClip(1.0, 0.5, "opus-6k", b"\x05abc"), SAMPLE_RATE)

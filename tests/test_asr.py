"""Ground ASR quality on real speech, with the packaged models."""

from __future__ import annotations

import jiwer
import pytest

from relay.format.wire import decode_bundle
from tests.conftest import JFK_TEXT, encoder, shared

pytestmark = pytest.mark.slow  # loads the speech models


def test_ljspeech_wer_with_tiny_en(lj_encoded, normalize):
    refs = [normalize(ref) for _, ref, _ in lj_encoded]
    hyps = [normalize(res.bundle.text()) for _, _, res in lj_encoded]
    wer = jiwer.wer(refs, hyps)
    print(f"LJSpeech WER (tiny.en, 16 clips, pooled): {wer:.2%}")
    assert wer <= 0.08


def test_jfk_transcript_is_correct(tiny, normalize):
    res = encoder(tiny).encode_file(shared("whisper", "jfk.flac"))
    decoded = decode_bundle(res.data)
    assert normalize(decoded.text()) == normalize(JFK_TEXT)
    # word timings survive the bundle: "country" ends the speech near 10.5 s of 11 s
    last = decoded.segments[-1].words[-1]
    assert last.text.lower().startswith("country")
    assert 9.5 < last.end <= 11.0
    # the pauses are pauses, not stretched words: "Americans | ask not | what ... for you | ask what ..."
    words = [w for seg in decoded.segments for w in seg.words]
    pauses = [b.start - a.end for a, b in zip(words, words[1:])]
    assert sum(p >= 0.5 for p in pauses) >= 3, pauses
    assert max(w.end - w.start for w in words) < 0.8  # no word swallows a pause


def test_word_edges_lose_their_silence_only():
    """tighten_words on a synthetic frame mask: silence >= 0.15 s at an edge goes, less stays."""
    import numpy as np

    from ground.transcribe import Word, tighten_words

    loud = np.zeros(100, bool)
    loud[50:60] = True  # sound from 1.0 to 1.2 s
    long_start, short_start, quiet = Word("a", 0.4, 1.2), Word("b", 0.9, 1.2), Word("c", 1.5, 1.8)
    a, b, c = tighten_words((long_start, short_start, quiet), loud)
    assert a.start == 0.96 and a.end == 1.2  # 0.6 s of silence trimmed, 40 ms of onset kept
    assert b == short_start and c == quiet


def test_words_are_timed_in_order(lj_encoded):
    for _, _, res in lj_encoded:
        words = [w for seg in decode_bundle(res.data).segments for w in seg.words]
        assert words, "no words"
        assert all(a.end <= b.start + 1e-9 for a, b in zip(words, words[1:]))
        assert words[-1].end <= res.duration + 0.05


def test_transcript_tier_bits_per_second(lj_encoded):
    """Text + word timings (the transcript tier) <= 100 bit/s pooled over LJSpeech;
    the whole bundle, header and digest included, stays under 200 bit/s even on
    clips of 2 to 10 seconds."""
    from relay.format.wire import field_costs

    seconds = sum(res.duration for *_, res in lj_encoded)
    content = sum(c["text"] + c["timings"] for c in (field_costs(res.bundle) for *_, res in lj_encoded))
    whole = sum(len(res.data) for *_, res in lj_encoded)
    print(f"LJSpeech transcript tier {content * 8 / seconds:.1f} bit/s, whole bundles {whole * 8 / seconds:.1f} bit/s")
    assert content * 8 / seconds <= 100
    assert whole * 8 / seconds <= 200
    for path, _, res in lj_encoded:
        assert len(res.data) <= 40 + 25 * res.duration, f"{path.name}: {len(res.data)} bytes"


@pytest.mark.parametrize("model", ["tiny.en", "base"])
def test_packaged_models_resolve_offline(model, base_listener):
    from ground.models import resolve_whisper

    resolved = resolve_whisper(model)
    assert resolved.origin == "package"
    assert (resolved.path / "model.bin").is_file()


def test_joined_base_model_transcribes(base_listener, normalize):
    """The base model's two halves joined into one file load and transcribe correctly."""
    from relay.audio.io import load_audio

    t = base_listener.transcribe(load_audio(shared("whisper", "jfk.flac")))
    assert jiwer.wer(normalize(JFK_TEXT), normalize(" ".join(s.text for s in t.segments))) <= 0.05


def _transcode(src, dst, codec: str, rate: int) -> None:
    """Re-encode real speech into another container with PyAV's own FFmpeg."""
    import av
    import numpy as np

    from relay.audio.io import load_audio

    pcm = (load_audio(src) * 32767).astype(np.int16)[None, :]
    with av.open(str(dst), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = 16000
        resampler = av.AudioResampler(format=stream.format.name, layout="mono", rate=rate)
        for f in resampler.resample(frame):
            for packet in stream.encode(f):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


@pytest.mark.parametrize("ext, codec, rate", [("mp3", "libmp3lame", 44100), ("ogg", "libopus", 48000),
                                              ("m4a", "aac", 22050)])
def test_compressed_formats_transcribe(tiny, normalize, tmp_path, ext, codec, rate):
    clip = tmp_path / f"jfk.{ext}"
    _transcode(shared("whisper", "jfk.flac"), clip, codec, rate)
    res = encoder(tiny).encode_file(clip)
    assert abs(res.duration - 11.0) < 0.2
    assert jiwer.wer(normalize(JFK_TEXT), normalize(res.bundle.text())) <= 0.05

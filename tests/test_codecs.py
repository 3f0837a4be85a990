"""The audio tiers on real speech: each codes at its bit rate, decodes to
speech Whisper still understands, and fails in one line when it cannot run."""

from __future__ import annotations

import math

import jiwer
import numpy as np
import pytest

from relay.audio.codecs import CodecUnavailable, audio_tiers, get_codec, resolve_tier
from relay.audio.codecs.base import pack_bits, unpack_bits
from relay.audio.io import load_audio
from relay.config import Codecs

pytestmark = pytest.mark.slow  # loads the speech models

# Whisper base on 6 LJSpeech clips heard 5.5 % WER from the originals; codec2-700C
# measured 31-36 %, 1200 7-13 %, the rest 3-8 % over runs (int8 Whisper on two threads
# is not bit-exact run to run, and a word is 1 % here). The bounds leave room for the
# listener, not for a broken codec (which is near 100 %).
MAX_WER = {"codec2-700C": 0.45, "codec2-1200": 0.22}
DEFAULT_MAX_WER = 0.12


@pytest.fixture(scope="module")
def clips(ljspeech):
    return [(load_audio(path), ref) for path, ref in ljspeech[:6]]


@pytest.mark.parametrize("name", [t for t in audio_tiers() if not t.startswith("encodec")])
def test_tier_codes_at_its_rate_and_stays_intelligible(name, clips, codecs, base_listener, normalize):
    codec = get_codec(name, codecs)
    refs, heard, coded, seconds = [], [], 0, 0.0
    for audio, ref in clips:
        data = codec.encode(audio)
        back = codec.decode(data)
        assert back.dtype == np.float32 and len(back) >= len(audio) - 320  # whole frames, never short
        coded += len(data)
        seconds += len(audio) / 16000
        refs.append(normalize(ref))
        heard.append(normalize(" ".join(s.text for s in base_listener.transcribe(back[: len(audio)]).segments)))
    bps = coded * 8 / seconds
    wer = jiwer.wer(refs, heard)
    print(f"{name}: {bps:.0f} bit/s, WER {wer:.1%}")
    if name.startswith("opus"):  # VBR: at most its target, and not far under it
        assert 0.7 * codec.bitrate <= bps <= 1.05 * codec.bitrate
    else:  # fixed-rate frames, padded to a whole byte per clip
        assert codec.bitrate <= bps <= codec.bitrate * 1.01
    assert wer <= MAX_WER.get(name, DEFAULT_MAX_WER)


def test_codec2_700c_packs_28_bit_frames_end_to_end(clips):
    codec = get_codec("codec2-700C")
    audio = clips[0][0]
    frames = math.ceil((len(audio) / 2 + 300) / 320)  # 8 kHz, 320 samples (40 ms) a frame, 300 of decoder delay
    assert len(codec.encode(audio)) == math.ceil(frames * 28 / 8)
    assert codec.bits_per_frame == 28 and codec.bytes_per_frame == 4


def test_bit_packing_round_trips():
    rng = np.random.default_rng(0)
    frames = [bytes(rng.integers(0, 256, 4, dtype=np.uint8)) for _ in range(9)]
    masked = [bytes([*f[:3], f[3] & 0xF0]) for f in frames]  # 28 of 32 bits carry data
    packed = pack_bits(frames, 28)
    assert len(packed) == math.ceil(9 * 28 / 8)
    assert unpack_bits(packed, 28, 4) == masked


def test_tier_names():
    assert resolve_tier("codec2") == "codec2-1200" and resolve_tier("lyra") == "lyra-3200"
    assert resolve_tier("opus-12k") == "opus-12k" and resolve_tier("hybrid") == "hybrid"
    with pytest.raises(ValueError, match="unknown tier 'mp3'.*codec2-700C"):
        resolve_tier("mp3")


def test_missing_models_say_what_and_where(tmp_path):
    with pytest.raises(CodecUnavailable, match=r"Lyra models not found in .*empty.*github.com/google/lyra"):
        get_codec("lyra-3200", Codecs(lyra_models=tmp_path / "empty"))
    with pytest.raises(CodecUnavailable, match="EnCodec needs a checkpoint.*never downloaded"):
        get_codec("encodec-1.5k")
    with pytest.raises(CodecUnavailable, match="does not exist"):
        get_codec("encodec-1.5k", Codecs(encodec_checkpoint=tmp_path / "encodec_24khz.th"))


def test_encodec_codes_survive_packing(tmp_path, clips):
    """No EnCodec weights can be had here, so a randomly initialised model
    stands in: what is tested is the loading of a checkpoint path and the
    10-bit packing (the codes the model makes are the codes it decodes), not
    EnCodec's quality, which relay bench reports when a real checkpoint is set."""
    torch = pytest.importorskip("torch")
    from relay.audio.torchaudio_compat import ensure_torchaudio

    ensure_torchaudio()
    from encodec import EncodecModel

    from relay.audio.io import resample

    model = EncodecModel.encodec_model_24khz(pretrained=False)
    checkpoint = tmp_path / "encodec_random.th"
    torch.save(model.state_dict(), checkpoint)
    codec = get_codec("encodec-1.5k", Codecs(encodec_checkpoint=checkpoint))
    audio = clips[0][0]
    data = codec.encode(audio)
    assert abs(len(data) * 8 / (len(audio) / 16000) - 1500) < 15  # 2 codebooks x 10 bits x 75 frames/s
    wav = torch.from_numpy(resample(audio, 16000, 24000))[None, None]
    with torch.no_grad():
        codes = torch.cat([c for c, _ in codec._model.encode(wav)], dim=-1)[0].numpy()
    bits = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")[: codes.size * 10]
    unpacked = (bits.reshape(-1, 10) * (1 << np.arange(10))).sum(axis=1).reshape(-1, 2).T
    assert np.array_equal(unpacked, codes)
    assert abs(len(codec.decode(data)) - len(audio)) < 16000 * 0.03
    (tmp_path / "junk.th").write_bytes(b"not a checkpoint")
    with pytest.raises(CodecUnavailable, match="cannot be loaded"):
        get_codec("encodec-1.5k", Codecs(encodec_checkpoint=tmp_path / "junk.th"))


def test_encode_refuses_a_tier_it_cannot_make_before_any_work(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from conftest import shared

    relay = str(Path(sys.executable).with_name("relay"))
    jfk = str(shared("whisper", "jfk.flac"))
    proc = subprocess.run(
        [relay, "ground", "encode", jfk, "--tier", "lyra", "--lyra-models", str(tmp_path), "-o",
            str(tmp_path / "x.bundle")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "Lyra models not found in" in proc.stderr
    assert not (tmp_path / "x.bundle").exists()
    proc = subprocess.run([relay, "ground", "encode", jfk, "--tier", "mp3"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "unknown tier 'mp3'" in proc.stderr and "Traceback" not in proc.stderr

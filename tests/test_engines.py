"""TTS engines behind one interface: Piper, Kokoro, Coqui TTS, espeak-ng."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jiwer
import numpy as np
import pytest

from relay.audio.io import resample
from relay.config import Voices
from relay.errors import ModelError
from relay.voice.catalog import Catalog

pytestmark = pytest.mark.slow  # loads the speech models

SENTENCE = "The ship will reach the harbour at dawn, and the crew expects calm weather for the next three days."


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog()


def test_engines_are_detected_and_unavailable_ones_say_why(catalog, monkeypatch):
    st = catalog.statuses
    assert st["piper"].available and st["kokoro"].available and st["espeak"].available
    monkeypatch.delenv("SPEECH_RELAY_COQUI_MODEL", raising=False)
    assert not Catalog().statuses["coqui"].available
    assert "coqui_model" in Catalog().statuses["coqui"].detail
    keys = [v.key for v in catalog.voices(variants=False)]
    assert len(keys) == len(set(keys))
    assert "piper:en_US-joe-medium" in keys
    # the v1.0 set's 54 styles (the packaged five among them) + 10 half-and-half blends of the five
    assert sum(k.startswith("kokoro:") for k in keys) == 54 + 10
    assert sum(k.startswith("kokoro:a") or k.startswith("kokoro:b") for k in keys) == 28  # English speakers
    assert sum(k.startswith("espeak:") for k in keys) == 16
    every = [v.key for v in catalog.voices()]
    assert len(every) == len(set(every))
    # timbre variants: 4 for joe and for each of Kokoro's 54 pure styles, none for blends or espeak
    assert sum("~" in k for k in every) == 4 * (1 + 54)
    assert not any("~" in k and ("+" in k.split("~")[0] or k.startswith("espeak:")) for k in every)


@pytest.mark.parametrize(
    "key", ["piper:en_US-joe-medium", "kokoro:jm_kumo", "kokoro:jf_alpha+jm_kumo", "kokoro:bf_emma",
            "kokoro:am_michael", "espeak:en-us+m3"]
)
def test_every_engine_speaks_intelligibly_and_follows_the_rate(catalog, base_listener, normalize, key):
    engine = catalog.load(key)
    audio = engine.synthesize(SENTENCE)
    assert audio.dtype == np.float32 and len(audio) > engine.sample_rate  # over a second of speech
    heard = " ".join(s.text for s in base_listener.transcribe(resample(audio, engine.sample_rate, 16000)).segments)
    assert jiwer.wer(normalize(SENTENCE), normalize(heard)) <= 0.25, heard
    short = "Calm weather for three days."
    assert len(engine.synthesize(short, 1.3)) > 1.2 * len(engine.synthesize(short, 0.8))


def test_unknown_voice_and_unavailable_engine_are_clear(catalog, monkeypatch):
    with pytest.raises(ModelError, match="no voice 'nope'"):
        catalog.load("nope")
    monkeypatch.delenv("SPEECH_RELAY_COQUI_MODEL", raising=False)
    with pytest.raises(ModelError, match="coqui engine is unavailable here"):
        Catalog().load("coqui:anything")


def test_piper_voices_folder_and_multi_speaker_models(tmp_path):
    from relay.voice.engines.piper import default_piper_voice

    joe = default_piper_voice()
    shutil.copy(joe, tmp_path / "crew.onnx")
    config = json.loads(Path(f"{joe}.json").read_text())
    Path(tmp_path / "crew.onnx.json").write_text(json.dumps(config))
    multi = dict(config, num_speakers=3, speaker_id_map={"ann": 0, "bob": 1, "cy": 2})
    shutil.copy(joe, tmp_path / "trio.onnx")
    Path(tmp_path / "trio.onnx.json").write_text(json.dumps(multi))
    (tmp_path / "orphan.onnx").write_bytes(b"no config beside it")
    keys = {v.key: v for v in Catalog(Voices(dirs=[tmp_path])).voices() if v.engine == "piper"}
    assert {"piper:crew", "piper:trio#0", "piper:trio#1", "piper:trio#2"} <= set(keys)
    assert keys["piper:trio#1"].name == "trio bob" and not any("orphan" in k for k in keys)
    crew = Catalog(Voices(dirs=[tmp_path])).load("piper:crew")
    assert len(crew.synthesize("Hello crew.")) > 0


def _tiny_vits(folder: Path) -> tuple[Path, Path]:
    """A real Coqui VITS model with random weights, saved the way Coqui saves checkpoints."""
    from relay.audio.torchaudio_compat import ensure_torchaudio

    ensure_torchaudio()
    import torch
    from TTS.tts.configs.shared_configs import CharactersConfig
    from TTS.tts.configs.vits_config import VitsConfig
    from TTS.tts.models.vits import Vits, VitsArgs

    args = VitsArgs(
        hidden_channels=32, hidden_channels_ffn_text_encoder=64, num_heads_text_encoder=2, num_layers_text_encoder=2,
        upsample_initial_channel_decoder=64, num_layers_flow=2, num_layers_posterior_encoder=2,
        resblock_type_decoder="2", resblock_kernel_sizes_decoder=[3], resblock_dilation_sizes_decoder=[[1, 3]],
        upsample_rates_decoder=[8, 8, 4], upsample_kernel_sizes_decoder=[16, 16, 8], init_discriminator=False,
    )
    chars = CharactersConfig(
        characters_class="TTS.tts.models.vits.VitsCharacters", pad="_", eos="", bos="", blank=None,
        characters="abcdefghijklmnopqrstuvwxyz", punctuations=" .,!?'-", phonemes=None,
    )
    config = VitsConfig(model_args=args, use_phonemes=False, text_cleaner="basic_cleaners", characters=chars)
    config.audio.sample_rate = 16000
    model = Vits(config)
    torch.save({"model": model.state_dict()}, folder / "model.pth")
    config.save_json(str(folder / "config.json"))
    return folder / "model.pth", folder / "config.json"


def test_coqui_loads_a_local_model(tmp_path):
    from relay.voice.engines.coqui import CoquiBackend

    model, config = _tiny_vits(tmp_path)
    backend = CoquiBackend(str(model), str(config))
    assert backend.status().available, backend.status()
    (voice,) = backend.voices()
    assert voice.key == "coqui:model"
    engine = backend.load(voice)
    audio = engine.synthesize("hello there.")
    assert engine.sample_rate == 16000 and audio.dtype == np.float32 and len(audio) > 0


def test_coqui_missing_files_and_unreachable_model_are_one_line(tmp_path):
    from relay.voice.engines.coqui import load_coqui

    with pytest.raises(ModelError, match="model.pth: Coqui model file not found"):
        load_coqui(str(tmp_path / "model.pth"), str(tmp_path / "config.json"))
    (tmp_path / "model.pth").write_bytes(b"x")
    with pytest.raises(ModelError, match="config.json: Coqui config file not found"):
        load_coqui(str(tmp_path / "model.pth"))
    with pytest.raises(ModelError) as err:
        load_coqui("tts_models/en/vctk/vits")
    assert "\n" not in str(err.value) and "cannot" in str(err.value)

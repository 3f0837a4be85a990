"""Shared fixtures: real models loaded once per session, real audio from ../shared."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SPEECH_RELAY_SHARED", ROOT.parent / "shared")) / "data"
JFK_TEXT = (
    "And so, my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
)


def shared_models(*parts: str) -> Path:
    path = SHARED.parent.joinpath("models", *parts)
    if not path.exists():
        pytest.skip(f"shared models not found: {path}")
    return path


def shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared test data not found: {path}")
    return path


@pytest.fixture(scope="session")
def ljspeech() -> list[tuple[Path, str]]:
    """The 16 LJSpeech clips with their reference transcripts."""
    psv = shared("ljspeech", "transcripts.psv")
    rows = [line.split("|", 1) for line in psv.read_text().splitlines() if line.strip()]
    return [(psv.parent / f"{key}.flac", text) for key, text in rows]


@pytest.fixture(scope="session")
def codecs():
    """Codec settings with the Lyra v2 models from ../shared/models/lyra."""
    from relay.config import Codecs

    return Codecs(lyra_models=shared_models("lyra"))


def encoder(transcriber, diarizer=None, store=None, codecs=None, **tiers):
    """The ground's Encoder around models a test already loaded: diarizing when
    given a diarizer, matching against ``store`` (none by default), with
    ``tiers`` as in ``[tiers]`` (tier, codec, budget, min_logprob, reference_clips)."""
    from ground.encoder import Encoder
    from relay.config import Codecs, GroundConfig, GroundSection, Tiers

    config = GroundConfig(ground=GroundSection(diarize=diarizer is not None), tiers=Tiers(**tiers),
                          codecs=codecs or Codecs())
    return Encoder(config, transcriber=transcriber, diarizer=diarizer, store=store)


@pytest.fixture(scope="session")
def normalize():
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


@pytest.fixture(scope="session")
def tiny():
    from ground.transcribe import Transcriber

    return Transcriber("tiny.en", cpu_threads=2)


@pytest.fixture(scope="session")
def base_listener():
    """Whisper base, joined from its two wheels into the session's throwaway cache."""
    from ground.transcribe import Transcriber

    return Transcriber("base", cpu_threads=2)


@pytest.fixture(scope="session")
def piper():
    from relay.voice.engines.piper import PiperEngine

    return PiperEngine()


@pytest.fixture(scope="session")
def lj_encoded(ljspeech, tiny):
    """Every LJSpeech clip encoded once with tiny.en: (path, reference, EncodeResult)."""
    return [(path, ref, encoder(tiny).encode_file(path, title="")) for path, ref in ljspeech]


@pytest.fixture(autouse=True, scope="session")
def _isolated_home(tmp_path_factory):
    """Profile stores (ground and edge) and caches (joined Whisper base, CAM++
    ONNX, the voice bank) live in throwaway folders, never in ~, so every run
    measures from scratch what a fresh machine would."""
    os.environ["SPEECH_RELAY_HOME"] = str(tmp_path_factory.mktemp("home"))
    os.environ["SPEECH_RELAY_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    # a voice fitted to every new speaker is 45 s of CPU each: only the tests of fitting ask for it
    os.environ["SPEECH_RELAY_FIT_VOICES"] = "0"


@pytest.fixture(scope="session")
def diarizer():
    from ground.diarize import Diarizer

    return Diarizer()


PYANNOTE_FILES = ["sample", "dev00", "dev01", "trn01", "trn02", "trn03", "trn04"]


@pytest.fixture(scope="session")
def pyannote_refs():
    from ground.evaluate import load_rttm

    d = shared("pyannote")
    return load_rttm(d / name for name in ("sample.rttm", "debug.development.rttm", "debug.train.rttm"))


@pytest.fixture(scope="session")
def pyannote_diarized(diarizer):
    """Every pyannote test file diarized once: {uri: Diarization}."""
    from relay.audio.io import load_audio

    return {uri: diarizer(load_audio(shared("pyannote", f"{uri}.wav"))) for uri in PYANNOTE_FILES}


@pytest.fixture(scope="session")
def text_model():
    """The integer Whisper text model format v2 codes under (about 1 s to load)."""
    from relay.format.textmodel import text_model

    return text_model()

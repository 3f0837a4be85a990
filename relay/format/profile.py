"""A voice profile on the wire: a few hundred bytes that say what a speaker sounds like.

A profile is what the edge needs to pick and tune a voice for a speaker:
the direction of their CAM++ speaker embedding (192 dimensions, int4 or
int8), their median pitch and pitch range, and how fast they talk. It is
identified by a short id (6 bytes of BLAKE2b over its first version), so
once the edge holds a profile a bundle can name it by id instead of sending
it again: the same presenter every day costs almost nothing after the first
broadcast. The stores that keep profiles at each end are :mod:`relay.profiles`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass

import numpy as np

PROFILE_ID_SIZE = 6
COLOUR_BYTES = 16  # relay.audio.colour.BANDS, one int8 each
COLOUR_STEP_DB = 0.5  # relay.audio.colour.STEP_DB
EMBEDDING_DIM = 192
F0_REF = 55.0  # Hz; pitch is sent in quarter tones above A1
FITTED_MAX_STYLES = 8  # a fitted voice mixes at most this many of an engine's styles
FITTED_NAME_CHARS = 24  # an engine's or a style's name (Kokoro's are under 16)
FITTED_SCALE = 1000  # mix weights and the formant ratio travel in thousandths
FITTED_FORMANT = (0.8, 1.25)  # the formant ratios a fitted voice may ask for (PSOLA degrades beyond)


@dataclass(frozen=True, slots=True)
class FittedVoice:
    """A voice the ground fitted to a speaker: a mix of one engine's named
    styles (Kokoro's style vectors), weights summing to one, and a formant
    ratio (the vocal tract made longer or shorter, as the edge's timbre
    variants do). It names styles rather than numbering them, so an edge with
    another style file uses what it shares and says what it lacks. On the
    wire: ``[engine, [style, thousandths, ...], formant thousandths?]``, at
    most 8 styles: under 300 bytes."""

    engine: str
    mix: tuple[tuple[str, float], ...]
    formant: float = 1.0

    def __post_init__(self) -> None:
        names = [self.engine, *(n for n, _ in self.mix)]
        if not self.mix or len(self.mix) > FITTED_MAX_STYLES:
            raise ValueError(f"a fitted voice mixes 1 to {FITTED_MAX_STYLES} styles, not {len(self.mix)}")
        if any(not n or len(n) > FITTED_NAME_CHARS or not n.isascii() or not n.isprintable() for n in names):
            raise ValueError(f"a fitted voice's names are 1 to {FITTED_NAME_CHARS} printable ASCII characters")
        if len({n for n, _ in self.mix}) != len(self.mix):
            raise ValueError("a fitted voice names a style twice")
        weights = [w for _, w in self.mix]
        if not all(math.isfinite(w) and w > 0 for w in weights):
            raise ValueError("a fitted voice's weights are positive")
        total = sum(weights)
        object.__setattr__(self, "mix", tuple((n, w / total) for n, w in self.mix))
        if not FITTED_FORMANT[0] <= self.formant <= FITTED_FORMANT[1]:
            raise ValueError(f"a fitted voice's formant ratio {self.formant} is outside {FITTED_FORMANT}")

    def wire(self) -> list:
        flat: list = []
        for name, weight in self.mix:
            flat += [name, max(1, round(weight * FITTED_SCALE))]
        unit = round(self.formant * FITTED_SCALE) == FITTED_SCALE
        return [self.engine, flat] if unit else [self.engine, flat, round(self.formant * FITTED_SCALE)]

    @classmethod
    def from_wire(cls, engine: str, flat: list, formant: int = FITTED_SCALE) -> FittedVoice:
        if len(flat) % 2:
            raise ValueError("a fitted voice's mix is pairs of a style and a weight")
        mix = tuple((str(flat[i]), float(flat[i + 1])) for i in range(0, len(flat), 2))
        return cls(engine, mix, formant / FITTED_SCALE)

    def describe(self) -> str:
        mix = "+".join(f"{n}*{w:.2f}" for n, w in self.mix)
        return f"{self.engine}:{mix}" + (f" formants x{self.formant:.2f}" if self.formant != 1.0 else "")


def quantize(embedding: np.ndarray, bits: int = 4) -> bytes:
    """Unit vector -> int8 bytes (192) or packed int4 nibbles (96).

    Only the direction matters for cosine similarity, so each vector is
    scaled to use the full integer range and the scale is not sent. The
    length tells the reader which width it is.
    """
    v = np.asarray(embedding, dtype=np.float32).reshape(-1)
    peak = float(np.max(np.abs(v))) if v.size else 0.0
    if not math.isfinite(peak) or peak == 0.0:
        raise ValueError("cannot quantize an empty or non-finite embedding")
    if bits == 8:
        return np.round(v / peak * 127).astype(np.int8).tobytes()
    if bits == 4:
        if v.size % 2:
            raise ValueError("4-bit packing needs an even dimension")
        q = (np.round(v / peak * 7).astype(np.int8) & 0x0F).astype(np.uint8)
        return (q[0::2] << 4 | q[1::2]).astype(np.uint8).tobytes()
    raise ValueError(f"embeddings are quantized to 8 or 4 bits, not {bits}")


def dequantize(data: bytes) -> np.ndarray:
    """Bytes from :func:`quantize` -> unit float vector."""
    raw = np.frombuffer(data, dtype=np.uint8)
    if len(raw) == EMBEDDING_DIM:
        v = raw.view(np.int8).astype(np.float32)
    elif len(raw) == EMBEDDING_DIM // 2:
        nibbles = np.stack([raw >> 4, raw & 0x0F], axis=1).reshape(-1).astype(np.int8)
        v = np.where(nibbles > 7, nibbles - 16, nibbles).astype(np.float32)
    else:
        raise ValueError(f"an embedding of {len(raw)} bytes is neither int8 nor int4 x {EMBEDDING_DIM}")
    norm = float(np.linalg.norm(v))
    return v / norm if norm else v


@dataclass(frozen=True, slots=True)
class VoiceProfile:
    """What a speaker sounds like, in wire precision.

    ``f0_median`` is in Hz, ``f0_range`` in semitones (10th to 90th
    percentile of voiced frames), ``rate`` in words per minute of speaking
    time. ``name`` is set for enrolled speakers. ``profile_id`` is fixed when
    the profile is first made and kept when the store refines the profile.
    """

    embedding: bytes  # int8 x 192, or int4 x 192 packed in 96 bytes
    f0_median: float
    f0_range: float
    rate: float
    name: str | None = None
    profile_id: bytes = b""
    # optional: a few seconds of the speaker's own voice, coded (relay.audio.codecs), for edges whose
    # TTS can clone a voice from a clip; not part of the id, so adding one later keeps the id
    reference: bytes = b""
    reference_codec: str = ""
    # optional: the long-term spectrum's shape in 16 bands (relay.audio.colour), which the edge
    # equalises its voice to; not part of the id either (a refinement)
    colour: bytes = b""
    # optional: a voice fitted to the speaker at the ground (ground.fit_voice); not part of the id
    fitted: FittedVoice | None = None

    def __post_init__(self) -> None:
        if len(self.embedding) not in (EMBEDDING_DIM, EMBEDDING_DIM // 2):
            raise ValueError(
                f"profile embedding must be {EMBEDDING_DIM} int8 or int4 values, got {len(self.embedding)} bytes"
            )
        if self.colour and len(self.colour) != COLOUR_BYTES:
            raise ValueError(f"profile colour must be {COLOUR_BYTES} bytes, got {len(self.colour)}")
        if not self.profile_id:
            object.__setattr__(self, "profile_id", self.content_hash())

    @classmethod
    def create(
        cls,
        embedding: np.ndarray,
        f0_median: float,
        f0_range: float,
        rate: float,
        name: str | None = None,
        bits: int = 4,
    ) -> VoiceProfile:
        """A new profile, its figures rounded to what the wire carries."""
        f0_q, range_q, rate_q = _quantize_prosody(f0_median, f0_range, rate)
        f0, rng, wpm = _dequantize_prosody(f0_q, range_q, rate_q)
        return cls(quantize(embedding, bits), f0, rng, wpm, name)

    def with_colour(self, colour: bytes) -> VoiceProfile:
        """This profile (same id) carrying a colour (:func:`relay.audio.colour.to_bytes`)."""
        return dataclasses.replace(self, colour=colour)

    def with_fitted(self, fitted: FittedVoice | None) -> VoiceProfile:
        """This profile (same id) carrying a fitted voice."""
        return dataclasses.replace(self, fitted=fitted)

    def content_hash(self) -> bytes:
        # as the first profiles were hashed: each figure as bytes(n), n zero bytes (ids are forever)
        figures = _quantize_prosody(self.f0_median, self.f0_range, self.rate)
        data = self.embedding + b"".join(bytes(n) for n in figures)
        return hashlib.blake2b(data, digest_size=PROFILE_ID_SIZE).digest()

    @property
    def id_hex(self) -> str:
        return self.profile_id.hex()

    def vector(self) -> np.ndarray:
        """The embedding as a unit float vector."""
        return dequantize(self.embedding)

    def similarity(self, embedding: np.ndarray) -> float:
        """Cosine similarity with a unit embedding (or another profile's vector)."""
        return float(np.dot(self.vector(), embedding))

    def wire_fields(self) -> list:
        """``[embedding, f0, range, rate]`` as small integers: quarter tones above
        55 Hz, quarter tones of range, words per minute. Each fits in one or
        two msgpack bytes. A reference clip follows as ``[codec id, bytes]``,
        then the colour's 16 bytes, then a fitted voice (:class:`FittedVoice`),
        each nil when absent but a later one is present."""
        fields: list = [self.embedding, *_quantize_prosody(self.f0_median, self.f0_range, self.rate)]
        if self.reference:
            from relay.audio.codecs import codec_id

            fields.append([codec_id(self.reference_codec), self.reference])
        else:
            fields.append(None)
        fields.append(self.colour or None)
        fields.append(self.fitted.wire() if self.fitted else None)
        while fields[-1] is None:
            fields.pop()
        return fields

    @classmethod
    def from_wire(cls, profile_id: bytes, fields: list, name: str | None = None) -> VoiceProfile:
        embedding, f0_q, range_q, rate_q = fields[:4]
        f0, rng, wpm = _dequantize_prosody(int(f0_q), int(range_q), int(rate_q))
        reference, codec = b"", ""
        if len(fields) > 4 and fields[4]:
            from relay.audio.codecs import CODEC_IDS

            wire_id, reference = int(fields[4][0]), bytes(fields[4][1])
            if wire_id not in CODEC_IDS:
                raise ValueError(f"reference clip codec id {wire_id} is unknown")
            codec = CODEC_IDS[wire_id]
        colour = bytes(fields[5]) if len(fields) > 5 and fields[5] else b""
        fitted = FittedVoice.from_wire(*fields[6]) if len(fields) > 6 and fields[6] else None
        return cls(bytes(embedding), f0, rng, wpm, name, bytes(profile_id), reference, codec, colour, fitted)

    def to_dict(self) -> dict:
        return {
            "id": self.id_hex,
            "name": self.name,
            "f0_median_hz": round(self.f0_median, 1),
            "f0_range_semitones": round(self.f0_range, 2),
            "rate_wpm": round(self.rate),
            **({"reference": {"codec": self.reference_codec, "bytes": len(self.reference)}} if self.reference else {}),
            **({"colour_db": [round(float(x), 1) for x in np.frombuffer(self.colour, np.int8) * COLOUR_STEP_DB]}
               if self.colour else {}),
            **({"fitted": self.fitted.describe()} if self.fitted else {}),
        }


def _quantize_prosody(f0: float, f0_range: float, rate: float) -> tuple[int, int, int]:
    f0_q = int(round(24 * math.log2(max(f0, F0_REF) / F0_REF))) if f0 > 0 else 0
    return min(f0_q, 127), min(int(round(max(f0_range, 0.0) * 4)), 127), min(int(round(max(rate, 0.0))), 65535)


def _dequantize_prosody(f0_q: int, range_q: int, rate_q: int) -> tuple[float, float, float]:
    return (F0_REF * 2 ** (f0_q / 24) if f0_q else 0.0), range_q / 4, float(rate_q)

"""The codec interface, the registry of tiers and their wire ids."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Protocol

import numpy as np

from relay.errors import RelayError

RATE = 16000  # what every codec takes and returns


class CodecUnavailable(RelayError):
    """A codec's library or model is not installed or not configured."""


class AudioCodec(Protocol):
    """One tier: ``encode`` a clip to bytes, ``decode`` the bytes back.

    ``decode`` returns at least as many samples as were encoded (codecs work in
    whole frames); callers place clips by their start time and trim to their
    duration.
    """

    name: str
    bitrate: int  # nominal bit/s of the coded stream

    def encode(self, audio: np.ndarray) -> bytes: ...

    def decode(self, data: bytes) -> np.ndarray: ...


@dataclass(frozen=True, slots=True)
class CodecSettings:
    """Where the model-based codecs find their weights (ground and edge config
    ``[codecs]``). Unset, Lyra looks in ``$SPEECH_RELAY_LYRA`` and then in
    ``~/.cache/speech-relay/lyra``; EnCodec has no default: it needs a path."""

    lyra_models: str | None = None
    encodec_checkpoint: str | None = None

    def lyra_dir(self) -> Path:
        for candidate in (self.lyra_models, os.environ.get("SPEECH_RELAY_LYRA")):
            if candidate:
                return Path(candidate).expanduser()
        from relay.paths import cache_dir

        return cache_dir() / "lyra"


# wire id -> tier name. Ids are forever: a new tier gets a new id.
CODEC_IDS: dict[int, str] = {
    1: "codec2-3200",
    2: "codec2-1200",
    3: "codec2-700C",
    4: "opus-6k",
    5: "opus-12k",
    6: "lyra-3200",
    7: "lyra-6000",
    8: "lyra-9200",
    9: "encodec-1.5k",
}
_BY_NAME = {name: i for i, name in CODEC_IDS.items()}


def tiers() -> list[str]:
    """Every audio tier name, cheapest first."""
    return sorted(CODEC_IDS.values(), key=lambda n: (_nominal(n), n))


def _nominal(name: str) -> int:
    rate = name.rsplit("-", 1)[1].rstrip("C")
    return int(float(rate[:-1]) * 1000) if rate.endswith("k") else int(rate)


FAMILY_DEFAULT = {"codec2": "codec2-1200", "lyra": "lyra-3200", "opus": "opus-6k", "encodec": "encodec-1.5k"}


def resolve_tier(name: str) -> str:
    """A tier as an operator typed it (``text``, ``hybrid``, ``codec2-700C``,
    or a family: ``codec2``, ``lyra``, ``opus``, ``encodec``) -> its
    canonical name; an unknown one is a ValueError listing the known."""
    name = FAMILY_DEFAULT.get(name, name)
    if name in ("text", "hybrid") or name in CODEC_IDS.values():
        return name
    known = ["text", "hybrid", *FAMILY_DEFAULT, *tiers()]
    raise ValueError(f"unknown tier {name!r} (one of: {', '.join(known)})")


def codec_id(name: str) -> int:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise CodecUnavailable(f"unknown audio tier {name!r} (known: {', '.join(tiers())})") from None


@cache
def get_codec(name: str, settings: CodecSettings = CodecSettings()) -> AudioCodec:
    """The codec for a tier name, loaded once per process."""
    codec_id(name)
    family, rate = name.split("-", 1)
    if family == "codec2":
        from relay.audio.codecs.codec2 import Codec2

        return Codec2(rate)
    if family == "opus":
        from relay.audio.codecs.opus import Opus

        return Opus(_nominal(name))
    if family == "lyra":
        from relay.audio.codecs.lyra import Lyra

        return Lyra(_nominal(name), settings.lyra_dir())
    from relay.audio.codecs.encodec import EnCodec

    return EnCodec(_nominal(name), settings.encodec_checkpoint)


def codec_by_id(wire_id: int, settings: CodecSettings = CodecSettings()) -> AudioCodec:
    if wire_id not in CODEC_IDS:
        raise CodecUnavailable(f"audio clip uses codec id {wire_id}, which this relay does not know")
    return get_codec(CODEC_IDS[wire_id], settings)


def pack_bits(frames: list[bytes], bits: int) -> bytes:
    """Keep the first ``bits`` bits of every frame and butt them together:
    Codec2 700C's 28-bit frames travel at 700 bit/s, not 800."""
    if not frames:
        return b""
    raw = np.unpackbits(np.frombuffer(b"".join(frames), np.uint8).reshape(len(frames), -1), axis=1)
    return np.packbits(raw[:, :bits].reshape(-1)).tobytes()


def unpack_bits(data: bytes, bits: int, frame_bytes: int) -> list[bytes]:
    """The inverse of :func:`pack_bits`; spare bits come back as zeros."""
    raw = np.unpackbits(np.frombuffer(data, np.uint8))
    n = len(raw) // bits
    frames = np.zeros((n, frame_bytes * 8), np.uint8)
    frames[:, :bits] = raw[: n * bits].reshape(n, bits)
    return [bytes(f) for f in np.packbits(frames, axis=1)]

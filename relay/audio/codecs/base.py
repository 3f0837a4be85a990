"""The codec interface, the registry of tiers and their wire ids."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Protocol

import numpy as np

from relay.errors import RelayError

if TYPE_CHECKING:
    from relay.config import Codecs



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


def audio_tiers() -> list[str]:
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
    known = ["text", "hybrid", *FAMILY_DEFAULT, *audio_tiers()]
    raise ValueError(f"unknown tier {name!r} (one of: {', '.join(known)})")


def codec_id(name: str) -> int:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise CodecUnavailable(f"unknown audio tier {name!r} (known: {', '.join(audio_tiers())})") from None


def get_codec(name: str, codecs: Codecs | None = None) -> AudioCodec:
    """The codec for a tier name, loaded once per process; ``codecs`` (``[codecs]``
    in the configuration) says where the model-based ones find their weights."""
    from relay.config import Codecs

    return _codec(name, codecs or Codecs())


@cache
def _codec(name: str, settings: Codecs) -> AudioCodec:
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

    checkpoint = str(settings.encodec_checkpoint) if settings.encodec_checkpoint else None
    return EnCodec(_nominal(name), checkpoint)


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

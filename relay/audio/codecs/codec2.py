"""Codec2 (David Rowe's speech codec for HF radio) through ``pycodec2``.

Codec2 works at 8 kHz, one frame per call. Its 700C frames are 28 bits,
which libcodec2 hands out in 4 bytes; :func:`pack_bits` drops the 4 spare
bits so the stream really is 700 bit/s.
"""

from __future__ import annotations

import numpy as np

from relay.audio.codecs.base import CodecUnavailable, pack_bits, unpack_bits
from relay.audio.io import (
    SAMPLE_RATE,  # what every codec takes and returns
    resample,
)

CODEC2_RATE = 8000
MODES = {"3200": 3200, "1200": 1200, "700C": 700}
# the decoder's output lags its input by this many 8 kHz samples (measured by envelope
# cross-correlation on LJSpeech: 12, 14.5 and 37.5 ms); the encoder pads the tail by as
# much and the decoder drops it from the front, so a clip lands where it was taken
DELAY = {"3200": 96, "1200": 116, "700C": 300}


class Codec2:
    def __init__(self, mode: str) -> None:
        try:
            import pycodec2
        except ImportError:
            raise CodecUnavailable("Codec2 needs the pycodec2 package (pip install pycodec2)") from None
        self.name = f"codec2-{mode}"
        self.bitrate = MODES[mode]
        self._mode = MODES[mode]
        self._delay = DELAY[mode]
        self._make = lambda: pycodec2.Codec2(self._mode)
        c2 = self._make()
        self.samples_per_frame = c2.samples_per_frame()
        self.bits_per_frame = c2.bits_per_frame()
        self.bytes_per_frame = c2.bytes_per_frame()

    def encode(self, audio: np.ndarray) -> bytes:
        c2 = self._make()  # a fresh state per clip: clips are decoded on their own
        pcm = np.clip(resample(audio, SAMPLE_RATE, CODEC2_RATE) * 32767, -32768, 32767).astype(np.int16)
        n = self.samples_per_frame
        pcm = np.pad(pcm, (0, self._delay))
        pcm = np.pad(pcm, (0, -len(pcm) % n))
        frames = [c2.encode(np.ascontiguousarray(pcm[i : i + n])) for i in range(0, len(pcm), n)]
        return pack_bits(frames, self.bits_per_frame)

    def decode(self, data: bytes) -> np.ndarray:
        c2 = self._make()
        frames = unpack_bits(data, self.bits_per_frame, self.bytes_per_frame)
        if not frames:
            return np.zeros(0, np.float32)
        pcm = np.concatenate([c2.decode(f) for f in frames]).astype(np.float32) / 32768.0
        return resample(pcm[self._delay :], CODEC2_RATE, SAMPLE_RATE)

"""Opus through PyAV's libopus, without a container.

Packets of 60 ms (the longest Opus frame; fewer packets, fewer length bytes)
in VoIP mode, each preceded by its length as a LEB128 varint. The decoder's
pre-skip is removed so the clip starts where the input did.
"""

from __future__ import annotations

import av
import numpy as np

from relay.audio.io import SAMPLE_RATE  # what every codec takes and returns
from relay.format.varint import get_uvarint, put_uvarint

FRAME_MS = 60


def _packets(data: bytes):
    pos = 0
    while pos < len(data):
        size, pos = get_uvarint(data, pos)
        if pos + size > len(data):
            raise ValueError("opus clip truncated")
        yield data[pos : pos + size]
        pos += size


class Opus:
    def __init__(self, bitrate: int) -> None:
        self.name = f"opus-{bitrate // 1000}k"
        self.bitrate = bitrate

    def _encoder(self) -> av.AudioCodecContext:
        ctx = av.CodecContext.create("libopus", "w")
        ctx.sample_rate = SAMPLE_RATE
        ctx.layout = "mono"
        ctx.format = "s16"
        ctx.bit_rate = self.bitrate
        ctx.options = {"application": "voip", "frame_duration": str(FRAME_MS), "vbr": "on"}
        ctx.open()
        return ctx

    def encode(self, audio: np.ndarray) -> bytes:
        ctx = self._encoder()
        n = ctx.frame_size
        pcm = np.clip(audio * 32767, -32768, 32767).astype(np.int16)
        pcm = np.pad(pcm, (0, -len(pcm) % n + n))  # one frame more: the encoder's look-ahead
        out = bytearray()
        frames = []
        for i in range(0, len(pcm), n):
            frame = av.AudioFrame.from_ndarray(pcm[None, i : i + n], format="s16", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            frame.pts = i
            frames.append(frame)
        for pending in [*frames, None]:  # None flushes the encoder
            for packet in ctx.encode(pending):
                put_uvarint(out, packet.size)
                out += bytes(packet)
        return bytes(out)

    def decode(self, data: bytes) -> np.ndarray:
        ctx = av.CodecContext.create("libopus", "r")
        ctx.sample_rate = SAMPLE_RATE
        ctx.layout = "mono"
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        chunks = []
        for payload in _packets(data):
            for frame in ctx.decode(av.Packet(payload)):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
        audio = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
        skip = int(round(312 / 48000 * SAMPLE_RATE))  # libopus's standard pre-skip, 6.5 ms
        return audio[skip:]

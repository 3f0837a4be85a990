"""Lyra v2 (SoundStream) with the TFLite models Google publishes.

Three models from the Lyra repository (``lyra/model_coeffs``:
``soundstream_encoder.tflite``, ``quantizer.tflite``, ``lyragan.tflite``)
run under ``ai-edge-litert``. Every 20 ms frame (320 samples) becomes a
64-value feature vector, which a residual vector quantizer codes with
4 bits per stage: 16 stages for 3.2 kbit/s, 30 for 6 kbit/s, all 46 for
9.2 kbit/s. The stage indices are packed end to end, so a clip costs exactly
its bit rate. The models are stateful streaming networks; each clip gets
fresh interpreters so it decodes the same wherever it lands.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from relay.audio.codecs.base import CodecUnavailable

FRAME = 320
BITS_PER_STAGE = 4
MAX_STAGES = 46
MODEL_FILES = ("soundstream_encoder.tflite", "quantizer.tflite", "lyragan.tflite")
WHERE = (
    "get soundstream_encoder.tflite, quantizer.tflite and lyragan.tflite from "
    "https://github.com/google/lyra/tree/main/lyra/model_coeffs and set [codecs] lyra_models"
)


class Lyra:
    def __init__(self, bitrate: int, models: Path) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise CodecUnavailable("Lyra needs the ai-edge-litert package (pip install ai-edge-litert)") from None
        missing = [f for f in MODEL_FILES if not (models / f).is_file()]
        if missing:
            raise CodecUnavailable(f"Lyra models not found in {models} (missing {', '.join(missing)}): {WHERE}")
        self.name = f"lyra-{bitrate}"
        self.bitrate = bitrate
        self.stages = bitrate // 50 // BITS_PER_STAGE
        self._interpreter = Interpreter
        self._models = models

    def _load(self, name: str):
        it = self._interpreter(model_path=str(self._models / name))
        it.allocate_tensors()
        return it

    def encode(self, audio: np.ndarray) -> bytes:
        enc, quantizer = self._load(MODEL_FILES[0]), self._load(MODEL_FILES[1])
        quantize = quantizer.get_signature_runner("encode")
        i_in, i_out = enc.get_input_details()[0]["index"], enc.get_output_details()[0]["index"]
        audio = np.pad(audio.astype(np.float32), (0, -len(audio) % FRAME))
        stages = np.int32(self.stages)
        codes = []
        for i in range(0, len(audio), FRAME):
            enc.set_tensor(i_in, audio[None, i : i + FRAME])
            enc.invoke()
            out = quantize(input_frames=enc.get_tensor(i_out), num_quantizers=stages)["output_0"]
            codes.append(out.reshape(-1)[: self.stages].astype(np.uint8))
        if not codes:
            return b""
        nibbles = np.concatenate(codes)
        nibbles = np.pad(nibbles, (0, len(nibbles) % 2))
        return (nibbles[0::2] << 4 | nibbles[1::2]).astype(np.uint8).tobytes()

    def decode(self, data: bytes) -> np.ndarray:
        quantizer, gan = self._load(MODEL_FILES[1]), self._load(MODEL_FILES[2])
        dequantize = quantizer.get_signature_runner("decode")
        g_in, g_out = gan.get_input_details()[0]["index"], gan.get_output_details()[0]["index"]
        raw = np.frombuffer(data, np.uint8)
        nibbles = np.stack([raw >> 4, raw & 0x0F], axis=1).reshape(-1).astype(np.int32)
        frames = len(nibbles) // self.stages
        out = []
        indices = np.full((MAX_STAGES, 1, 1), -1, np.int32)  # -1: stage not sent
        for f in range(frames):
            indices[: self.stages, 0, 0] = nibbles[f * self.stages : (f + 1) * self.stages]
            gan.set_tensor(g_in, dequantize(encoding_indices=indices)["output_0"])
            gan.invoke()
            out.append(gan.get_tensor(g_out).reshape(-1).copy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)

"""Build relay/format/models/tiny-en-lm-v1.npz: the tables and the fixed
"audio" the integer text model (relay/format/textmodel.py) uses.

- ``silence``: Whisper tiny.en's encoding of 30 s of digital silence, pooled
  to 50 frames, at 10 fractional bits. Pooled further (10 frames) the decoder
  loses 4 bits a word; 50 frames cost nothing against all 1500.
- ``exp``: round(2^26 * exp(-i / 256)) for i < 20 * 256 (softmax numerators).
- ``gelu``: GELU(x) at 10 fractional bits for x in [-8, 8) in steps of 2^-8.

Run once on any machine; the file it writes is what both ends load, so floats
here (CTranslate2's encoder, math.exp) never reach the coder itself. A file,
once released, is never changed: a new one gets a new name and model number.

    .venv/bin/python scripts/build_text_model.py
"""

from __future__ import annotations

import math
from pathlib import Path

import ctranslate2
import numpy as np
from faster_whisper.feature_extractor import FeatureExtractor

from relay.format.textmodel import FRAC, GELU_LOW, GELU_SHIFT, _model_dir

FRAMES = 50
OUT = Path(__file__).resolve().parent.parent / "relay" / "format" / "models" / "tiny-en-lm-v1.npz"


def main() -> None:
    features = FeatureExtractor()(np.zeros(16000 * 30, np.float32))[:, :3000]
    model = ctranslate2.models.Whisper(str(_model_dir()), device="cpu", compute_type="float32")
    encoded = np.array(model.encode(ctranslate2.StorageView.from_array(features[None].astype(np.float32))))[0]
    pooled = encoded.astype(np.float64).reshape(FRAMES, -1, encoded.shape[-1]).mean(axis=1)
    silence = np.rint(pooled * (1 << FRAC)).astype(np.int32)
    exp = np.array([round((1 << 26) * math.exp(-i / 256)) for i in range(20 * 256)], dtype=np.int64)
    step = 1 << GELU_SHIFT
    xs = [(GELU_LOW + i * step) / (1 << FRAC) for i in range(-2 * GELU_LOW // step)]
    gelu = np.array([round(0.5 * x * (1 + math.erf(x / math.sqrt(2))) * (1 << FRAC)) for x in xs], dtype=np.int64)
    np.savez_compressed(OUT, silence=silence, exp=exp, gelu=gelu)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()

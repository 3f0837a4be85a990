"""What rehydration needs from a text-to-speech voice.

Engines live in :mod:`relay.voice.engines` (Piper, the default; Kokoro; Coqui TTS;
espeak-ng as the tiny fallback) and are listed by :mod:`relay.voice.catalog`. Each
loads a voice into an object with this shape.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class TTSEngine(Protocol):
    """One loaded voice."""

    name: str  # the engine: piper, kokoro, coqui, espeak
    voice_name: str
    sample_rate: int

    def synthesize(self, text: str, length_scale: float = 1.0) -> np.ndarray:
        """Speak ``text``; ``length_scale`` > 1 is slower. Mono float32."""
        ...

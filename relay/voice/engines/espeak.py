"""espeak-ng: the tiny fallback that runs anywhere Debian does.

Formant synthesis, robotic but always intelligible and with no model files.
Each language is offered in several of espeak-ng's voice variants (male
m1-m7, female f1-f5), which differ in pitch and formants, so even this
fallback gives different speakers different voices. It runs the
``espeak-ng`` binary (Debian package ``espeak-ng``), text on stdin.
"""

from __future__ import annotations

import io
import shutil
import subprocess

import numpy as np
import soundfile as sf

from relay.errors import ModelError
from relay.voice.catalog import BackendStatus, Voice

# espeak-ng voice -> language; British English must be named "en": it ignores
# variants on "en-gb" (every en-gb+X sounds the same)
LANGUAGES = {"en-us": "en-us", "en": "en-gb"}
VARIANTS = ("m1", "m3", "m5", "m7", "f1", "f2", "f3", "f4")
WORDS_PER_MINUTE = 175  # espeak-ng's default rate


class EspeakEngine:
    name = "espeak"

    def __init__(self, binary: str, language: str, variant: str) -> None:
        self.binary = binary
        self.voice_id = f"{language}+{variant}"
        self.voice_name = self.voice_id
        self.sample_rate = 22_050

    def synthesize(self, text: str, length_scale: float = 1.0) -> np.ndarray:
        rate = int(np.clip(WORDS_PER_MINUTE / length_scale, 80, 450))
        try:
            proc = subprocess.run(
                [self.binary, "-v", self.voice_id, "-s", str(rate), "--stdout"],
                input=text.encode("utf-8"), capture_output=True, timeout=60, check=True,
            )
            audio, rate_hz = sf.read(io.BytesIO(proc.stdout), dtype="float32")
        except (subprocess.SubprocessError, OSError, RuntimeError) as exc:
            raise ModelError(f"espeak-ng failed on voice {self.voice_id} ({exc.__class__.__name__})") from None
        self.sample_rate = int(rate_hz)
        return audio if audio.ndim == 1 else audio.mean(axis=1)


class EspeakBackend:
    name = "espeak"

    def __init__(self) -> None:
        self.binary = shutil.which("espeak-ng")

    def status(self) -> BackendStatus:
        if not self.binary:
            return BackendStatus(self.name, False, "espeak-ng is not installed (apt install espeak-ng)")
        return BackendStatus(self.name, True, self.binary)

    def voices(self) -> list[Voice]:
        return [
            Voice(self.name, f"espeak:{lang}+{var}", f"{lang}+{var}", language, (lang, var))
            for lang, language in LANGUAGES.items()
            for var in VARIANTS
        ]

    def load(self, voice: Voice) -> EspeakEngine:
        if not self.binary:
            raise ModelError("espeak-ng is not installed (apt install espeak-ng)")
        return EspeakEngine(self.binary, *voice.params)

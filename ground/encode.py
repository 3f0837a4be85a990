"""Audio file -> bundle: the ground station's main job for one recording."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ground.transcribe import TranscribeOptions, Transcriber, Transcript
from relay.audio import load_audio
from relay.bundle import Bundle, SourceInfo, Speaker
from relay.wire import encode_bundle


@dataclass(frozen=True, slots=True)
class EncodeResult:
    """The bundle, its bytes, and the figures an operator wants to see."""

    bundle: Bundle
    data: bytes
    input_bytes: int
    transcript: Transcript

    @property
    def duration(self) -> float:
        return self.transcript.duration

    @property
    def bits_per_second(self) -> float:
        return len(self.data) * 8 / self.duration if self.duration else 0.0

    @property
    def ratio(self) -> float:
        """How many times smaller than the input file."""
        return self.input_bytes / len(self.data)


def build_bundle(transcript: Transcript, title: str) -> Bundle:
    """One speaker for now; diarization assigns speakers per word later."""
    return Bundle(
        source=SourceInfo(title=title, duration=transcript.duration, language=transcript.language),
        speakers=[Speaker("S1")],
        segments=transcript.segments,
    )


def encode_audio(
    audio: np.ndarray,
    transcriber: Transcriber,
    title: str,
    input_bytes: int,
    options: TranscribeOptions | None = None,
) -> EncodeResult:
    """Transcribe decoded 16 kHz audio and pack the bundle."""
    transcript = transcriber.transcribe(audio, options)
    bundle = build_bundle(transcript, title)
    return EncodeResult(bundle, encode_bundle(bundle), input_bytes, transcript)


def encode_file(
    path: str | Path,
    transcriber: Transcriber,
    title: str | None = None,
    options: TranscribeOptions | None = None,
) -> EncodeResult:
    path = Path(path)
    audio = load_audio(path)
    return encode_audio(audio, transcriber, title if title is not None else path.stem, path.stat().st_size, options)

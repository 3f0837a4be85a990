"""Audio file -> bundle: the ground station's main job for one recording.

Transcribe (faster-whisper), diarize (pyannote), give each word its speaker,
attach voice profiles, pack. Diarization is optional so a station without
the speaker models still sends text, as one speaker.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ground.attribute import attribute
from ground.diarize import Diarization, DiarizationOptions, Diarizer
from ground.speakers import SpeakerPlan, plan_speakers
from ground.tiers import TierPolicy, choose_tier
from ground.transcribe import TranscribeOptions, Transcriber, Transcript
from relay.audio.codecs import get_codec
from relay.audio.io import load_audio
from relay.format.bundle import Bundle, SourceInfo, Speaker
from relay.profiles import ProfileStore


@dataclass(slots=True)
class EncodeResult:
    """The bundle, its bytes, and the figures an operator wants to see."""

    bundle: Bundle
    data: bytes
    input_bytes: int
    transcript: Transcript
    diarization: Diarization | None = None
    plan: SpeakerPlan | None = None
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds
    tier: str = "text"
    tried: dict[str, int] = field(default_factory=dict)  # tier -> bundle bytes, when a budget chose

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

    @property
    def rtf(self) -> float:
        """Ground real-time factor: ASR, diarization and packing together."""
        return sum(self.timings.values()) / self.duration if self.duration else 0.0


def build_bundle(transcript: Transcript, title: str) -> Bundle:
    """The bundle of an undiarized transcript: everything by one speaker."""
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
    diarizer: Diarizer | None = None,
    speakers: DiarizationOptions | None = None,
    store: ProfileStore | None = None,
    profile_bits: int = 4,
    tier: TierPolicy | None = None,
) -> EncodeResult:
    """Transcribe (and diarize) decoded 16 kHz audio and pack the bundle.

    With a ``store``, speakers are matched against known profiles; call
    ``result.plan.commit(store)`` once the bundle is safely stored. ``tier``
    says what travels as coded audio (:mod:`ground.tiers`); default all text.
    """
    transcript = transcriber.transcribe(audio, options)
    timings = {"asr": transcript.elapsed}
    policy = tier or TierPolicy()

    def pack(bundle: Bundle, **extra) -> EncodeResult:
        t0 = time.perf_counter()
        choice = choose_tier(bundle, audio, transcript, policy)
        timings["pack"] = time.perf_counter() - t0
        return EncodeResult(
            choice.bundle, choice.data, input_bytes, transcript, timings=timings, tier=choice.tier,
            tried=choice.tried, **extra,
        )

    if diarizer is None:
        return pack(build_bundle(transcript, title))

    t0 = time.perf_counter()
    diarization = diarizer(audio, speakers)
    timings["diarization"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    segments = attribute(transcript.segments, diarization.turns, diarization.exclusive)
    reference = get_codec(policy.reference_clips, policy.codecs) if policy.reference_clips else None
    plan = plan_speakers(segments, diarization, audio, store, bits=profile_bits, reference_codec=reference)
    if not plan.speakers:  # no words at all: keep the one-speaker shape
        plan.speakers.append(Speaker("S1"))
    bundle = Bundle(
        source=SourceInfo(title=title, duration=transcript.duration, language=transcript.language),
        speakers=plan.speakers,
        segments=plan.segments,
    )
    timings["speakers"] = time.perf_counter() - t0
    return pack(bundle, diarization=diarization, plan=plan)


def encode_file(
    path: str | Path,
    transcriber: Transcriber,
    title: str | None = None,
    options: TranscribeOptions | None = None,
    diarizer: Diarizer | None = None,
    speakers: DiarizationOptions | None = None,
    store: ProfileStore | None = None,
    profile_bits: int = 4,
    tier: TierPolicy | None = None,
) -> EncodeResult:
    path = Path(path)
    audio = load_audio(path)
    return encode_audio(
        audio, transcriber, title if title is not None else path.stem, path.stat().st_size, options,
        diarizer, speakers, store, profile_bits, tier,
    )

"""Enroll a known speaker from a clip of their voice.

The clip goes through the same path as a broadcast (transcription,
diarization, word attribution), so the enrolled embedding is a diarization
centroid like the ones it will be compared with, and the speaking rate comes
from real words. If the clip holds several voices, the one with the most
speech is enrolled. If the store already knows the voice anonymously (it was
heard in earlier bundles), that profile is named rather than duplicated, so
the edge, which holds it under its id, keeps recognising it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ground.attribute import attribute
from ground.diarize import Diarizer
from ground.measure import measure_profile
from ground.transcribe import Transcriber
from relay.errors import AudioInputError
from relay.format.profile import VoiceProfile
from relay.profiles import MATCH_THRESHOLD, ProfileError, ProfileStore

MIN_ENROLL_SECONDS = 3.0


@dataclass(frozen=True, slots=True)
class Enrollment:
    profile: VoiceProfile
    speech_seconds: float
    other_speakers: int
    renamed_existing: bool


def enroll(
    name: str,
    audio: np.ndarray,
    transcriber: Transcriber,
    diarizer: Diarizer,
    store: ProfileStore,
    source: str = "clip",
    bits: int = 4,
) -> Enrollment:
    name = name.strip()
    if not name or len(name) > 64 or any(c in name for c in "\n\r\t"):
        raise ProfileError(f"speaker name {name!r} must be 1-64 printable characters")
    if store.by_name(name) is not None:
        raise ProfileError(f"a speaker named {name!r} is already enrolled (remove it first: relay ground speakers rm)")
    diarization = diarizer(audio)
    if diarization.num_speakers == 0:
        raise AudioInputError(f"{source}: no speech found to enroll")
    main = max(range(diarization.num_speakers), key=diarization.speech_time)
    seconds = diarization.speech_time(main)
    if seconds < MIN_ENROLL_SECONDS or not np.all(np.isfinite(diarization.embeddings[main])):
        raise AudioInputError(f"{source}: only {seconds:.1f} s of speech; enrolling needs {MIN_ENROLL_SECONDS:.0f} s")
    segments = attribute(transcriber.transcribe(audio).segments, diarization.turns, diarization.exclusive)
    profile = measure_profile(diarization.embeddings[main], audio, diarization, segments, main, bits)
    existing = store.match(profile.vector(), MATCH_THRESHOLD)
    if existing is not None and existing.profile.name is None:
        profile = replace(existing.profile, name=name)
        store.put(profile)  # keeps its id and "sent" flag: the edge already knows this voice
        renamed = True
    else:
        profile = replace(profile, name=name)
        store.put(profile, sent=False)
        renamed = False
    return Enrollment(profile, seconds, diarization.num_speakers - 1, renamed)

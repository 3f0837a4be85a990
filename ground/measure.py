"""Measure a speaker's voice profile from their stretches of a recording.

Pitch comes from :func:`relay.audio.pitch.pitch_stats` (Boersma's method, as
in Praat), as on the edge. The median of voiced frames sets the voice's
register; the 10th-90th percentile spread, in semitones, how animated it
is. Speaking rate is words per minute of speaking time (the spans of the
speaker's segments, pauses between segments excluded), so a
slow turn-taker is not mistaken for a slow talker. The colour is the
long-term spectrum's shape of the same speech (:mod:`relay.audio.colour`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ground.diarize import Diarization
from relay.audio.colour import spectrum_shape
from relay.audio.colour import to_bytes as colour_bytes
from relay.audio.io import SAMPLE_RATE
from relay.audio.pitch import pitch_stats
from relay.format.bundle import Segment
from relay.format.profile import VoiceProfile

MAX_PITCH_SECONDS = 120.0  # enough for stable statistics; bounds cost on long recordings


def speaking_rate(segments: Sequence[Segment], speaker: int) -> float:
    """Words per minute over the speaker's segment spans."""
    words = sum(len(s.words) or len(s.text.split()) for s in segments if s.speaker == speaker)
    seconds = sum(s.duration for s in segments if s.speaker == speaker)
    return 60.0 * words / seconds if seconds > 0 else 0.0


def measure_profile(
    embedding: np.ndarray,
    audio: np.ndarray,
    diarization: Diarization,
    segments: Sequence[Segment],
    speaker: int,
    bits: int = 4,
) -> VoiceProfile:
    """A profile for ``speaker`` from its embedding, turns and attributed segments.

    ``bits`` is the embedding's width on the wire: 4 (96 bytes, cosine 0.992
    with the float vector, the default) or 8 (192 bytes, 0.99997)."""
    speech = diarization.audio_of(audio, speaker, MAX_PITCH_SECONDS)
    f0, f0_range = pitch_stats(speech)
    profile = VoiceProfile.create(embedding, f0, f0_range, speaking_rate(segments, speaker), bits=bits)
    shape = spectrum_shape(speech, SAMPLE_RATE)
    return profile if shape is None else profile.with_colour(colour_bytes(shape))

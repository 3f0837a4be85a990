"""From diarized speaker numbers to the bundle's speakers and their profiles.

For every speaker who got at least one word, in order of first word:

* measure a voice profile (embedding from the diarization centroid, pitch,
  rate);
* look for the speaker in the ground's :class:`~relay.profiles.ProfileStore`.
  A match with an enrolled speaker gives the bundle speaker its name; any
  match reuses the stored profile's id, so the edge recognises the voice;
* send the profile in full unless the store says it has been sent before,
  in which case the bundle carries only the 6-byte id.

Speakers with too little speech for a trustworthy embedding get a profile
but are not remembered, so one cough never becomes a "recurring speaker".

With a ``reference_codec``, every profile that travels in full carries up to
five seconds of the speaker's own voice (their longest turn alone), coded
with it: an edge whose TTS can clone a voice from a clip uses it; the others
ignore it. It is sent once, with the full profile, never by reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from ground.diarize import Diarization
from ground.measure import measure_profile
from relay.audio.codecs import AudioCodec
from relay.audio.io import SAMPLE_RATE
from relay.format.bundle import Segment, Speaker
from relay.format.profile import VoiceProfile
from relay.profiles import MATCH_THRESHOLD, NAME_BONUS, ProfileStore

MIN_REMEMBER_SECONDS = 3.0
REFERENCE_SECONDS = 5.0


@dataclass(slots=True)
class SpeakerPlan:
    """The bundle's speakers and segments, and what to record once it is sent."""

    speakers: list[Speaker]
    segments: list[Segment]
    remember: list[VoiceProfile] = field(default_factory=list)  # new profiles for the store
    matched: dict[str, float] = field(default_factory=dict)  # bundle label -> similarity to the stored profile

    def commit(self, store: ProfileStore) -> None:
        """Record new profiles and mark full profiles as sent: call after the
        bundle is safely written, so a failed write never makes the ground
        believe the edge has a profile it never got."""
        for profile in self.remember:
            store.put(profile, sent=False)
        for speaker in self.speakers:
            if speaker.profile is not None and store.get(speaker.profile_id) is not None:
                store.mark_sent(speaker.profile_id)


def _first_appearance(segments: Sequence[Segment]) -> list[int]:
    order: list[int] = []
    for seg in segments:
        if seg.speaker not in order:
            order.append(seg.speaker)
    return order


def plan_speakers(
    segments: Sequence[Segment],
    diarization: Diarization,
    audio: np.ndarray,
    store: ProfileStore | None = None,
    threshold: float = MATCH_THRESHOLD,
    bits: int = 4,
    reference_codec: AudioCodec | None = None,
    edges: Sequence[str] | None = None,
) -> SpeakerPlan:
    """Renumber speakers 0..n-1 by first word, label them and attach profiles
    (with a coded reference clip when ``reference_codec`` is given). A known
    profile goes by reference when every one of ``edges`` has it (without
    edges: when a bundle carrying it in full was written)."""
    order = _first_appearance(segments)
    renumber = {old: new for new, old in enumerate(order)}
    new_segments = [Segment(renumber[s.speaker], s.start, s.end, s.text, s.words) for s in segments]

    measured: dict[int, VoiceProfile] = {}
    for old in order:
        emb = diarization.embeddings[old] if old < diarization.num_speakers else None
        if emb is None or emb.shape[-1] < 2 or not np.all(np.isfinite(emb)):
            continue  # too little speech for an embedding: the speaker travels without a profile
        measured[old] = measure_profile(emb, audio, diarization, segments, old, bits)

    # match jointly: strongest pairs first, each stored profile used once
    candidates: list[tuple[float, int, VoiceProfile]] = []
    if store is not None:
        stored = list(store)
        for old, mine in measured.items():
            vec = mine.vector()
            for known in stored:
                sim = known.similarity(vec)
                if sim >= threshold:
                    candidates.append((sim + (NAME_BONUS if known.name else 0.0), old, known))
    candidates.sort(key=lambda c: -c[0])
    chosen: dict[int, tuple[VoiceProfile, float]] = {}
    used: set[bytes] = set()
    for _score, old, known in candidates:
        if old not in chosen and known.profile_id not in used:
            chosen[old] = (known, known.similarity(measured[old].vector()))
            used.add(known.profile_id)

    plan = SpeakerPlan([], new_segments)
    anonymous = 0
    for old in order:
        label = None
        profile: VoiceProfile | None = measured.get(old)
        if old in chosen:
            known, _ = chosen[old]
            label = known.name
            profile = known
        elif profile is not None and store is not None and diarization.speech_time(old) >= MIN_REMEMBER_SECONDS:
            plan.remember.append(profile)
        if label is None:
            anonymous += 1
            label = f"S{anonymous}"
        if old in chosen:
            plan.matched[label] = round(chosen[old][1], 3)
        if profile is None:
            plan.speakers.append(Speaker(label))
        elif store is not None and old in chosen and store.was_sent(profile.profile_id, edges):
            plan.speakers.append(Speaker(label, profile.profile_id, None))
        else:
            if reference_codec is not None and not profile.reference:
                profile = with_reference(profile, diarization, audio, old, reference_codec)
            plan.speakers.append(Speaker(label, profile.profile_id, profile))
    return plan


def with_reference(
    profile: VoiceProfile, diarization: Diarization, audio: np.ndarray, speaker: int, codec: AudioCodec
) -> VoiceProfile:
    """The profile with up to ``REFERENCE_SECONDS`` of the speaker alone, coded."""
    clip = diarization.audio_of(audio, speaker, REFERENCE_SECONDS)[: int(REFERENCE_SECONDS * SAMPLE_RATE)]
    if len(clip) < SAMPLE_RATE // 2:
        return profile  # half a second is no voice to clone
    return replace(profile, reference=codec.encode(clip), reference_codec=codec.name)


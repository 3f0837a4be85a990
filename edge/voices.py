"""The edge's side of voice profiles: learn them from bundles, resolve references.

A bundle sends a speaker's profile in full the first time and later only its
id, so the edge keeps every full profile it receives and looks references up
in that store. A reference to a profile the edge never received (the bundle
that carried it was lost, or the edge's store was wiped) is not an error: the
speaker is still spoken, with a default voice, and the caller is told which
ids are missing so the operator can ask the ground to resend them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from relay.bundle import Bundle
from relay.profiles import ProfileStore, VoiceProfile


@dataclass(slots=True)
class ResolvedSpeakers:
    """One profile (or None) per bundle speaker, and what was learnt or missed."""

    profiles: list[VoiceProfile | None]
    learnt: list[bytes] = field(default_factory=list)
    missing: list[bytes] = field(default_factory=list)


def resolve_speakers(bundle: Bundle, store: ProfileStore | None) -> ResolvedSpeakers:
    out = ResolvedSpeakers([])
    for speaker in bundle.speakers:
        if speaker.profile is not None:
            if store is not None:
                store.put(speaker.profile)
                out.learnt.append(speaker.profile_id)
            out.profiles.append(speaker.profile)
        elif speaker.profile_id:
            known = store.get(speaker.profile_id) if store is not None else None
            if known is None:
                out.missing.append(speaker.profile_id)
            out.profiles.append(known)
        else:
            out.profiles.append(None)
    return out

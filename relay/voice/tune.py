"""How a voice is brought to a speaker: its pitch and range moved to the
speaker's, its long-term spectrum equalised towards theirs. One function, so
the ground, which fits a voice to a speaker, hears exactly what the edge
will speak."""

from __future__ import annotations

import numpy as np

from relay.audio.colour import equaliser_gains
from relay.audio.colour import from_bytes as colour_of
from relay.format.profile import VoiceProfile
from relay.voice.prosody import Prosody
from relay.voice.voicebank import VoiceTraits


def tune(profile: VoiceProfile, voice: VoiceTraits, *, match_pitch: bool = True, match_colour: bool = True) -> Prosody:
    """How the edge brings ``voice`` to ``profile``: its pitch and range, and its colour."""
    p, t = profile, voice
    matched = Prosody.match(p.f0_median, p.f0_range, t.f0_median, t.f0_range) if match_pitch else Prosody()
    if match_colour and p.colour and t.colour is not None:
        matched = matched.with_eq(equaliser_gains(colour_of(p.colour), np.asarray(t.colour)))
    return matched

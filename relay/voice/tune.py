"""How a voice is brought to a speaker: its pitch and range moved to the
speaker's, its long-term spectrum equalised towards theirs. One function, so
the ground, which fits a voice to a speaker, hears exactly what the edge
will speak."""

from __future__ import annotations

import numpy as np

from relay.audio.colour import bandwidth, equaliser_gains
from relay.audio.colour import from_bytes as colour_of
from relay.format.profile import VoiceProfile
from relay.voice.prosody import Prosody
from relay.voice.voicebank import VoiceTraits

BAND_LIMIT = True  # a speaker heard through a narrowband channel is spoken through one (see tune)


def tune(profile: VoiceProfile, voice: VoiceTraits, *, match_pitch: bool = True, match_colour: bool = True) -> Prosody:
    """How the edge brings ``voice`` to ``profile``: its pitch and range, and
    its colour. A speaker whose colour shows a narrowband channel (a cliff at
    the top of a telephone line's band: :func:`relay.audio.colour.bandwidth`)
    has the voice cut off there too (:data:`BAND_LIMIT`), and only the bands
    below matched: the equaliser alone, bounded at 12 dB, cannot copy a 30 dB
    cliff."""
    p, t = profile, voice
    matched = Prosody.match(p.f0_median, p.f0_range, t.f0_median, t.f0_range) if match_pitch else Prosody()
    if match_colour and p.colour and t.colour is not None:
        speaker = colour_of(p.colour)
        top = bandwidth(speaker) if BAND_LIMIT else None
        matched = matched.with_eq(equaliser_gains(speaker, np.asarray(t.colour), top), top)
    return matched

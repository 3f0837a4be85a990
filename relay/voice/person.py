"""Whom a voice could stand for: apparent sex and language, before likeness.

A speaker embedding alone will pick a man's voice for a woman when his is
nearest in its space (it did, for the demo call's speaker at 211 Hz), and a
Japanese speaker's style for English text when its timbre is closest (read
with an accent: Whisper's WER 5.2 % against 0.7 % for English styles). So the
edge's cast (:mod:`edge.assign`) and the ground's voice fitter
(:mod:`ground.fit_voice`) sort voices by these first.

The speaker's apparent sex comes from their median pitch, the one thing the
profile measures that says it: typical adult speaking pitch is about
85-155 Hz for men and 165-255 Hz for women, so below :data:`MALE_BELOW` a man,
above :data:`FEMALE_ABOVE` a woman, and between either (these bounds are from
the literature, not fitted to any recording here). A voice's comes from its
name where it says (Kokoro's ``af_``/``am_``, espeak-ng's ``+f``/``+m``),
else from its own pitch.
"""

from __future__ import annotations

import re

from relay.voice.voicebank import VoiceTraits

MALE_BELOW, FEMALE_ABOVE = 150.0, 170.0
# After sex and language, a voice is as near a speaker as its CAM++ cosine less this much per semitone
# between their median pitches: the edge's cast (edge.assign) and the ground's shortlist (ground.fit_voice).
PITCH_WEIGHT = 0.03
VOICE_MALE_BELOW = 160.0  # a voice whose name does not say is taken by its pitch
_STYLE = re.compile(r"(?<![a-z])([a-z])([fm])_[a-z]+")


def speaker_sex(f0_median: float) -> str:
    """"m", "f", or "" (between, or unknown) from a speaker's median pitch (Hz)."""
    if not f0_median > 0:
        return ""
    return "m" if f0_median < MALE_BELOW else "f" if f0_median > FEMALE_ABOVE else ""


def voice_sex(voice: VoiceTraits) -> str:
    """"m" or "f": from the voice's name where it says (a variant is its base's
    sex; a blend of both says nothing), else from its measured pitch."""
    engine, _, name = voice.key.split("~", 1)[0].partition(":")
    sexes = {m.group(2) for m in _STYLE.finditer(name)}
    if len(sexes) == 1:
        return sexes.pop()
    if engine == "espeak":
        return "f" if "+f" in name else "m"  # espeak-ng's default voice is a man's
    return "" if sexes or voice.f0_median <= 0 else "m" if voice.f0_median < VOICE_MALE_BELOW else "f"


def foreign(voice: VoiceTraits) -> bool:
    """A Kokoro style (or a blend, by its heaviest) trained on a language other than English."""
    engine, _, name = voice.key.split("~", 1)[0].partition(":")
    first = _STYLE.search(name)
    return engine == "kokoro" and first is not None and first.group(1) not in ("a", "b")

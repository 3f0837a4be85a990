"""Pitch, timbre and tempo changes on synthesized speech (PSOLA).

TTS engines speak at their own pitch and pace. To make a voice resemble a
speaker, and to make a phrase last as long as the original did, the audio is
resynthesized as Praat's "Change gender" does it (pitch-synchronous
overlap-add, :mod:`relay.audio.psola`, in NumPy so an arm64 edge runs it
too): it moves the pitch median, widens or narrows the pitch range, shifts
the formants (the size of the vocal tract, which is what makes a voice sound
deeper or brighter independently of its pitch) and stretches time without
changing pitch.

Two users:

* :class:`Variant` makes more voices for the bank out of each neural voice
  (a deeper and a brighter timbre), so a speaker has nearer candidates.
* :class:`Prosody` brings one voice to one speaker: a constant pitch ratio
  (speaker median over voice median, bounded), a range factor, and per
  phrase a duration factor for what ``length_scale`` could not reach.

PSOLA degrades with the size of the change, so every change is bounded.
Unvoiced stretches are laid at seeded uneven steps, so the same phrase always
comes out the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from relay.voice.tts import TTSEngine

PITCH_FLOOR, PITCH_CEILING = 60.0, 600.0  # as pitch_stats: a deep voice stays inside
MAX_PITCH_SHIFT = 5.0  # semitones a speaker's voice is moved at most
RANGE_BOUNDS = (0.6, 1.6)
MAX_STRETCH = 1.3  # duration factor bounds: [1 / MAX_STRETCH, MAX_STRETCH]
MIN_SECONDS = 0.12  # shorter clips are left alone (too little to analyse)


def _unit(x: float) -> bool:
    return math.isclose(x, 1.0, abs_tol=1e-3)


def change_voice(
    audio: np.ndarray,
    sample_rate: int,
    *,
    pitch_ratio: float = 1.0,
    range_factor: float = 1.0,
    formant_ratio: float = 1.0,
    duration: float = 1.0,
) -> np.ndarray:
    """``audio`` with its pitch median multiplied by ``pitch_ratio``, its pitch
    range by ``range_factor``, its formants by ``formant_ratio`` and its length
    by ``duration``. Identity changes, clips too short to analyse and audio
    with no pitch found in (whispers, noise) come back unchanged in pitch."""
    if len(audio) < MIN_SECONDS * sample_rate:
        return audio
    pitch_change = not (_unit(pitch_ratio) and _unit(range_factor))
    if not pitch_change and _unit(formant_ratio) and _unit(duration):
        return audio
    from relay.audio.psola import change_gender

    return change_gender(
        audio,
        sample_rate,
        floor=PITCH_FLOOR,
        ceiling=PITCH_CEILING,
        formant_ratio=formant_ratio,
        pitch_ratio=pitch_ratio,
        range_factor=range_factor,
        duration=duration,
    )


def semitones(ratio: float) -> float:
    return 12.0 * math.log2(ratio)


def interval(a_hz: float, b_hz: float) -> float:
    """Semitones between two pitches, either way round; 0 when either is unknown."""
    return abs(semitones(a_hz / b_hz)) if a_hz > 0 and b_hz > 0 else 0.0


def ratio_of(semitone_shift: float) -> float:
    return 2.0 ** (semitone_shift / 12.0)


@dataclass(frozen=True, slots=True)
class Variant:
    """A timbre variant of a voice: pitch moved by ``semitones`` and formants by
    ``formant`` (a ratio). Its key suffix is stable, e.g. ``~p-3f0.93``."""

    semitones: float
    formant: float

    @property
    def suffix(self) -> str:
        return f"~p{self.semitones:+g}f{self.formant:.2f}"

    def apply(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        return change_voice(audio, sample_rate, pitch_ratio=ratio_of(self.semitones), formant_ratio=self.formant)


# A deeper and a brighter timbre of each neural voice, and a further one each way:
# formants move about a third as far as pitch, as between people of one sex.
VARIANTS = (Variant(-4, 0.92), Variant(-2, 0.96), Variant(+2, 1.04), Variant(+4, 1.08))
VARIANT_REACH = 4.0  # semitones: the furthest variant's pitch move


def variant_for(speaker_f0: float, voice_f0: float, formant: float) -> Variant:
    """The variant a fitted voice is spoken in: its formant ratio, and, when
    the speaker's pitch is beyond what :class:`Prosody` moves
    (:data:`MAX_PITCH_SHIFT`), a pitch move of up to :data:`VARIANT_REACH`
    first, as the bank's own variants give its voices."""
    gap = semitones(speaker_f0 / voice_f0) if speaker_f0 > 0 and voice_f0 > 0 else 0.0
    shift = float(np.clip(round(gap), -VARIANT_REACH, VARIANT_REACH)) if abs(gap) > MAX_PITCH_SHIFT else 0.0
    return Variant(shift, formant)


class VariantEngine:
    """A voice with a :class:`Variant` applied to everything it says."""

    def __init__(self, base: TTSEngine, variant: Variant) -> None:
        self.base, self.variant = base, variant
        self.name = base.name
        self.voice_name = base.voice_name + variant.suffix
        self.sample_rate = base.sample_rate

    def synthesize(self, text: str, length_scale: float = 1.0) -> np.ndarray:
        return self.variant.apply(self.base.synthesize(text, length_scale=length_scale), self.sample_rate)


@dataclass(frozen=True, slots=True)
class Prosody:
    """How one voice is brought to one speaker: pitch ratio and range factor,
    from the speaker's profile and the voice's measured traits."""

    pitch_ratio: float = 1.0
    range_factor: float = 1.0
    eq: tuple[float, ...] = ()  # per-band gains in dB (relay.audio.colour), empty: none
    top_hz: float | None = None  # a band-limited speaker's channel ends here: nothing above it

    @classmethod
    def match(
        cls, speaker_f0: float, speaker_range: float, voice_f0: float, voice_range: float
    ) -> Prosody:
        """Move the voice toward the speaker by at most :data:`MAX_PITCH_SHIFT`
        semitones; scale its range to the speaker's, within :data:`RANGE_BOUNDS`."""
        ratio = 1.0
        if speaker_f0 > 0 and voice_f0 > 0:
            ratio = ratio_of(float(np.clip(semitones(speaker_f0 / voice_f0), -MAX_PITCH_SHIFT, MAX_PITCH_SHIFT)))
        factor = 1.0
        if speaker_range > 0 and voice_range > 0:
            factor = float(np.clip(speaker_range / voice_range, *RANGE_BOUNDS))
        return cls(ratio, factor)

    def with_eq(self, gains_db: np.ndarray, top_hz: float | None = None) -> Prosody:
        """This prosody, and the voice equalised by ``gains_db`` per band (and cut above ``top_hz``)."""
        return Prosody(self.pitch_ratio, self.range_factor, tuple(round(float(g), 2) for g in gains_db), top_hz)

    @property
    def neutral(self) -> bool:
        return _unit(self.pitch_ratio) and _unit(self.range_factor) and not any(self.eq) and self.top_hz is None

    def apply(self, audio: np.ndarray, sample_rate: int, duration: float = 1.0) -> np.ndarray:
        duration = float(np.clip(duration, 1.0 / MAX_STRETCH, MAX_STRETCH))
        out = change_voice(
            audio, sample_rate, pitch_ratio=self.pitch_ratio, range_factor=self.range_factor, duration=duration
        )
        if any(self.eq) or self.top_hz is not None:
            from relay.audio.colour import equalise

            out = equalise(out, sample_rate, np.asarray(self.eq), self.top_hz)
        return out

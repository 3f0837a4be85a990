"""The edge's side of voice profiles: learn them from bundles, resolve
references, and cast a voice for every speaker.

A bundle sends a speaker's profile in full the first time and later only its
id, so the edge keeps every full profile it receives and looks references up
in that store. A reference to a profile the edge never received (the bundle
that carried it was lost, or the edge's store was wiped) is not an error: the
speaker is still spoken, with a default voice, and the caller is told which
ids are missing so the operator can ask the ground to resend them.

:func:`cast` then picks each speaker's voice from the voice bank (jointly,
:mod:`edge.assign`) and how to bring it to the speaker's pitch
(:class:`relay.voice.prosody.Prosody`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from edge.assign import SEPARATE, AssignmentStore, Choice, assign_voices, pitch_gap
from relay.audio.codecs import get_codec
from relay.audio.io import SAMPLE_RATE
from relay.config import Codecs
from relay.format.bundle import Bundle
from relay.format.profile import VoiceProfile
from relay.profiles import ProfileStore
from relay.voice.catalog import Catalog, Voice
from relay.voice.prosody import Prosody, Variant, variant_for
from relay.voice.tts import TTSEngine
from relay.voice.tune import tune
from relay.voice.voicebank import VoiceBank, VoiceTraits
from relay.voice.voiceset import style_info

log = logging.getLogger("relay.edge")


@dataclass(slots=True)
class ResolvedSpeakers:
    """One profile (or None) per bundle speaker, and the ids the edge lacks."""

    profiles: list[VoiceProfile | None]
    missing: list[bytes] = field(default_factory=list)


def resolve_speakers(bundle: Bundle, store: ProfileStore | None) -> ResolvedSpeakers:
    """Learn the bundle's full profiles (:meth:`ProfileStore.learn`) and look up the rest."""
    missing = store.learn(bundle) if store is not None else [s.profile_id for s in bundle.speakers
                                                             if s.profile_id and s.profile is None]
    profiles: list[VoiceProfile | None] = []
    for speaker in bundle.speakers:
        if speaker.profile is not None or not speaker.profile_id:
            profiles.append(speaker.profile)
        else:
            profiles.append(store.get(speaker.profile_id) if store is not None else None)
    return ResolvedSpeakers(profiles, missing)


def reference_audio(profile: VoiceProfile, codecs: Codecs | None = None):
    """A profile's reference clip, decoded to 16 kHz."""
    return get_codec(profile.reference_codec, codecs).decode(profile.reference)


@dataclass(slots=True)
class Cast:
    """Who speaks whom: an engine and a prosody per speaker index."""

    voices: dict[int, TTSEngine]
    prosody: dict[int, Prosody]
    choices: list[Choice]


def auto_measured(voice: Voice) -> bool:
    """Voices measured on first use: Piper's and espeak-ng's (fast), Kokoro's
    English and Japanese pure styles (shipped measured: :func:`relay.voice.voicebank.seeded`)
    and the variants of these, so every speaker has natural voices near them
    out of the box; Kokoro's other languages, its blends and Coqui wait for
    ``relay edge voices measure``."""
    if voice.engine in ("piper", "espeak"):
        return True
    if voice.engine != "kokoro" or len(voice.params) != 1 or not isinstance(voice.params[0], str):
        return False
    info = style_info(voice.params[0])
    return info.english or info.language == "ja"


def cast(
    profiles: Sequence[VoiceProfile | None],
    catalog: Catalog,
    bank: VoiceBank,
    store: AssignmentStore | None = None,
    *,
    match_pitch: bool = True,
    match_colour: bool = True,
    on_measure: Callable[[Voice], None] | None = None,
    codecs: Codecs | None = None,
    language: str = "en",
    engines: set[str] | None = None,
) -> Cast:
    """A voice per speaker from the measured (or auto-measured) voices, each
    speaker with a profile moved toward its pitch and pitch range. Where the
    chosen engine clones voices and the profile carries a reference clip, the
    engine speaks in the clip's voice instead (no pitch shift needed). A
    profile with a colour has the voice equalised to it (``match_colour``).
    A profile with a voice fitted at the ground (:mod:`ground.fit_voice`) is
    spoken in that voice where this edge has its engine and styles, unless
    another speaker's fitted voice sounds like it (CAM++ cosine between them
    over :data:`edge.assign.SEPARATE`); the others are then cast from the
    bank, apart from the fitted voices too. ``engines`` limits every voice to
    those engines (a live stream on a slow device: :func:`edge.speed.fast_engines`)."""
    candidates = [v for v in catalog.voices() if (auto_measured(v) or bank.get(v) is not None)
                  and (engines is None or v.engine in engines)]
    traits = {t.key: t for t in bank.traits(candidates, progress=on_measure)}
    english = language.startswith("en") or not language
    # voices fitted at the ground first, where this edge can speak them and no two sound alike
    fitted: dict[int, tuple[Voice, VoiceTraits]] = {}
    for i, p in enumerate(profiles):
        found = _fitted(p, catalog, bank, on_measure)
        if found is None or (engines is not None and found[0].engine not in engines):
            continue
        like = [j for j, (_, t) in fitted.items() if float(t.embedding @ found[1].embedding) > SEPARATE]
        if like:  # the ground fits each speaker alone: two may come back with one voice
            log.info("speaker %d's fitted voice sounds like speaker %d's: cast from this edge's voices", i, like[0])
            continue
        fitted[i] = found
    rest = [i for i in range(len(profiles)) if i not in fitted]
    picked = assign_voices([profiles[i] for i in rest], list(traits.values()), store, english=english,
                           others=[t for _, t in fitted.values()]) if rest else []
    choices: list[Choice] = [replace(c, speaker=rest[c.speaker]) for c in picked]
    speaking: dict[int, Voice | str] = {c.speaker: c.voice for c in choices}
    for i, (voice, measured) in fitted.items():
        p = profiles[i]
        assert p is not None  # only a profile carries a fitted voice
        traits[voice.key] = measured
        choices.append(Choice(i, voice.key, p.similarity(measured.embedding), False, pitch_gap(p, measured), True))
        speaking[i] = voice
    choices.sort(key=lambda c: c.speaker)
    voices = {speaker: catalog.load(voice) for speaker, voice in speaking.items()}
    prosody = {}
    for c in choices:
        p, t = profiles[c.speaker], traits[c.voice]
        engine = voices[c.speaker]
        if p is not None and p.reference and getattr(engine, "clones", False):
            voices[c.speaker] = engine.with_reference(reference_audio(p, codecs), SAMPLE_RATE)  # type: ignore[attr-defined]
            continue
        if p is None:
            continue
        matched = tune(p, t, match_pitch=match_pitch, match_colour=match_colour)
        if not matched.neutral:
            prosody[c.speaker] = matched
    return Cast(voices, prosody, choices)


def _fitted(
    profile: VoiceProfile | None, catalog: Catalog, bank: VoiceBank, on_measure: Callable[[Voice], None] | None
) -> tuple[Voice, VoiceTraits] | None:
    """The fitted voice as spoken (with its formant ratio and any pitch move) and its traits.
    Two speakers fitted to one mix are not kept apart: the ground fits each alone."""
    mix = fitted_voice(profile, catalog)
    found = bank.traits([mix], progress=on_measure) if mix is not None else []
    if profile is None or profile.fitted is None or mix is None or not found:
        return None
    variant = variant_for(profile.f0_median, found[0].f0_median, profile.fitted.formant)
    if variant == Variant(0.0, 1.0):
        return mix, found[0]
    spoken = mix.with_variant(variant)
    found = bank.traits([spoken], progress=on_measure)
    return (spoken, found[0]) if found else None


def fitted_voice(profile: VoiceProfile | None, catalog: Catalog) -> Voice | None:
    """The mix of styles the ground fitted to ``profile``, if this edge has its
    engine and every style it mixes (otherwise the bank's nearest voice
    serves); :func:`cast` adds its formant ratio and any pitch move
    (:func:`relay.voice.prosody.variant_for`)."""
    if profile is None or profile.fitted is None:
        return None
    fitted = profile.fitted
    backend = catalog.backends.get(fitted.engine)
    if backend is None or not hasattr(backend, "mix") or not catalog.status(backend.name).available:
        log.warning("speaker %s: fitted at the ground for %r, which this edge cannot speak; cast from its own voices",
                    profile.profile_id.hex(), fitted.engine)
        return None
    have = {v.params[0] for v in catalog.voices(variants=False) if v.engine == backend.name and len(v.params) == 1}
    lacking = [name for name, _ in fitted.mix if name not in have]
    if lacking:
        log.warning("speaker %s: the fitted voice mixes %s, which this edge lacks; cast from its own voices",
                    profile.profile_id.hex(), ", ".join(repr(n) for n in lacking[:3]))
        return None
    return backend.mix(fitted.mix)

"""The edge's voice bank, joint voice assignment and multi-voice rehydration."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import shared

from edge.assign import AssignmentStore, assign_voices
from relay.audio.io import load_audio, resample
from relay.audio.speaker_embedder import SpeakerEmbedder
from relay.format.bundle import Bundle, Segment, SourceInfo, Speaker, Word
from relay.format.profile import VoiceProfile
from relay.voice.catalog import Catalog
from relay.voice.voicebank import VoiceBank

pytestmark = pytest.mark.slow  # loads the speech models


@pytest.fixture(scope="module")
def encoder() -> SpeakerEmbedder:
    return SpeakerEmbedder()


@pytest.fixture(scope="module")
def bank(tmp_path_factory, encoder) -> VoiceBank:
    return VoiceBank(Catalog(), tmp_path_factory.mktemp("bank") / "voicebank.db", encoder)


@pytest.fixture(scope="module")
def fast_traits(bank):
    """Piper and espeak-ng voices, measured (Kokoro's take minutes; measured elsewhere)."""
    return bank.traits([v for v in bank.catalog.voices() if v.engine in ("piper", "espeak")])


@pytest.fixture(scope="module")
def woman_and_man(encoder):
    """Profiles of two real people: an LJSpeech reader (female) and AMI's MEO069 (male)."""
    from relay.audio.pitch import pitch_stats

    out = []
    for audio in (load_audio(shared("ljspeech", "LJ001-0001.flac")), load_audio(shared("pyannote", "trn03.wav"))):
        f0, rng = pitch_stats(audio)
        out.append(VoiceProfile.create(encoder.embed(audio), f0, rng, 160.0))
    return out


def two_speaker_bundle() -> bytes:
    """A two-speaker bundle with real profiles (LJSpeech reader, AMI MEO069), made by the real encoder."""
    from relay.audio.pitch import pitch_stats
    from relay.format.wire import encode_bundle

    encoder = SpeakerEmbedder()
    profiles = []
    for audio in (load_audio(shared("ljspeech", "LJ001-0001.flac")), load_audio(shared("pyannote", "trn03.wav"))):
        f0, rng = pitch_stats(audio)
        profiles.append(VoiceProfile.create(encoder.embed(audio), f0, rng, 160.0))
    words_a = (Word("Morning", 0.0, 0.5), Word("everyone.", 0.5, 1.1))
    words_b = (Word("Good", 1.6, 1.9), Word("morning.", 1.9, 2.5))
    return encode_bundle(
        Bundle(
            SourceInfo("two", 3.0, "en"),
            [Speaker("A", profiles[0].profile_id, profiles[0]), Speaker("B", profiles[1].profile_id, profiles[1])],
            [Segment(0, 0.0, 1.1, "Morning everyone.", words_a), Segment(1, 1.6, 2.5, "Good morning.", words_b)],
        )
    )


def test_bank_measures_once_and_caches(bank, fast_traits, encoder):
    assert len(fast_traits) == 21  # joe, its 4 timbre variants, 16 espeak-ng voices
    assert all(np.isclose(np.linalg.norm(t.embedding), 1.0, atol=1e-4) for t in fast_traits)
    joe = next(t for t in fast_traits if t.key == "piper:en_US-joe-medium")
    assert 70 < joe.f0_median < 160 and 120 < joe.rate < 260  # a man's voice at a conversational rate
    again = VoiceBank(bank.catalog, bank.path, encoder)
    voice = bank.catalog.find("espeak:en-us+f2")
    assert again.status(voice) == "measured"
    assert np.allclose(again.get(voice).embedding, next(t for t in fast_traits if t.key == voice.key).embedding)
    variants = [t for t in fast_traits if t.key.startswith("espeak:en+")]
    sims = np.array([t.embedding for t in variants]) @ np.array([t.embedding for t in variants]).T
    assert sims[~np.eye(len(variants), dtype=bool)].max() < 0.999  # the variants are different voices


def test_assignment_is_joint_distinct_pitch_aware_and_remembered(fast_traits, woman_and_man, tmp_path):
    woman, man = woman_and_man
    store = AssignmentStore(tmp_path / "edge.db")
    first = assign_voices([woman, man, None], fast_traits, store)
    assert len({c.voice for c in first}) == 3
    pitch = {t.key: t.f0_median for t in fast_traits}
    assert pitch[first[0].voice] > pitch[first[1].voice]  # the woman gets the higher voice
    again = assign_voices([man, woman], fast_traits, store)  # another bundle, other order
    assert [c.voice for c in again] == [first[1].voice, first[0].voice] and all(c.remembered for c in again)
    crowded = assign_voices([woman] * 20, fast_traits[:3])  # more speakers than voices: reuse, never fail
    assert len(crowded) == 20
    twins = assign_voices([man, man], fast_traits)  # two variants of one model sound like one person
    assert len({c.voice.split("~")[0] for c in twins}) == 2, twins
    joes = [t for t in fast_traits if t.key.startswith("piper:")]
    brothers = assign_voices([man, man], joes)  # only one model: its variants, still two voices
    assert len({c.voice for c in brothers}) == 2 and all(c.voice.startswith("piper:") for c in brothers)


def test_each_rehydrated_speaker_is_nearest_its_own_voice(bank, fast_traits, woman_and_man, encoder):
    from edge.rehydrate import render

    woman, man = woman_and_man
    choices = assign_voices([woman, man], fast_traits)
    voices = {c.speaker: bank.catalog.load(c.voice) for c in choices}
    lines = [
        "When the ship came in the harbour was quiet and cold.",
        "We unloaded the crates before the evening tide turned.",
        "The radio said a storm would reach the station by morning.",
        "Then we will tie everything down and wait for clear skies.",
    ] * 2
    segments, t = [], 0.0
    for i, line in enumerate(lines):
        words = line.split()
        step = 0.32
        ws = tuple(Word(w, t + k * step, t + (k + 1) * step) for k, w in enumerate(words))
        segments.append(Segment(i % 2, ws[0].start, ws[-1].end, line, ws))
        t = ws[-1].end + 0.6
    speakers = [Speaker("A", woman.profile_id, woman), Speaker("B", man.profile_id, man)]
    bundle = Bundle(SourceInfo("t", t, "en"), speakers, segments)
    audio, parts = render(bundle, voices)
    rate = parts[0].sample_rate
    traits = {tr.key: tr for tr in fast_traits}
    assigned = [traits[c.voice].embedding for c in choices]
    for speaker in (0, 1):
        speech = np.concatenate([p.audio for p in parts if p.segment.speaker == speaker])
        heard = encoder.embed(resample(speech, rate, 16000))
        sims = [float(heard @ e) for e in assigned]
        assert int(np.argmax(sims)) == speaker, sims

"""The joint voice assignment (edge.assign) as an optimisation, on made-up embeddings."""

from __future__ import annotations

import numpy as np

from edge.assign import assign_voices
from relay.format.profile import VoiceProfile
from relay.voice.voicebank import VoiceTraits


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def test_two_people_are_not_given_two_voices_that_sound_alike():
    rng = np.random.default_rng(0)
    a, b, c = (_unit(rng.normal(size=192)) for _ in range(3))
    twin = _unit(a + 0.35 * _unit(rng.normal(size=192)))  # another base voice, cosine ~0.94 with a
    assert float(a @ twin) > 0.9 and abs(float(a @ c)) < 0.2
    voices = [VoiceTraits("k:a", a, 200.0, 4.0, 150.0), VoiceTraits("k:twin", twin, 200.0, 4.0, 150.0),
              VoiceTraits("k:c", c, 200.0, 4.0, 150.0), VoiceTraits("k:b", b, 200.0, 4.0, 150.0)]
    # both speakers are nearest a and its twin; the second is a little further from c
    first = VoiceProfile.create(_unit(a + 0.2 * b), 200.0, 4.0, 150.0, bits=8)
    second = VoiceProfile.create(_unit(twin + 0.8 * c), 200.0, 4.0, 150.0, bits=8)
    choices = assign_voices([first, second], voices)
    assert [ch.voice for ch in choices] == ["k:a", "k:c"]
    # alone, the second speaker would take the twin: the clash is what moved it
    assert assign_voices([second], voices)[0].voice == "k:twin"


def test_a_voice_a_sex_away_is_cast_only_when_no_closer_one_is_free():
    rng = np.random.default_rng(1)
    near, other = _unit(rng.normal(size=192)), _unit(rng.normal(size=192))
    woman = VoiceProfile.create(_unit(near + 0.1 * other), 200.0, 4.0, 150.0, bits=8)
    man_voice = VoiceTraits("k:man", near, 100.0, 4.0, 150.0)  # the nearest embedding, an octave down
    woman_voice = VoiceTraits("k:woman", _unit(near + 1.5 * other), 215.0, 4.0, 150.0)
    assert float(woman.vector() @ man_voice.embedding) > float(woman.vector() @ woman_voice.embedding) + 0.2
    choice = assign_voices([woman], [man_voice, woman_voice])[0]
    assert choice.voice == "k:woman" and not choice.out_of_reach and choice.pitch_gap is not None
    forced = assign_voices([woman], [man_voice])[0]  # nothing closer: cast, and said
    assert forced.voice == "k:man" and forced.out_of_reach
    assert forced.pitch_gap is not None and abs(forced.pitch_gap - 12.0) < 0.5  # quarter-tone pitch in profiles

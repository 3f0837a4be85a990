"""The joint voice assignment (edge.assign) as an optimisation, on made-up embeddings."""

from __future__ import annotations

import numpy as np

from edge.assign import assign_voices
from edge.voicebank import VoiceTraits
from relay.format.profile import VoiceProfile


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

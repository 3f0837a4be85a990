"""A voice fitted to a speaker at the ground (ground.fit_voice), shipped in the
profile and spoken by the edge (edge.cast.cast), on real speech."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.cast import cast
from ground.fit_voice import FIT_SENTENCES, VoiceFitter, _sentences
from relay.audio.colour import spectrum_shape, to_bytes
from relay.audio.io import SAMPLE_RATE, load_audio
from relay.audio.pitch import pitch_stats
from relay.audio.speaker_embedder import SpeakerEmbedder
from relay.format.profile import FittedVoice, VoiceProfile
from relay.profiles import ProfileStore
from relay.voice.catalog import Catalog
from relay.voice.voicebank import VoiceBank

pytestmark = pytest.mark.slow  # loads the speech models

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def campplus() -> SpeakerEmbedder:
    return SpeakerEmbedder()


@pytest.fixture(scope="module")
def reader(campplus) -> VoiceProfile:
    """The LJSpeech reader's profile from her first eight clips, as the ground measures it."""
    clips = sorted((DATA / "ljspeech").glob("*.flac"))
    audio = np.concatenate([load_audio(c) for c in clips[:8]])
    f0, f0_range = pitch_stats(audio)
    shape = spectrum_shape(audio, SAMPLE_RATE)
    assert shape is not None
    return VoiceProfile.create(campplus.embed(audio), f0, f0_range, 160.0).with_colour(to_bytes(shape))


def test_fitting_sentences_are_the_speakers_own_with_one_held_out():
    own = ["the first phrase has some words in it", "and a second one follows it here",
           "then a third phrase comes", "and the last one is held out"]
    fitting, held_out = _sentences(own)
    assert fitting == own[:3] and held_out == own[3]
    assert _sentences(["too short", "yes"]) == (list(FIT_SENTENCES[:-1]), FIT_SENTENCES[-1])


def test_the_edge_speaks_the_fitted_voice_and_falls_back_without_its_styles(reader, caplog):
    catalog = Catalog()
    bank = VoiceBank(catalog)
    fitted = reader.with_fitted(FittedVoice("kokoro", (("jf_alpha", 0.7), ("jm_kumo", 0.3)), 0.96))
    chosen = cast([fitted], catalog, bank)
    choice = chosen.choices[0]
    assert choice.fitted and choice.voice.startswith("kokoro:mix/") and choice.voice.endswith("~p+0f0.96")
    audio = chosen.voices[0].synthesize("The ship will reach the harbour at dawn.")
    assert len(audio) > chosen.voices[0].sample_rate  # it speaks
    # two speakers the ground fitted to one voice: the second is cast from the bank, apart from the first
    rng = np.random.default_rng(4)
    near = reader.vector() + 0.2 * rng.normal(size=reader.vector().shape).astype(np.float32)
    twin = VoiceProfile.create(near / np.linalg.norm(near), reader.f0_median, reader.f0_range, 160.0)
    pair = cast([fitted, twin.with_fitted(fitted.fitted)], catalog, bank).choices
    assert pair[0].fitted and not pair[1].fitted and pair[1].voice.split("~")[0] != pair[0].voice.split("~")[0]
    stock = cast([reader], catalog, bank).choices[0]
    assert not stock.fitted
    assert stock.voice.startswith(("kokoro:af_", "kokoro:bf_"))  # an English woman's voice for an English woman
    caplog.set_level("WARNING", "relay.edge")
    # styles this edge lacks (a newer set's, or a name no set has), alone or beside one it has
    for mix in ((("xf_nobody", 1.0),), (("af_heart", 0.6), ("xf_nobody", 0.4))):
        caplog.clear()
        unknown = reader.with_fitted(FittedVoice("kokoro", mix))
        assert cast([unknown], catalog, bank).choices[0].voice == stock.voice
        assert [r.getMessage() for r in caplog.records if "'xf_nobody'" in r.getMessage()], caplog.text
    other_engine = reader.with_fitted(FittedVoice("styletts", (("jf_alpha", 1.0),)))
    assert cast([other_engine], catalog, bank).choices[0].voice == stock.voice
    assert "'styletts', which this edge cannot speak" in caplog.text


def test_the_ground_fits_stored_speakers_and_resends_them(reader, campplus, tmp_path):
    from ground.encoder import Encoder
    from relay.config import GroundConfig, GroundSection

    store = ProfileStore(tmp_path / "profiles.db")
    store.put(reader, sent=True)
    config = GroundConfig(ground=GroundSection(fit_voices=True))
    encoder = Encoder(config, store=store, fitter=VoiceFitter(campplus, budget_s=1.0))  # a few candidates
    encoder.check()  # Kokoro is here: no complaint
    done = encoder.fit_next()
    assert done is not None
    profile, fit = done
    assert profile.profile_id == reader.profile_id and fit.candidates >= 1
    assert fit.voice.engine == "kokoro" and all(name in encoder.fitter.backend.styles() for name, _ in fit.voice.mix)
    kept = store.get(reader.profile_id)
    assert kept is not None and kept.fitted is not None and kept.fitted.describe() == fit.voice.describe()
    assert not store.was_sent(reader.profile_id)  # the next bundle carries it in full, fitted voice and all
    assert encoder.fit_next() is None  # nobody left to fit

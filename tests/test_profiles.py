"""Voice profiles: quantisation, the wire, the SQLite store."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from relay.errors import BundleError
from relay.format.bundle import Bundle, Segment, SourceInfo, Speaker, Word
from relay.format.profile import FittedVoice, VoiceProfile, dequantize, quantize
from relay.format.wire import decode_bundle, encode_bundle, field_costs
from relay.profiles import ProfileError, ProfileStore


def _unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=192).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.mark.parametrize("bits,size,min_cos", [(8, 192, 0.9999), (4, 96, 0.98)])
def test_quantisation_keeps_the_direction(bits, size, min_cos):
    for seed in range(20):
        v = _unit(seed)
        q = quantize(v, bits)
        assert len(q) == size
        assert float(v @ dequantize(q)) >= min_cos


def test_quantize_rejects_garbage():
    with pytest.raises(ValueError):
        quantize(np.full(192, np.nan))
    with pytest.raises(ValueError):
        quantize(_unit(0), bits=3)
    with pytest.raises(ValueError):
        dequantize(b"\x00" * 100)


def test_profile_figures_survive_the_wire_rounding():
    p = VoiceProfile.create(_unit(1), f0_median=118.0, f0_range=7.3, rate=163.4)
    assert abs(p.f0_median - 118.0) / 118.0 < 0.015  # quarter-tone steps
    assert abs(p.f0_range - 7.3) <= 0.125 and p.rate == 163
    assert len(p.profile_id) == 6
    again = VoiceProfile.from_wire(p.profile_id, p.wire_fields())
    assert again == p


def _bundle(speakers: list[Speaker]) -> Bundle:
    words = (Word("hello", 0.0, 0.4), Word("there", 0.4, 0.8))
    segs = [Segment(i, 0.0 + i, 0.8 + i, "hello there", tuple(Word(w.text, w.start + i, w.end + i) for w in words))
            for i in range(len(speakers))]
    return Bundle(SourceInfo("t", 3.0, "en"), speakers, segs)


def test_full_reference_and_no_profile_round_trip():
    p = VoiceProfile.create(_unit(2), 200.0, 9.0, 170.0)
    q = VoiceProfile.create(_unit(3), 110.0, 5.0, 140.0, bits=8)
    b = _bundle([Speaker("Ann", p.profile_id, p), Speaker("S2", q.profile_id, None), Speaker("S3")])
    back = decode_bundle(encode_bundle(b))
    assert [s.profile_state for s in back.speakers] == ["full", "ref", "none"]
    assert back.speakers[0].profile == p
    assert back.speakers[1].profile_id == q.profile_id[:4]  # format v2 refers by the id's first 4 bytes
    assert decode_bundle(encode_bundle(b, version=1)).speakers[1].profile_id == q.profile_id
    costs = field_costs(b)
    assert 96 < costs["profiles"] < 96 + 40  # one int4 embedding, a reference, a nil


def test_bundles_without_profiles_have_no_profile_field():
    b = _bundle([Speaker("S1")])
    assert "profiles" not in field_costs(b)
    assert decode_bundle(encode_bundle(b)).speakers == [Speaker("S1")]


def test_malformed_profile_is_a_bundle_error():
    import msgpack

    from relay.format import v1
    from relay.format.varint import put_uvarint

    b = _bundle([Speaker("S1")])
    fields = [v for _, v in v1.body_fields(b)] + [[[b"\x01\x02"]]]  # a 2-byte profile id
    payload = v1.compress(msgpack.packb(fields, use_bin_type=True), 1)
    good = encode_bundle(b, version=1)
    header = v1.read_header(good)
    out = bytearray(good[: header.body_offset - 1])  # header up to the body length
    put_uvarint(out, len(payload))
    out += payload
    import hashlib

    out += hashlib.blake2b(out, digest_size=8).digest()
    with pytest.raises(BundleError) as err:
        decode_bundle(bytes(out))
    assert err.value.reason == "body"


def test_store_put_match_sent_and_names(tmp_path):
    store = ProfileStore(tmp_path / "p.db")
    ann = VoiceProfile.create(_unit(4), 210.0, 8.0, 160.0, name="Ann")
    anon = VoiceProfile.create(_unit(5), 120.0, 6.0, 150.0)
    store.put(ann, sent=False)
    store.put(anon, sent=False)
    assert len(store) == 2 and store.by_name("Ann") == ann
    noisy = _unit(4) + 0.02 * _unit(9)
    match = store.match(noisy / np.linalg.norm(noisy))
    assert match is not None and match.profile.name == "Ann" and match.similarity > 0.9
    assert store.match(_unit(6)) is None  # a stranger
    assert not store.was_sent(ann.profile_id)
    store.mark_sent(ann.profile_id)
    store.put(ann)  # an update keeps the flag
    assert store.was_sent(ann.profile_id)
    with pytest.raises(ProfileError, match="already enrolled"):
        store.put(VoiceProfile.create(_unit(7), 100.0, 5.0, 120.0, name="Ann"))
    store.close()
    reopened = ProfileStore(tmp_path / "p.db")  # it is on disk
    assert reopened.get(anon.profile_id) == anon and reopened.remove("Ann") and not reopened.remove("Ann")


def test_unwritable_store_is_one_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ProfileError, match="cannot open profile store"):
        ProfileStore(blocker / "sub" / "p.db")


def test_colour_travels_in_the_profile_and_old_profiles_still_read():
    from relay.audio.colour import from_bytes, to_bytes

    shape = np.linspace(-9.0, 9.0, 16)
    plain = VoiceProfile.create(_unit(4), 180.0, 6.0, 150.0)
    coloured = plain.with_colour(to_bytes(shape))
    assert coloured.profile_id == plain.profile_id  # a refinement keeps the id
    back = decode_bundle(encode_bundle(_bundle([Speaker("A", coloured.profile_id, coloured),
                                                Speaker("B", plain.profile_id, plain)])))
    assert back.speakers[0].profile == coloured
    assert np.allclose(from_bytes(back.speakers[0].profile.colour), shape, atol=0.25)
    assert back.speakers[1].profile.colour == b""  # a profile without one reads as before
    assert len(coloured.wire_fields()) == 6 and len(plain.wire_fields()) == 4


def test_colour_of_the_wrong_size_is_refused():
    p = VoiceProfile.create(_unit(5), 180.0, 6.0, 150.0)
    with pytest.raises(ValueError):
        p.with_colour(b"\x01" * 15)
    fields = p.wire_fields() + [None, b"\x01" * 300]
    with pytest.raises(ValueError):
        VoiceProfile.from_wire(p.profile_id, fields)


def test_store_keeps_the_colour(tmp_path):
    from relay.audio.colour import to_bytes

    p = VoiceProfile.create(_unit(6), 120.0, 4.0, 150.0).with_colour(to_bytes(np.arange(16) - 7.5))
    with ProfileStore(tmp_path / "p.db") as store:
        store.put(p)
        assert store.get(p.profile_id) == p


def _fitted() -> FittedVoice:
    return FittedVoice("kokoro", (("jf_alpha", 0.25), ("jm_kumo", 0.6), ("jf_nezumi", 0.15)))


def test_a_fitted_voice_travels_in_the_profile_under_300_bytes():
    plain = VoiceProfile.create(_unit(7), 180.0, 6.0, 150.0)
    fitted = plain.with_fitted(_fitted())
    assert fitted.profile_id == plain.profile_id  # a refinement keeps the id
    back = decode_bundle(encode_bundle(_bundle([Speaker("A", fitted.profile_id, fitted),
                                                Speaker("B", plain.profile_id, plain)])))
    got = back.speakers[0].profile.fitted
    assert got is not None and got.engine == "kokoro"
    assert dict(got.mix) == pytest.approx(dict(_fitted().mix), abs=1e-3)
    assert back.speakers[1].profile.fitted is None
    assert len(msgpack.packb(fitted.wire_fields()[-1])) < 300
    most = FittedVoice("k" * 24, tuple((f"{i}".rjust(24, "s"), 1.0) for i in range(8)))  # the largest there is
    assert len(msgpack.packb(most.wire())) <= 300


@pytest.mark.parametrize("bad", [
    ["kokoro"],  # no mix
    ["kokoro", ["jf_alpha"]],  # a style without a weight
    ["kokoro", ["jf_alpha", 0]],  # a zero weight
    ["kokoro", ["jf_alpha", 5000]],  # more than the whole
    ["kokoro", ["jf_alpha", 500, "jf_alpha", 500]],  # a style twice
    ["k" * 25, ["jf_alpha", 1000]],  # a name too long
    ["kokoro", ["jf\nalpha", 1000]],  # not printable
    ["kokoro", ["s", 1] * 9],  # too many styles
    ["kokoro", [b"jf_alpha", 1000]],  # bytes, not text
])
def test_a_hostile_fitted_voice_is_ignored_in_one_line(bad, monkeypatch, caplog):
    """The rest of the profile is sound: the bundle plays, the edge casts from its own voices."""
    p = VoiceProfile.create(_unit(8), 180.0, 6.0, 150.0)
    fields = [*p.wire_fields(), None, None, bad]
    monkeypatch.setattr(VoiceProfile, "wire_fields", lambda self: fields)  # what a hostile ground would pack
    data = encode_bundle(_bundle([Speaker("A", p.profile_id, p)]))
    monkeypatch.undo()
    caplog.set_level("WARNING", "relay.format")
    back = decode_bundle(data).speakers[0].profile
    assert back is not None and back.fitted is None and back.profile_id == p.profile_id
    assert back.f0_median == pytest.approx(p.f0_median)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "fitted voice is ignored" in lines[0] and "\n" not in lines[0]


def test_store_keeps_the_fitted_voice(tmp_path):
    p = VoiceProfile.create(_unit(9), 120.0, 4.0, 150.0)
    with ProfileStore(tmp_path / "p.db") as store:
        store.put(p)
        store.put(p.with_fitted(_fitted()))
        store.put(p)  # a later sighting without one keeps it
        kept = store.get(p.profile_id)
        assert kept is not None and kept.fitted is not None
        assert kept.fitted.describe() == _fitted().describe()


def test_inspect_shows_a_fitted_voice(tmp_path):
    from typer.testing import CliRunner

    from relay.cli import app

    p = VoiceProfile.create(_unit(10), 180.0, 6.0, 150.0).with_fitted(_fitted())
    path = tmp_path / "b.bundle"
    path.write_bytes(encode_bundle(_bundle([Speaker("Ann", p.profile_id, p)])))
    out = CliRunner().invoke(app, ["inspect", str(path)], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert "fitted voice" in out.output and "kokoro:jf_alpha*0.25+jm_kumo*0.60+jf_nezumi*0.15" in out.output
    data = CliRunner().invoke(app, ["inspect", str(path), "--json"])
    assert '"fitted": "kokoro:jf_alpha*0.25+jm_kumo*0.60+jf_nezumi*0.15"' in data.output

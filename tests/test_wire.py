"""Bundle format v1 (still read, and written on request): exact round trips, and one error type for every defect."""

from __future__ import annotations

import dataclasses
import hashlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.errors import BundleError
from relay.format import v1
from relay.format.bundle import AudioClip, Bundle, Segment, SourceInfo, Speaker, Word
from relay.format.v1 import TICK, decode_bundle, encode_bundle, field_costs, read_header
from relay.format.varint import put_uvarint
from relay.testing.bundles import real_bundle


def words_at(text: str, start: float, step: float = 0.3, gap_every: int = 3) -> tuple[Word, ...]:
    out, t = [], start
    for i, token in enumerate(text.split()):
        if i and i % gap_every == 0:
            t += 0.4
        out.append(Word(token, round(t, 2), round(t + step, 2)))
        t += step
    return tuple(out)


def sample_bundle() -> Bundle:
    w1 = words_at("Hello there, how are you today?", 0.5)
    w2 = words_at("Fine — thanks. Ça va très bien!", 3.0)
    return Bundle(
        source=SourceInfo("Morning call", 12.34, "en"),
        speakers=[Speaker("S1"), Speaker("Dana")],
        segments=[
            Segment(0, w1[0].start, w1[-1].end, "Hello there, how are you today?", w1),
            Segment(1, w2[0].start, w2[-1].end, "Fine — thanks. Ça va très bien!", w2),
            Segment(0, 2.9, 6.0, "overlapping, no word timings"),  # starts before the previous one ends
        ],
    )


def test_round_trip_is_exact_to_the_tick():
    b = sample_bundle()
    data = encode_bundle(b)
    d = decode_bundle(data)
    assert d.bundle_id == b.bundle_id and d.created == b.created
    assert d.source == SourceInfo("Morning call", round(12.34 / TICK) * TICK, "en")
    assert d.speakers == b.speakers
    assert [s.text for s in d.segments] == [s.text for s in b.segments]
    assert [s.speaker for s in d.segments] == [0, 1, 0]
    for got, want in zip(d.segments, b.segments):
        assert got.start == pytest.approx(want.start, abs=TICK / 2)
        assert got.end == pytest.approx(want.end, abs=TICK / 2)
        assert [w.text for w in got.words] == [w.text for w in want.words]
        for gw, ww in zip(got.words, want.words):
            assert gw.start == pytest.approx(ww.start, abs=TICK / 2)
            assert gw.end == pytest.approx(ww.end, abs=TICK / 2)


def test_audio_clips_round_trip_beside_the_text():
    b = sample_bundle()
    b.clips = [
        AudioClip(7.0, 2.5, "codec2-700C", bytes(range(200)), 1, "low-confidence"),
        AudioClip(9.6, 1.04, "opus-6k", b"\x01\x02", None, "non-speech"),
    ]
    d = decode_bundle(encode_bundle(b))
    assert [s.text for s in d.segments] == [s.text for s in b.segments]
    assert [(c.codec, c.data, c.speaker, c.reason) for c in d.clips] == [
        (c.codec, c.data, c.speaker, c.reason) for c in b.clips
    ]
    assert [(c.start, c.duration) for c in d.clips] == [pytest.approx((c.start, c.duration)) for c in b.clips]
    assert all(s.profile_id == b"" for s in d.speakers)  # a nil profiles field before the clips
    b.clips = [AudioClip(0.0, 1.0, "codec2-700C", b"x", 5)]
    with pytest.raises(ValueError, match="clip speaker 5"):
        encode_bundle(b)


def test_unknown_clip_codec_is_a_bad_body():
    b = sample_bundle()
    b.clips = [AudioClip(0.0, 1.0, "codec2-700C", b"x", 0)]
    fields = [value for _, value in v1.body_fields(b)]
    fields[6][0][0] = 99  # a codec id from the future
    body = v1.compress(msgpack.packb(fields, use_bin_type=True), 1)
    out = bytearray(v1.MAGIC) + bytes([1, 1, 1]) + b.bundle_id + b"\x00\x00\x00\x01"
    put_uvarint(out, len(body))
    out += body
    with pytest.raises(BundleError, match="clip codec id 99 is unknown") as err:
        decode_bundle(_reseal(bytes(out) + b"\x00" * v1.DIGEST_SIZE))
    assert err.value.reason == "body"


def test_header_is_readable_without_decompressing():
    b = sample_bundle()
    h = read_header(encode_bundle(b))
    assert (h.version, h.dict_id, h.bundle_id, h.created) == (1, 1, b.bundle_id, b.created)


def test_field_costs_add_up_to_the_bundle():
    b = sample_bundle()
    costs = field_costs(b)
    parts = sum(v for k, v in costs.items() if k != "body_total")
    assert parts == len(encode_bundle(b))


def test_dictionary_makes_bundles_smaller():
    b = sample_bundle()
    assert len(encode_bundle(b, dict_id=1)) < len(encode_bundle(b, dict_id=0))


def test_text_that_does_not_match_its_words_is_refused():
    b = sample_bundle()
    bad = Segment(0, 0, 1, "two words", (Word("one", 0, 1),))
    b.segments = [bad]
    with pytest.raises(ValueError):
        encode_bundle(b)


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda d: b"RIFF" + d[4:], "magic"),
        (lambda d: b"", "magic"),
        (lambda d: d[:3] + bytes([2]) + d[4:], "version"),
        (lambda d: d[:3] + bytes([255]) + d[4:], "version"),
        (lambda d: d[:-1], "truncated"),
        (lambda d: d[:10], "truncated"),
        (lambda d: d + b"\x00", "truncated"),
        (lambda d: d[:20] + bytes([d[20] ^ 0x01]) + d[21:], "hash"),
        (lambda d: d[:-1] + bytes([d[-1] ^ 0x80]), "hash"),
    ],
)
def test_defects_raise_bundle_error(mutate, reason):
    data = encode_bundle(sample_bundle())
    with pytest.raises(BundleError) as info:
        decode_bundle(mutate(data), "x.bundle")
    assert info.value.reason == reason
    assert str(info.value).startswith("x.bundle: ")


def test_every_flipped_bit_and_every_truncation_is_caught():
    data = encode_bundle(sample_bundle())
    for i in range(len(data)):
        for bit in (0x01, 0x80):
            bad = data[:i] + bytes([data[i] ^ bit]) + data[i + 1 :]
            with pytest.raises(BundleError):
                decode_bundle(bad)
    for n in range(len(data)):
        with pytest.raises(BundleError):
            decode_bundle(data[:n])


def _reseal(data: bytes) -> bytes:
    body = data[: -v1.DIGEST_SIZE]
    return body + hashlib.blake2b(body, digest_size=v1.DIGEST_SIZE).digest()


def test_unknown_dictionary_is_named():
    data = bytearray(encode_bundle(sample_bundle()))
    data[5] = 99  # dict_id varint, one byte for id 1
    with pytest.raises(BundleError) as info:
        decode_bundle(_reseal(bytes(data)))
    assert info.value.reason == "dictionary" and "99" in str(info.value)


def test_hash_valid_but_malformed_body_is_a_bundle_error():
    b = sample_bundle()
    payload = msgpack.packb(["not", "the", "right", "shape"])
    body = v1.compress(payload, 1)
    out = bytearray(v1.MAGIC) + bytes([1, 1, 1]) + b.bundle_id + b"\x00\x00\x00\x01"
    put_uvarint(out, len(body))
    out += body
    with pytest.raises(BundleError) as info:
        decode_bundle(_reseal(bytes(out) + b"\x00" * v1.DIGEST_SIZE))
    assert info.value.reason == "body"


word_text = st.text(st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc")), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(
    segs=st.lists(
        st.tuples(
            st.integers(0, 2),
            st.lists(st.tuples(word_text, st.integers(0, 30), st.integers(0, 200)), min_size=0, max_size=8),
            st.integers(-100, 500),
        ),
        max_size=6,
    )
)
def test_round_trip_property(segs):
    """Any words, gaps and overlaps survive encode -> decode to the tick."""
    segments, t = [], 0
    for spk, ws, lead in segs:
        t = max(0, t + lead)
        if not ws:
            segments.append(Segment(spk, t * TICK, (t + 50) * TICK, "no words here"))
            t += 50
            continue
        words = []
        for token, gap, dur in ws:
            t += gap
            words.append(Word(token, t * TICK, (t + dur) * TICK))
            t += dur
        segments.append(Segment(spk, words[0].start, words[-1].end, " ".join(w.text for w in words), tuple(words)))
    b = Bundle(SourceInfo("", t * TICK, "en"), [Speaker("A"), Speaker("B"), Speaker("C")], segments)
    d = decode_bundle(encode_bundle(b))
    assert len(d.segments) == len(b.segments)
    for got, want in zip(d.segments, b.segments):
        assert (got.speaker, got.text) == (want.speaker, want.text)
        assert round(got.start / TICK) == round(want.start / TICK)
        assert round(got.end / TICK) == round(want.end / TICK)
        assert [(w.text, round(w.start / TICK), round(w.end / TICK)) for w in got.words] == [
            (w.text, round(w.start / TICK), round(w.end / TICK)) for w in want.words
        ]


def test_a_stream_part_round_trips_and_costs_a_dozen_bytes():
    from relay.format.bundle import StreamPart

    plain = decode_bundle(real_bundle(20))
    part = StreamPart(b"\x01\x02\x03\x04", 41, 1234.56, last=True)
    live = dataclasses.replace(plain, source=dataclasses.replace(plain.source, stream=part))
    data = encode_bundle(live)
    got = decode_bundle(data).source.stream
    assert got is not None and (got.stream_id, got.seq, got.last) == (part.stream_id, 41, True)
    assert got.start == pytest.approx(1234.56, abs=0.01)
    assert len(data) - len(encode_bundle(plain)) <= 14
    assert decode_bundle(real_bundle(20)).source.stream is None  # a recording's bundle has none
    with pytest.raises(ValueError):
        encode_bundle(dataclasses.replace(plain, source=dataclasses.replace(plain.source,
                                                                            stream=StreamPart(b"\x01", 0, 0.0))))


@pytest.mark.parametrize("bad", [
    "not a list", [b"\x01\x02\x03\x04"], [b"\x01\x02", 1, 0], [b"\x01\x02\x03\x04", -1, 0],
    [b"\x01\x02\x03\x04", 1, "0"], [b"\x01\x02\x03\x04", True, 0], [b"\x01\x02\x03\x04", 1, 0, "yes"],
    ["abcd", 1, 0], [b"\x01\x02\x03\x04", 2**32, 0],
])
def test_a_malformed_stream_part_is_refused(monkeypatch, bad):
    plain = decode_bundle(real_bundle(20))
    monkeypatch.setattr(v1, "_pack_stream", lambda stream: [bad])
    data = encode_bundle(plain)
    with pytest.raises(BundleError):
        decode_bundle(data)

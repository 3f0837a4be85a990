"""Fuzzing every parser that takes input from outside: bundles, ``relay inspect``,
link messages, the edge's store, the configuration loader.

Inputs are built structurally (real bundles from the wire code, then fields
swapped for values of any msgpack type, then resealed with a valid digest so
the body parser is reached) and by byte-level mutation. Whatever comes in,
the only exception allowed out is the project's own one-line error type, and
memory stays bounded: the decoder's limits are set small here and the peak
allocation of each example is measured (tracemalloc), so a bundle that
inflates, or claims millions of words, fails the test. Time is bounded by
the same limits (no example may do more than the limits allow); it is not
asserted, since the suite runs on loaded machines.
"""

from __future__ import annotations

import hashlib
import tracemalloc

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.store import Inbox
from relay.config import ConfigError, EdgeConfig, GroundConfig, load
from relay.errors import BundleError
from relay.format import v1
from relay.format.bundle import AudioClip, Bundle, Segment, SourceInfo, Speaker, Word
from relay.format.limits import Limits
from relay.format.profile import VoiceProfile
from relay.format.varint import put_uvarint
from relay.format.wire import decode_bundle, encode_bundle
from relay.link.messages import Ack, Fragment, LinkError, Priority, parse_down
from relay.link.signing import Keyring, SigningKey
from relay.link.transfer import Manifest, OutgoingTransfer
from relay.testing.configs import SAME_CLOCK

pytestmark = pytest.mark.slow  # hypothesis over the decoders

LIMITS = Limits(max_bundle_bytes=64 * 1024, max_body_bytes=256 * 1024, max_duration=3600.0, max_segments=500,
                max_words=5000, max_text_chars=50_000, max_speakers=16, max_clips=200)
PEAK = 48 * 1024 * 1024  # bytes one example may allocate at its peak
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.data_too_large])

msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=True)
    | st.text(max_size=30) | st.binary(max_size=40),
    lambda children: st.lists(children, max_size=6),
    max_leaves=20,
)


def bounded(fn):
    """Run ``fn`` and fail if it allocated more than :data:`PEAK` at any moment."""
    tracemalloc.start()
    try:
        return fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < PEAK, f"{peak / 1e6:.0f} MB allocated"


def seal(fields: list, bundle_id: bytes = b"\x01" * 8, dict_id: int = 1) -> bytes:
    """A bundle around any body, with a valid digest, so the body parser is what is tested."""
    body = v1.compress(msgpack.packb(fields, use_bin_type=True), dict_id)
    out = bytearray(v1.MAGIC) + bytes([v1.VERSION, v1.FLAG_ZSTD])
    put_uvarint(out, dict_id)
    out += bundle_id + b"\x00\x00\x00\x01"
    put_uvarint(out, len(body))
    out += body
    return bytes(out) + hashlib.blake2b(out, digest_size=v1.DIGEST_SIZE).digest()


def reseal(data: bytes) -> bytes:
    body = data[: -v1.DIGEST_SIZE]
    return body + hashlib.blake2b(body, digest_size=v1.DIGEST_SIZE).digest()


@st.composite
def bundles(draw) -> Bundle:
    """Valid bundles of every shape: speakers with and without profiles, words, clips."""
    n_spk = draw(st.integers(1, 3))
    speakers = []
    for i in range(n_spk):
        if draw(st.booleans()):
            emb = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).standard_normal(192)
            profile = VoiceProfile.create(emb, draw(st.floats(60, 400)), draw(st.floats(0, 20)),
                                          draw(st.floats(0, 300)))
            speakers.append(Speaker(f"S{i}", profile.profile_id, profile if draw(st.booleans()) else None))
        else:
            speakers.append(Speaker(f"S{i}"))
    segments, t = [], 0
    for _ in range(draw(st.integers(0, 5))):
        words = []
        for token in draw(st.lists(st.sampled_from(["ask", "not", "what", "your", "country"]), max_size=6)):
            t += draw(st.integers(0, 20))
            d = draw(st.integers(0, 40))
            words.append(Word(token, t * v1.TICK, (t + d) * v1.TICK))
            t += d
        spk = draw(st.integers(0, n_spk - 1))
        if words:
            segments.append(Segment(spk, words[0].start, words[-1].end, " ".join(w.text for w in words),
                                    tuple(words)))
    clips = [AudioClip(draw(st.integers(0, 500)) * v1.TICK, draw(st.integers(0, 100)) * v1.TICK,
                       draw(st.sampled_from(["codec2-700C", "opus-6k", "lyra-3200"])), draw(st.binary(max_size=50)),
                       draw(st.none() | st.integers(0, n_spk - 1)), "forced")
             for _ in range(draw(st.integers(0, 3)))]
    return Bundle(SourceInfo(draw(st.text(max_size=20)), t * v1.TICK + 1.0, "en"), speakers, segments, clips)


def decode_or_bundle_error(data: bytes) -> None:
    try:
        bounded(lambda: decode_bundle(data, "fuzz", LIMITS))
    except BundleError:
        pass


@FUZZ
@given(b=bundles(), path=st.lists(st.integers(0, 40), min_size=1, max_size=3), value=msgpack_values)
def test_a_field_of_any_type_anywhere_in_a_valid_body_is_a_bundle_error(b, path, value):
    fields = [v for _, v in v1.body_fields(b)]
    fields = msgpack.unpackb(msgpack.packb(fields, use_bin_type=True), raw=False)  # plain lists
    node = fields
    for step in path[:-1]:
        if not isinstance(node, list) or not node:
            break
        node = node[step % len(node)]
    if isinstance(node, list) and node:
        node[path[-1] % len(node)] = value
    else:
        fields[path[0] % len(fields)] = value
    decode_or_bundle_error(seal(fields))


@FUZZ
@given(b=bundles(), flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), min_size=1, max_size=8))
def test_mutated_bytes_are_a_bundle_error(b, flips):
    data = bytearray(v1.encode_bundle(b))  # format v1
    for pos, x in flips:
        data[pos % len(data)] ^= x
    decode_or_bundle_error(bytes(data))
    decode_or_bundle_error(reseal(bytes(data)))  # past the digest: the header and body parsers


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(b=bundles(), flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), min_size=1, max_size=4),
       cut=st.integers(0, 64))
def test_mutated_v2_bytes_are_a_bundle_error(text_model, b, flips, cut):
    """Format v2 has no digest of its own (the link's signed manifest covers it), so a
    mutation reaches the arithmetic decoder: it must still end in a BundleError or a
    bundle, within the limits, whatever the bits say."""
    data = bytearray(encode_bundle(b))
    for pos, x in flips:
        data[pos % len(data)] ^= x
    decode_or_bundle_error(bytes(data))
    decode_or_bundle_error(bytes(data[: max(0, len(data) - cut)]))
    decode_or_bundle_error(bytes(data) + bytes(cut))


@FUZZ
@given(fields=st.lists(msgpack_values, max_size=8))
def test_any_msgpack_body_is_a_bundle_error(fields):
    decode_or_bundle_error(seal(fields))


@FUZZ
@given(n=st.integers(0, 2**40), ticks=st.integers(0, 2**63))
def test_bombs_are_refused_before_they_are_built(n, ticks):
    """Counts, durations and sizes that would allocate gigabytes: refused under the limits."""
    words = "a " * min(n, 300_000)
    timings = bytearray(b"\x01")
    put_uvarint(timings, ticks)
    for body in ([["t", "en", ticks], [["S1"]], b"\x00", words, bytes(timings)],
                 [["t", "en", 100], [["S1"]] * min(n, 10_000), b"", "", b""],
                 [["t", "en", 100], [["S1"]], b"", "", b"", None, [[1, 0, ticks, ticks, 0, b"x"]] * 3]):
        decode_or_bundle_error(seal(body))


def test_inspect_prints_one_line_for_every_hostile_bundle(tmp_path, capsys):
    """``relay inspect`` on a sample of hostile bundles: exit 1, one line, never a traceback."""
    from relay.cli import main

    samples = [
        seal([["t", "en", float("nan")], [["S1"]], b"", "", b""]),
        seal([["t", "en", 2**63], [["S1"]], b"", "", b""]),
        seal([["t", "en", "abc"], [["S1"]], b"", "", b""]),
        seal([["t", "en", 100], [5], b"", "", b""]),
        seal([["t", "en", 100], [["S1"]], b"", "", b"", None, [[1, 0, 2**62, 5, 0, b"x"]]]),
        seal([["t", "en", 100], [["S1"]], b"\x00", "a " * 200_000, b"\x01" + b"\x02" * 200_000]),
        seal([["t", "en", 100], [["S1"]], b"\x00", "hi", b"\x03\x04"], dict_id=0),
        seal([[1, 2, 3], 4, 5, 6, 7]),
    ]
    for i, data in enumerate(samples):
        path = tmp_path / f"h{i}.bundle"
        path.write_bytes(data)
        for args in (["inspect", str(path)], ["inspect", str(path), "--json"]):
            code = main(args)
            err = capsys.readouterr().err
            lines = [ln for ln in err.splitlines() if ln.strip()]
            assert code == 1 and len(lines) == 1 and lines[0].startswith("error: "), (i, err)


@FUZZ
@given(data=st.binary(max_size=600) | st.builds(lambda h, b: bytes([h]) + b, st.integers(0, 255),
                                                 st.binary(max_size=400)))
def test_link_parsers_raise_only_link_errors(data):
    key = SigningKey.generate().public
    for parse in (lambda: parse_down(data, 500), lambda: Manifest.unpack(data), lambda: Ack.parse(data),
                  lambda: Ack.unpack(data, key, "ship1")):
        try:
            bounded(parse)
        except LinkError:
            pass


@pytest.fixture(scope="module")
def fuzz_inbox(tmp_path_factory):
    ground = SigningKey.generate()
    inbox = Inbox(tmp_path_factory.mktemp("fuzz") / "edge.db", "ship1", Keyring([ground.public]), limits=LIMITS,
                  link=SAME_CLOCK)
    real = OutgoingTransfer.create(b"\x07" * 8, b"\x89SR" + bytes(2000), "ship1", Priority.NORMAL, 340, ground, 1,
                                   2_000_000_000 - 10)
    return inbox, ground, real


@FUZZ
@given(index=st.integers(0, 0xFFFF), count=st.integers(2, 0xFFFF), data=st.binary(max_size=700),
       bid=st.sampled_from([b"\x07" * 8, b"\x08" * 8]) | st.binary(min_size=8, max_size=8),
       mutate_real=st.booleans())
def test_the_edge_store_takes_any_fragment_without_raising(fuzz_inbox, index, count, data, bid, mutate_real):
    inbox, _, real = fuzz_inbox
    if mutate_real:  # a part of the real transfer with some of its bytes changed
        i = index % real.count
        part = bytearray(real.part(i))
        if part:
            part[len(data) % len(part)] ^= 0x5A
        frag = Fragment(real.bundle_id, i, real.count, bytes(part))
    else:
        frag = Fragment(bid, index % count, count, data)
    got = bounded(lambda: inbox.receive(frag))
    assert got.complete is None  # nothing forged ever completes a transfer
    assert inbox.stored_bytes() == 0


SHIPPED = {"ground": ("config/ground.toml", GroundConfig), "edge": ("config/edge.toml", EdgeConfig)}
toml_scalars = (st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
                | st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=20))


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


@FUZZ
@given(which=st.sampled_from(sorted(SHIPPED)), line=st.integers(0, 200),
       value=toml_scalars | st.lists(toml_scalars, max_size=3), key=st.text("abcdefghijklmnop_", min_size=1,
                                                                            max_size=12))
def test_the_config_loader_says_one_line_for_any_change(tmp_path_factory, which, line, value, key):
    from tests.conftest import ROOT

    rel, model = SHIPPED[which]
    lines = (ROOT / rel).read_text().splitlines()
    settable = [i for i, ln in enumerate(lines) if "=" in ln and not ln.lstrip().startswith("#")]
    i = settable[line % len(settable)]
    name = lines[i].split("=", 1)[0].strip() if line % 3 else key
    lines[i] = f"{name} = {toml_value(value)}"
    path = tmp_path_factory.mktemp("cfg") / "x.toml"
    path.write_text("\n".join(lines) + "\n")
    try:
        load(path, model)
    except ConfigError as e:
        assert "\n" not in str(e) and str(e).startswith(str(path))


@FUZZ
@given(data=st.binary(max_size=300))
def test_the_config_loader_takes_any_bytes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("cfg") / "x.toml"
    path.write_bytes(data)
    for model in (GroundConfig, EdgeConfig):
        try:
            load(path, model)
        except ConfigError:
            pass

"""What decoding a format v2 bundle may cost (issue 24): a stream ends with its
data, the tokens a bundle may hold follow its size, every decoding runs
within a CPU budget and can be abandoned, and a valid dense bundle (a word
said over and over) still decodes."""

from __future__ import annotations

import os
import random
import threading
from pathlib import Path

import pytest

from relay.errors import BundleError
from relay.format import v2
from relay.format.arith import MAX_OVERRUN, Adaptive, ArithmeticDecoder, ArithmeticEncoder, get_raw, put_raw
from relay.format.bundle import Bundle, Segment, SourceInfo, Speaker
from relay.format.limits import DecodeAbandoned, DecodeBudget
from relay.format.wire import decode_bundle, encode_bundle

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("text_model")]  # slow: decodes through Whisper's text model
DATA = Path(__file__).parent / "data"


class Counting(DecodeBudget):
    """A budget that counts the decoder steps (tokens) it was asked about."""

    steps = 0

    def check(self) -> None:
        self.steps += 1
        super().check()


def header() -> bytes:
    return v2.MAGIC + os.urandom(8) + (0).to_bytes(4, "big")


@pytest.mark.parametrize("size", [1, 30, pytest.param(200, marks=pytest.mark.slow)])
def test_a_stream_of_zeros_ends_where_its_data_does(size):
    """The decoder used to read zeros past the end for as long as the text
    model kept predicting: 25 CPU-s for 30 bytes. Now it stops within a
    window's width of the end, and the text it read is bounded by the size."""
    budget = Counting(600.0)
    with pytest.raises(BundleError) as err:
        decode_bundle(header() + bytes(size), budget=budget)
    assert err.value.reason in ("truncated", "limits")  # ran out of data, or out of the tokens it may hold
    if size <= 30:
        assert "ends before its data" in str(err.value)
    assert budget.steps <= min(v2.TOKENS_BASE + v2.TOKENS_PER_BYTE * size, v2.TITLE_TOKENS + 1)


def test_the_decoder_reads_no_further_than_an_encoder_can_need():
    """Random symbols under adaptive models, then the end check, encoded and read
    back: a real stream never needs more than MAX_OVERRUN bits past its end."""
    rng = random.Random(7)
    for trial in range(300):
        sizes = [rng.choice([2, 3, 17, 256]) for _ in range(rng.randint(0, 60))]
        symbols = [rng.randrange(n) for n in sizes]
        enc = ArithmeticEncoder()
        models = [Adaptive(n) for n in sizes]
        for model, s in zip(models, symbols, strict=True):
            model.encode(enc, s)
        put_raw(enc, v2.END_CHECK, v2.END_BITS)
        data = enc.finish()
        dec = ArithmeticDecoder(data)
        models = [Adaptive(n) for n in sizes]
        assert [m.decode(dec) for m in models] == symbols, trial
        assert get_raw(dec, v2.END_BITS) == v2.END_CHECK
        assert dec.overrun() <= MAX_OVERRUN


def test_text_beyond_its_tokens_per_byte_is_refused_at_both_ends(monkeypatch):
    """The ground refuses to write what a reader would not take, and a reader
    stops at the bound (reason: limits), whatever the stream says."""
    dense = Bundle(SourceInfo("", 20.0, "en"), [Speaker("S1")], [Segment(0, 0.0, 20.0, " ".join(["la"] * 120))])
    data = encode_bundle(dense)
    monkeypatch.setattr(v2, "TOKENS_PER_BYTE", 2)
    with pytest.raises(ValueError, match="more than a reader takes"):
        encode_bundle(dense)
    with pytest.raises(BundleError) as err:
        decode_bundle(data)
    assert err.value.reason == "limits" and "tokens a bundle of" in str(err.value)


def test_the_cpu_budget_is_enforced_and_a_decoding_can_be_abandoned():
    data = encode_bundle(Bundle(SourceInfo("Budget", 10.0, "en"), [Speaker("S1")],
                                [Segment(0, 0.0, 9.0, "ask not what your country can do for you")]))
    with pytest.raises(BundleError) as err:
        decode_bundle(data, budget=DecodeBudget(-1.0))  # no CPU time at all
    assert err.value.reason == "limits" and "CPU-seconds" in str(err.value)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(DecodeAbandoned):  # not a bad bundle: whoever asked gave up
        decode_bundle(data, budget=DecodeBudget(600.0, cancel))
    # neither outcome is remembered: the bundle decodes when asked again
    assert decode_bundle(data).segments[0].text == "ask not what your country can do for you"


def test_the_budget_grows_with_the_size():
    from relay.format.limits import Limits

    limits = Limits(decode_cpu_seconds=10.0, decode_cpu_per_kb=20.0)
    assert limits.decode_seconds(0) == 10.0 and limits.decode_seconds(2048) == 50.0


@pytest.mark.slow
def test_a_valid_dense_bundle_still_decodes():
    """'la' said 1,500 times in 46 bytes (32 tokens a byte): refused before by a
    cap of 16 tokens a byte, taken now (the cap is 64)."""
    data = (DATA / "la-1500.bundle").read_bytes()
    assert len(data) < 50
    budget = Counting(600.0)
    bundle = decode_bundle(data, budget=budget)
    assert bundle.segments[0].text == " ".join(["la"] * 1500)
    assert budget.steps == 1500 + 1  # every token, and the end of the text

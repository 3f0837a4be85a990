"""Bundles of real words for link tests and benchmarks.

The words are LJSpeech's transcripts (public domain, in ``../shared/data``),
with speech-like word timings, so a bundle compresses as a real transcript
does: the link's overhead is measured on realistic sizes, not on noise.
"""

from __future__ import annotations

import functools
import os
import random
from pathlib import Path

from relay.format.bundle import Bundle, Segment, SourceInfo, Speaker, Word
from relay.format.wire import encode_bundle

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("SPEECH_RELAY_SHARED", ROOT.parent / "shared")) / "data"


@functools.cache
def lj_words(shared: Path = SHARED) -> list[str]:
    psv = shared / "ljspeech" / "transcripts.psv"
    return " ".join(line.split("|", 1)[1] for line in psv.read_text().splitlines() if "|" in line).split()


def real_bundle(words: int = 40, title: str = "call", seed: int = 0, version: int = 1) -> bytes:
    """A bundle of real words: LJSpeech's transcripts from word ``seed`` on,
    with speech-like word timings.

    Format v1 unless asked: the link carries either as bytes, and the link
    tests queue, decode and check hundreds of bundles, while decoding v2 text
    runs Whisper's decoder at about 10 ms a token (format v2 is tested on its
    own, in tests/test_wire_v2.py, and end to end by the daemons' tests)."""
    text = lj_words()
    rng = random.Random(seed)
    ws, t = [], 0.0
    for i in range(words):
        d = rng.uniform(0.15, 0.5)
        ws.append(Word(text[(seed + i) % len(text)], round(t, 2), round(t + d, 2)))
        t += d + rng.choice([0.0, 0.05, 0.1, 0.4])
    seg = Segment(0, ws[0].start, ws[-1].end, " ".join(w.text for w in ws), tuple(ws))
    return encode_bundle(Bundle(SourceInfo(title, ws[-1].end + 0.5, "en"), [Speaker("S1")], [seg]), version)


def conversation(phrases: int = 12, seed: int = 0, title: str = "watch change",
                 names: tuple[str, str] = ("Alice", "S2")) -> Bundle:
    """A bundle of two speakers taking turns: LJSpeech's words, speech-like timings."""
    words, rng, t, segments, k = lj_words(), random.Random(seed), 0.5, [], seed * 97
    for p in range(phrases):
        ws = []
        for _ in range(rng.randint(3, 30)):
            d = rng.uniform(0.15, 0.45)
            ws.append(Word(words[k % len(words)], round(t, 2), round(t + d, 2)))
            k += 1
            t += d + rng.choice([0.0, 0.05, 0.1])
        segments.append(Segment(p % 2, ws[0].start, ws[-1].end, " ".join(w.text for w in ws), tuple(ws)))
        t += rng.uniform(0.3, 1.5)
    return Bundle(SourceInfo(title, t + 0.5, "en"), [Speaker(names[0]), Speaker(names[1])], segments)


def repeated(word: str = "la", times: int = 750, title: str = "") -> bytes:
    """A valid, dense format v2 bundle: one word said ``times`` times (a
    hallucination loop, a chant) in one segment. The text model is sure of
    every repeat, so the text costs a fraction of a bit a token: about 30
    tokens a byte (1,500 tokens in 46 bytes), and each costs the reader a
    decoder step."""
    text = " ".join([word] * times)
    bundle = Bundle(SourceInfo(title, 60.0, "en"), [Speaker("S1")], [Segment(0, 0.0, 60.0, text)],
                    bundle_id=os.urandom(8), created=0)
    return encode_bundle(bundle, 2)


def garbage_text(size: int = 64 * 1024, seed: int = 0) -> bytes:
    """A hostile format v2 bundle: a valid start (no title, one speaker, one
    segment) and then random bytes. Arithmetic decoding random bits samples
    the text model, which soon samples its end of text: a few tokens, then
    the rest fails to parse (measured by benchmarks/decode_cost.py)."""
    from relay.format import v2
    from relay.format.arith import ArithmeticEncoder

    w = v2.Writer()
    m, enc = w.m, w.enc
    m.flags[0].encode(enc, 0)
    m.flags[1].encode(enc, 0)
    v2.put_title(w, "")
    v2.put_language(w, "en")
    v2.put_speakers(w, [Speaker("S1")])
    w.count(m.small, 1)
    enc._pending += 1  # end the prefix as ArithmeticEncoder.finish does, keeping every bit (no trailing zeros dropped):
    enc._emit(0 if enc._low < (1 << 62) else 1)  # whatever follows, the symbols above decode as written
    bits = enc._bits + [0] * (-len(enc._bits) % 8)
    prefix = bytes(int("".join(map(str, bits[i:i + 8])), 2) for i in range(0, len(bits), 8))
    assert isinstance(enc, ArithmeticEncoder)
    noise = random.Random(seed).randbytes(size)
    return v2.MAGIC + os.urandom(8) + (0).to_bytes(4, "big") + prefix + noise

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


def real_bundle(words: int = 40, title: str = "call", seed: int = 0) -> bytes:
    """A bundle of real words: LJSpeech's transcripts from word ``seed`` on,
    with speech-like word timings."""
    text = lj_words()
    rng = random.Random(seed)
    ws, t = [], 0.0
    for i in range(words):
        d = rng.uniform(0.15, 0.5)
        ws.append(Word(text[(seed + i) % len(text)], round(t, 2), round(t + d, 2)))
        t += d + rng.choice([0.0, 0.05, 0.1, 0.4])
    seg = Segment(0, ws[0].start, ws[-1].end, " ".join(w.text for w in ws), tuple(ws))
    return encode_bundle(Bundle(SourceInfo(title, ws[-1].end + 0.5, "en"), [Speaker("S1")], [seg]))

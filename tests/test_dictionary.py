"""The shipped zstd dictionary must not have seen the test transcripts."""

from __future__ import annotations

import re

import zstandard

from relay.format.dictionary import dictionary_bytes, get_dictionary
from tests.conftest import JFK_TEXT


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def test_no_five_word_run_of_a_test_transcript_is_in_the_dictionary(ljspeech):
    content = " ".join(_words(dictionary_bytes(1).decode("latin-1")))
    refs = [text for _, text in ljspeech] + [JFK_TEXT]
    leaked = []
    for ref in refs:
        w = _words(ref)
        for i in range(len(w) - 4):
            run = " ".join(w[i : i + 5])
            if f" {run} " in f" {content} ":
                leaked.append(run)
    assert not leaked, f"test text found in the dictionary: {leaked[:5]}"


def test_dictionary_halves_short_english_text(ljspeech):
    """On text it has never seen, the dictionary beats plain zstd by a wide margin."""
    plain = zstandard.ZstdCompressor(level=19)
    with_dict = zstandard.ZstdCompressor(level=19, dict_data=get_dictionary(1))
    raw = sum(len(t.encode()) for _, t in ljspeech)
    a = sum(len(plain.compress(t.encode())) for _, t in ljspeech)
    b = sum(len(with_dict.compress(t.encode())) for _, t in ljspeech)
    assert b < 0.75 * a
    assert b < 0.7 * raw

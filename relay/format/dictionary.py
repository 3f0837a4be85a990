"""Zstandard dictionaries that ship inside the package.

A bundle of a few hundred bytes is too short for zstd to learn English from
itself; a dictionary trained beforehand on English text gives it common words
and phrases to point at. Both ends must hold the same dictionary, so each one
has a small number in the bundle header, and a dictionary, once released, is
never changed: a new one gets a new number.

``scripts/train_dictionary.py`` rebuilds ``en-v1`` from its corpus (Debian's
``fortunes`` collection with every line that shares a 4-word sequence with any
test transcript removed); ``tests/test_dictionary.py`` checks that no test
transcript leaked into it.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

import zstandard

#: number in the bundle header -> file in relay/dictionaries/
DICTIONARIES: dict[int, str] = {1: "en-v1.zdict"}
DEFAULT_DICT_ID = 1


@cache
def get_dictionary(dict_id: int) -> zstandard.ZstdCompressionDict:
    """The dictionary with this header number; ``KeyError`` if we have none."""
    name = DICTIONARIES[dict_id]
    data = files("relay.format.dictionaries").joinpath(name).read_bytes()
    return zstandard.ZstdCompressionDict(data)


def dictionary_bytes(dict_id: int) -> bytes:
    return get_dictionary(dict_id).as_bytes()

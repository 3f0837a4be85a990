#!/usr/bin/env python3
"""Train the zstd dictionary that ships as relay/dictionaries/en-v1.zdict.

Corpus: Debian's ``fortunes`` and ``fortunes-min`` packages (BSD fortune
cookies: quotations, jokes, proverbs; everyday English in sentences), unpacked
with ``apt-get download fortunes fortunes-min && dpkg-deb -x``. The ASCII-art
and definitions files are skipped. Any fortune that shares a 4-word sequence
with a text given by ``--exclude`` (our test transcripts) is dropped, so the
measured compression on the test set is not flattered by the dictionary
having seen it.

    python scripts/train_dictionary.py /tmp/fortunes/usr/share/games/fortunes \
        --exclude ../shared/data/ljspeech/transcripts.psv --exclude-text "..." \
        -o relay/dictionaries/en-v1.zdict

Prints the mean compressed size of held-out fortunes for each candidate size
so the choice of size is a measurement, not a guess.
"""

from __future__ import annotations

import argparse
import random
import re
from pathlib import Path

import zstandard

SKIP = {"art", "ascii-art", "definitions", "linuxcookie", "debian", "computers", "linux"}


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def ngrams(tokens: list[str], n: int = 4) -> set[tuple[str, ...]]:
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def read_fortunes(folder: Path) -> list[str]:
    out = []
    for path in sorted(folder.iterdir()):
        if path.suffix or path.name in SKIP or not path.is_file():
            continue
        for block in path.read_text(encoding="latin-1").split("\n%\n"):
            lines = [ln.strip() for ln in block.splitlines()]
            lines = [ln for ln in lines if ln and not ln.startswith("--") and ln != "%"]
            text = " ".join(lines)
            if 20 <= len(text) <= 600 and sum(c.isalpha() for c in text) > 0.6 * len(text):
                out.append(text)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", type=Path, help="folder with fortune files")
    ap.add_argument("--exclude", type=Path, action="append", default=[], help="text file to keep out")
    ap.add_argument("--exclude-text", action="append", default=[], help="text to keep out")
    ap.add_argument("--size", type=int, default=0, help="dictionary size (0: pick the best measured)")
    ap.add_argument("--dict-id", type=int, default=1)
    ap.add_argument("-o", "--output", type=Path, required=True)
    args = ap.parse_args()

    banned: set[tuple[str, ...]] = set()
    for path in args.exclude:
        for line in path.read_text(encoding="utf-8").splitlines():
            banned |= ngrams(words(line.split("|")[-1]))
    for text in args.exclude_text:
        banned |= ngrams(words(text))

    samples = read_fortunes(args.corpus)
    kept = [s for s in samples if not (ngrams(words(s)) & banned)]
    print(f"{len(samples)} fortunes, {len(samples) - len(kept)} dropped for sharing text with the test set")
    random.Random(1).shuffle(kept)
    held_out, train = kept[:500], kept[500:]
    train_bytes = [s.encode() for s in train]

    def mean_size(d: zstandard.ZstdCompressionDict | None) -> float:
        kw = {"dict_data": d} if d else {}
        c = zstandard.ZstdCompressor(level=19, write_checksum=False, write_dict_id=False, **kw)
        return sum(len(c.compress(s.encode())) - 4 for s in held_out) / len(held_out)

    raw = sum(len(s.encode()) for s in held_out) / len(held_out)
    print(f"held-out fortunes: {raw:.1f} bytes raw, {mean_size(None):.1f} zstd without dictionary")
    sizes = [args.size] if args.size else [16384, 32768, 65536, 112640]
    best = None
    for size in sizes:
        d = zstandard.train_dictionary(size, train_bytes, dict_id=args.dict_id, level=19, threads=-1)
        m = mean_size(d)
        print(f"dictionary {size:>6} bytes: {m:.1f} bytes per held-out fortune ({m / raw:.1%})")
        if best is None or m < best[0]:
            best = (m, d)
    assert best is not None
    args.output.write_bytes(best[1].as_bytes())
    print(f"wrote {args.output} ({len(best[1].as_bytes())} bytes)")


if __name__ == "__main__":
    main()

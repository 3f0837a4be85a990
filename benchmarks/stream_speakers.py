"""Who is speaking in a live stream: does each part's speaker get
linked to the same speaker in the stream's earlier parts?

Each recording is cut as ``relay ground capture`` cuts it (at pauses, parts
of at most ``--chunk`` seconds) and each part encoded by the ground's own
pipeline. For every speaker a part measured, its true identity is the RTTM
speaker who talks most during that speaker's words. The parts go through
``StreamSpeakers`` as capture runs it, which gives each part speaker a
stream speaker; every pair of part speakers in a recording is then right
if they share a stream speaker exactly when they are the same person. The
threshold with the most pairs right is chosen on the tune files
(``trn01``-``trn04``) only; the test files (``dev00``, ``dev01`` and the
packaged call) are reported at it, with the stream's speaker count against
the truth.

    .venv/bin/python benchmarks/stream_speakers.py [--chunk S]
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "pyannote"
TUNE = ["trn01", "trn02", "trn03", "trn04"]
TEST = ["dev00", "dev01", "sample"]


def rttm(name: str) -> list[tuple[float, float, str]]:
    out = []
    for path in DATA.glob("*.rttm"):
        for line in path.read_text().splitlines():
            f = line.split()
            if len(f) > 7 and f[1] == name:
                out.append((float(f[3]), float(f[3]) + float(f[4]), f[7]))
    return out


def parts_of(name: str, chunk: float, encoder) -> list[tuple[object, dict[int, str]]]:  # noqa: ANN001
    """Each part's bundle, with the true person behind each of its speakers that has a profile."""
    from ground.capture import Cutter
    from relay.audio.io import SAMPLE_RATE, load_audio

    truth = rttm(name)
    audio = load_audio(DATA / f"{name}.wav")
    cutter = Cutter(chunk)
    parts = []
    for a in range(0, len(audio), SAMPLE_RATE // 10):
        parts += list(cutter.feed(audio[a:a + SAMPLE_RATE // 10]))
    parts.append(cutter.flush())
    out = []
    for part in parts:
        if not len(part.audio):
            continue
        bundle = encoder.encode(part.audio, name, fit_voices=False).bundle
        who: dict[int, str] = {}
        for i, spk in enumerate(bundle.speakers):
            talk: dict[str, float] = defaultdict(float)
            for seg in bundle.segments:
                for w in seg.words if seg.speaker == i else ():
                    a, b = part.start + w.start, part.start + w.end
                    for s, e, person in truth:
                        talk[person] += max(0.0, min(b, e) - max(a, s))
            if spk.profile is not None and talk:
                who[i] = max(talk, key=talk.__getitem__)
        out.append((bundle, who))
    return out


def linked(parts: list, threshold: float) -> tuple[list[tuple[str, str]], int]:
    """(stream speaker, true person) for every part speaker; and how many stream speakers there were."""
    from ground.capture import StreamSpeakers

    linker = StreamSpeakers(threshold)
    out = []
    for bundle, who in parts:
        joined, _ = linker.link(bundle)
        out += [(joined.speakers[i].label, person) for i, person in who.items()]
    return out, len(linker.known)


def right(assigned: list[tuple[str, str]]) -> tuple[int, int]:
    ok = [(a[0] == b[0]) == (a[1] == b[1]) for a, b in itertools.combinations(assigned, 2)]
    return sum(ok), len(ok)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunk", type=float, default=10.0)
    args = parser.parse_args()
    from ground.encoder import Encoder
    from relay.config import GroundConfig

    encoder = Encoder(GroundConfig(), store=None)  # no store: every part's speakers as measured
    made = {name: parts_of(name, args.chunk, encoder) for name in TUNE + TEST}

    def tune_score(t: float) -> float:
        ok = [right(linked(made[name], t)[0]) for name in TUNE]
        return sum(o for o, _ in ok) / max(1, sum(n for _, n in ok))

    grid = [round(t, 2) for t in np.arange(0.2, 0.85, 0.05)]
    scores = {t: tune_score(t) for t in grid}
    top = max(scores.values())
    tied = [t for t in grid if scores[t] == top]
    best = tied[len(tied) // 2]  # the middle of the best stretch
    pairs = sum(right(linked(made[name], best)[0])[1] for name in TUNE)
    print(f"{args.chunk:g}-s parts. Tune ({', '.join(TUNE)}): {pairs} pairs of part speakers; threshold {best} "
          f"(best from {tied[0]} to {tied[-1]}) gets {top:.0%} of them right")
    for name in TEST:
        assigned, count = linked(made[name], best)
        ok, n = right(assigned)
        truth = {who for *_, who in rttm(name)}
        print(f"  test {name}: {len(assigned)} part speakers, {n} pairs, {ok / max(1, n):.0%} right at {best}; "
              f"stream speakers {count} (true: {len(truth)}, of whom {len({p for _, p in assigned})} heard)")


if __name__ == "__main__":
    main()

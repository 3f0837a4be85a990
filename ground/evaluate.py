"""Scoring diarization against RTTM references with pyannote.metrics.

Used by the benchmark and the tests alike, so both report the same DER:
pooled over files the way pyannote.metrics accumulates it (total error time
over total reference speech), at a collar of 0 and 0.5 s, overlap scored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ground.diarize import Diarization, Turn
from ground.frontend import Region, merge
from ground.pyannote_campplus import import_pyannote


@dataclass(frozen=True, slots=True)
class DERResult:
    uri: str
    der: float  # fraction
    missed: float  # seconds
    false_alarm: float
    confusion: float
    total: float  # seconds of reference speech
    speakers: int  # hypothesis
    reference_speakers: int


def load_rttm(paths: Iterable[Path]) -> dict:
    """{uri: pyannote Annotation} from RTTM files (SPEAKER lines only)."""
    import_pyannote()
    from pyannote.core import Annotation, Segment

    out: dict = {}
    for path in paths:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            f = line.split()
            if len(f) < 8 or f[0] != "SPEAKER":
                continue
            uri, start, dur, label = f[1], float(f[3]), float(f[4]), f[7]
            out.setdefault(uri, Annotation(uri=uri))[Segment(start, start + dur)] = label
    return out


BRIDGE = 0.3  # same-speaker gaps under this are one span (the edge speaks across them)


def word_spans(segments, duration: float, bridge: float = BRIDGE) -> Diarization:
    """Who speaks when *as the bundle says it*: each speaker's words as spans,
    gaps under ``bridge`` seconds between one speaker's words bridged (:func:`ground.frontend.merge`).
    This is what the edge will speak, so it is what the bundle is scored on."""
    by_speaker: dict[int, list[Region]] = {}
    for seg in segments:
        for w in seg.words or ():
            by_speaker.setdefault(seg.speaker, []).append(Region(w.start, w.end))
    turns = [Turn(r.start, r.end, speaker) for speaker, words in by_speaker.items()
             for r in merge(words, pad=0.0, gap=bridge)]
    turns.sort(key=lambda t: (t.start, t.speaker))
    empty = np.zeros((len(by_speaker), 0), np.float32)
    return Diarization(turns=turns, exclusive=turns, embeddings=empty, duration=duration)


def to_annotation(diarization: Diarization, uri: str):
    from pyannote.core import Annotation, Segment

    ann = Annotation(uri=uri)
    for i, turn in enumerate(diarization.turns):
        ann[Segment(turn.start, turn.end), i] = f"S{turn.speaker + 1}"
    return ann


def score(references: Mapping, hypotheses: Mapping[str, Diarization], collar: float = 0.0):
    """Per-file results and the pooled DER (fraction) at ``collar`` seconds."""
    from pyannote.core import Segment, Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate

    metric = DiarizationErrorRate(collar=collar, skip_overlap=False)
    rows = []
    for uri, hyp in hypotheses.items():
        ref = references[uri]
        uem = Timeline([Segment(0.0, hyp.duration)])  # the whole recording is scored
        d = metric(ref, to_annotation(hyp, uri), uem=uem, detailed=True)
        rows.append(
            DERResult(
                uri, d["diarization error rate"], d["missed detection"], d["false alarm"], d["confusion"],
                d["total"], hyp.num_speakers, len(ref.labels()),
            )
        )
    return rows, abs(metric)


def word_attribution(segments, reference) -> tuple[float, int]:
    """(accuracy, words scored) of word-level speaker attribution.

    A word is scored when its whole span lies inside turns of exactly one
    reference speaker. Bundle speakers are mapped to reference speakers
    one-to-one (Hungarian assignment on co-occurrence counts), and a word is
    right when its bundle speaker maps to its reference speaker.
    """
    from scipy.optimize import linear_sum_assignment

    pairs = []
    tracks = list(reference.itertracks(yield_label=True))
    for seg in segments:
        for w in seg.words:
            labels = {lab for s, _, lab in tracks if s.start <= w.start and w.end <= s.end}
            if len(labels) == 1:
                pairs.append((seg.speaker, labels.pop()))
    if not pairs:
        return float("nan"), 0
    hyps = sorted({h for h, _ in pairs})
    refs = sorted({r for _, r in pairs})
    counts = np.zeros((len(hyps), len(refs)))
    for h, r in pairs:
        counts[hyps.index(h), refs.index(r)] += 1
    rows, cols = linear_sum_assignment(-counts)
    return float(counts[rows, cols].sum() / len(pairs)), len(pairs)

"""Words to speakers: put diarization and transcription together, word by word.

Whisper segments follow pauses and punctuation, not speakers, so a segment
often holds the end of one person's sentence and the start of another's.
Every word is given to a speaker on its own, and a segment is split wherever
the speaker changes.

How a word is assigned, in order:

1. the speaker with the most *exclusive* time over the word's span (the
   exclusive diarization gives each instant to the one most likely speaker);
2. if the word falls in overlapped speech only the non-exclusive turns cover,
   the speaker with the most turn time over the span;
3. if no turn touches the word at all (VAD and ASR disagree at the edges of
   speech), the speaker of the nearest turn, or the previous word's speaker
   when that is as near.

Overlapping speech: Whisper writes down one voice, usually the louder, and
the exclusive diarization says who that most likely is, so the word goes to
them. The other voice's words are not recovered; the overlap itself is kept
in the turns and counted in the DER.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from ground.diarize import Turn
from relay.format.bundle import Segment, Word


class _Index:
    """Turns sorted by start, for overlap and distance queries."""

    def __init__(self, turns: Sequence[Turn]) -> None:
        self.turns = sorted(turns, key=lambda t: t.start)
        self.starts = [t.start for t in self.turns]
        self.max_len = max((t.duration for t in self.turns), default=0.0)

    def overlaps(self, start: float, end: float) -> dict[int, float]:
        out: dict[int, float] = {}
        i = bisect.bisect_left(self.starts, start - self.max_len)
        while i < len(self.turns) and self.turns[i].start < end:
            t = self.turns[i]
            o = min(end, t.end) - max(start, t.start)
            if o > 0:
                out[t.speaker] = out.get(t.speaker, 0.0) + o
            i += 1
        return out

    def nearest(self, time: float) -> tuple[int, float] | None:
        best: tuple[int, float] | None = None
        for t in self.turns:
            d = max(t.start - time, time - t.end, 0.0)
            if best is None or d < best[1]:
                best = (t.speaker, d)
        return best


def _speaker_of(word: Word, exclusive: _Index, turns: _Index, previous: int | None) -> int | None:
    for index in (exclusive, turns):
        scores = index.overlaps(word.start, max(word.end, word.start + 0.01))
        if scores:
            top = max(scores.values())
            winners = [s for s, v in scores.items() if v >= top - 1e-6]
            return previous if previous in winners else min(winners)
    near = turns.nearest((word.start + word.end) / 2)
    if near is None:
        return previous
    if previous is not None:
        prev_d = min((max(t.start - word.start, word.start - t.end, 0.0) for t in turns.turns if t.speaker == previous),
                     default=float("inf"))
        if prev_d <= near[1] + 1e-6:
            return previous
    return near[0]


def attribute(segments: Sequence[Segment], turns: Sequence[Turn], exclusive: Sequence[Turn]) -> list[Segment]:
    """Split ``segments`` at speaker changes and set each piece's speaker.

    Speaker numbers are those of the diarization. A segment without word
    timings goes whole to the speaker with most time over its span. With no
    turns at all (silence, or diarization found nobody), everything goes to
    speaker 0.
    """
    ex_index, turn_index = _Index(exclusive or turns), _Index(turns)
    out: list[Segment] = []
    previous: int | None = None
    for seg in segments:
        if not seg.words:
            scores = ex_index.overlaps(seg.start, seg.end) or turn_index.overlaps(seg.start, seg.end)
            speaker = max(scores, key=scores.__getitem__) if scores else (previous or 0)
            out.append(Segment(speaker, seg.start, seg.end, seg.text))
            previous = speaker
            continue
        run: list[Word] = []
        run_speaker: int | None = None
        for word in seg.words:
            found = _speaker_of(word, ex_index, turn_index, previous)
            speaker = 0 if found is None else found
            if run and speaker != run_speaker:
                out.append(_piece(run, run_speaker))
                run = []
            run.append(word)
            run_speaker = previous = speaker
        out.append(_piece(run, run_speaker))
    return out


def _piece(words: list[Word], speaker: int | None) -> Segment:
    return Segment(speaker or 0, words[0].start, words[-1].end, " ".join(w.text for w in words), tuple(words))


SNAP = 0.5  # seconds a phrase's edge may move to meet its speaker's turn edge


def fit_spans(segments: Sequence[Segment], turns: Sequence[Turn], snap: float = SNAP) -> list[Segment]:
    """Move each phrase's outer edges to where its speaker's turn starts and ends.

    Whisper's word times are ±0.2 s at best and often start a phrase late or end
    it early (a trailing syllable, a breath); pyannote's segmentation marks
    speech at 17 ms resolution. A phrase's first word starts where the turn of
    its own speaker that it lies in starts, and its last word ends where that
    turn ends, when that is at most ``snap`` s away and no other phrase is in
    between. Words inside a phrase are not moved, and nothing reaches into
    time the diarizer calls silence: the edge then speaks each phrase over the
    time the speaker actually talked.
    """
    out = list(segments)
    for i, seg in enumerate(out):
        if not seg.words:
            continue
        mine = [t for t in turns if t.speaker == seg.speaker]
        first, last = seg.words[0], seg.words[-1]
        start, end = first.start, last.end
        before = max((s.end for s in out[:i] if s.words), default=0.0)
        after = min((s.start for s in out[i + 1:] if s.words), default=float("inf"))
        for t in mine:
            if t.start <= first.start + 1e-3 and t.end > first.start and first.start - t.start <= snap:
                start = max(t.start, before)
            if t.end >= last.end - 1e-3 and t.start < last.end and t.end - last.end <= snap:
                end = min(t.end, after)
        if start >= first.start and end <= last.end:
            continue
        words = list(seg.words)
        words[0] = Word(first.text, round(min(start, first.start), 3), first.end)
        words[-1] = Word(words[-1].text, words[-1].start, round(max(end, words[-1].end), 3))
        out[i] = Segment(seg.speaker, words[0].start, words[-1].end, seg.text, tuple(words))
    return out


FILL = 1.5  # a phrase is given at most this much more time than a voice's natural pace needs
SECONDS_PER_CHAR = 0.07  # a voice's natural pace (edge.rehydrate.RateModel starts from it)
PHRASE_PAUSE = 0.35  # the edge starts a new phrase at a pause this long (edge.rehydrate.PHRASE_PAUSE)


def cover_turns(segments: Sequence[Segment], turns: Sequence[Turn], fill: float = FILL) -> list[Segment]:
    """Speak through the pauses inside a speaker's turn.

    Whisper leaves out what is not a word (an "um", a false start, a word it
    could not make out), so its words have gaps where the speaker was talking;
    the diarizer's turn says they were. A pause between two of a speaker's
    words can be closed (the first word runs to the second) when one turn of
    theirs covers it and nobody else's word falls in it. A run of such words
    is closed whole when it can still be spoken naturally: in no more than
    ``fill`` times the time its text takes at a natural pace (the edge slows a
    phrase down that far at most, so the span stays what the edge really
    speaks); otherwise it is split at its longest pause and each side tried
    again. Then each segment's outer phrases reach toward the edges of the turn
    the same way. Word starts never move and nothing is taken from anyone
    else: the original timeline holds.
    """
    words = [list(s.words) for s in segments]
    mids = sorted(((w.start + w.end) / 2, s.speaker) for s in segments for w in s.words)
    mid_times = [m for m, _ in mids]
    index = _Index(turns)
    by_speaker: dict[int, list[tuple[int, int]]] = {}
    for i, seg in enumerate(segments):
        by_speaker.setdefault(seg.speaker, []).extend((i, j) for j in range(len(seg.words)))
    for speaker, refs in by_speaker.items():
        refs.sort(key=lambda r: (words[r[0]][r[1]].start, r))
        run = [refs[0]] if refs else []
        for prev, ref in zip(refs, refs[1:]):
            p, w = words[prev[0]][prev[1]], words[ref[0]][ref[1]]
            if w.start - p.end > 0 and not (_covers(index, speaker, p.end, w.start)
                                            and not _others_between(mids, mid_times, speaker, p.end, w.start)):
                _close(words, run, fill)
                run = []
            run.append(ref)
        _close(words, run, fill)
    out = [s if not s.words else Segment(s.speaker, ws[0].start, ws[-1].end, s.text, tuple(ws))
           for s, ws in zip(segments, words)]
    return _to_turn_edges(out, index, fill)


def _close(words: list[list[Word]], run: list[tuple[int, int]], fill: float) -> None:
    """Close the pauses of ``run`` (one speaker's words, every pause closable)
    if it can be spoken in ``fill`` times its natural time; else split it at
    its longest pause and try each side."""
    if len(run) < 2:
        return
    ws = [words[i][j] for i, j in run]
    chars = sum(len(w.text) + 1 for w in ws)
    if ws[-1].end - ws[0].start <= fill * SECONDS_PER_CHAR * chars:
        for (i, j), nxt in zip(run, ws[1:]):
            w = words[i][j]
            if nxt.start > w.end:
                words[i][j] = Word(w.text, w.start, nxt.start)
        return
    k = max(range(len(ws) - 1), key=lambda n: ws[n + 1].start - ws[n].end)
    _close(words, run[: k + 1], fill)
    _close(words, run[k + 1 :], fill)


def _phrase_chars(words: Sequence[Word], from_end: bool) -> tuple[int, float]:
    """(characters, seconds) of the phrase at one end of a segment's words (the
    words up to the first pause the edge would start a new phrase at)."""
    ws = list(words)
    k = 1
    while k < len(ws):
        pause = ws[-k].start - ws[-k - 1].end if from_end else ws[k].start - ws[k - 1].end
        if pause >= PHRASE_PAUSE:
            break
        k += 1
    group = ws[-k:] if from_end else ws[:k]
    return sum(len(w.text) + 1 for w in group), group[-1].end - group[0].start


def _to_turn_edges(segments: list[Segment], turns: _Index, fill: float) -> list[Segment]:
    """A segment's first and last phrase reach toward the edges of their speaker's
    turn, as far as their text can still be spoken naturally and nobody else's
    word is in the way. Turns and words are found by bisection: a long
    recording costs n log n, not n²."""
    bounds = sorted((w.start, w.end, i) for i, s in enumerate(segments) for w in s.words)
    starts = [a for a, _, _ in bounds]
    longest = max((b - a for a, b, _ in bounds), default=0.0)
    out = list(segments)
    for i, seg in enumerate(segments):
        if not seg.words:
            continue
        words = list(seg.words)
        first, last = words[0], words[-1]
        turn = _first_turn(turns, seg.speaker, first.start + 1e-6, ends_after=first.start)
        if turn is not None and turn.start < first.start:
            chars, span = _phrase_chars(words, from_end=False)
            floor = max(turn.start, first.start - max(fill * SECONDS_PER_CHAR * chars - span, 0.0))
            lo, hi = bisect.bisect_right(starts, floor - longest), bisect.bisect_right(starts, first.start + 1e-6)
            near = bounds[lo:hi]
            before = max((b for _, b, k in near if k != i and b <= first.start + 1e-6), default=0.0)
            start = max(floor, before)
            if start < first.start:
                words[0] = first = Word(first.text, round(start, 3), first.end)
        turn = _first_turn(turns, seg.speaker, last.end, ends_after=last.end - 2e-6, strict=True)
        if turn is not None and turn.end > last.end:
            chars, span = _phrase_chars(words, from_end=True)
            ceiling = min(turn.end, last.end + max(fill * SECONDS_PER_CHAR * chars - span, 0.0))
            near = bounds[bisect.bisect_left(starts, last.end - 1e-6) : bisect.bisect_right(starts, ceiling)]
            after = min((a for a, _, k in near if k != i), default=float("inf"))
            end = min(ceiling, after)
            if end > last.end:
                words[-1] = Word(last.text, last.start, round(end, 3))
        out[i] = Segment(seg.speaker, words[0].start, words[-1].end, seg.text, tuple(words))
    return out


def _first_turn(index: _Index, speaker: int, start_by: float, ends_after: float,
                strict: bool = False) -> Turn | None:
    """The earliest turn of ``speaker`` starting by ``start_by`` (before it, with
    ``strict``) and ending after ``ends_after``; only turns long enough to
    reach that far are looked at."""
    i = bisect.bisect_left(index.starts, ends_after - index.max_len - 1e-6)
    while i < len(index.turns) and (index.turns[i].start < start_by if strict else index.turns[i].start <= start_by):
        t = index.turns[i]
        if t.speaker == speaker and t.end > ends_after:
            return t
        i += 1
    return None


def _covers(index: _Index, speaker: int, start: float, end: float) -> bool:
    """One turn of ``speaker`` runs from ``start`` to ``end``."""
    i = bisect.bisect_left(index.starts, start - index.max_len)
    while i < len(index.turns) and index.turns[i].start <= start + 1e-6:
        t = index.turns[i]
        if t.speaker == speaker and t.start <= start + 1e-6 and t.end >= end - 1e-6:
            return True
        i += 1
    return False


def _others_between(mids: list[tuple[float, int]], times: list[float], speaker: int, start: float,
                    end: float) -> bool:
    a, b = bisect.bisect_right(times, start), bisect.bisect_left(times, end)
    return any(s != speaker for _, s in mids[a:b])

"""A second listen: words for the speech the diarizer heard and Whisper did not write down.

Whisper decodes 30-second windows and drops a whole window it takes for
silence, and in a window of several voices it writes down the loudest. On
far-field meetings the first pass then leaves diarizer turns without words
(unseen AMI snippets: 7 words for 30 s of talk), so the edge is silent where
people spoke, and a second voice under the first is never heard at all.

After the words are given their speakers (:mod:`ground.attribute`), every
stretch of a speaker's turn that holds none of their words, ``MIN_UNHEARD``
seconds or more, is decoded again on its own: the levelled audio of just
that stretch, with the words just before it as Whisper's prompt, and no
no-speech drop (the diarizer vouches for speech there). What comes back
goes to that speaker only if it passes the guards against hallucination:

* Whisper's own confidence (average log-probability at least
  ``MIN_LOGPROB``) and no repetition loop (compression ratio at most
  ``MAX_COMPRESSION``, no word three times running);
* no more words than a person says in that time (``MAX_WORDS_PER_S``);
* not a copy of what is already written there: words that repeat, in order,
  what is written within ``SAME_WORD_S`` of them are the other voice heard
  again, and a piece that is mostly such copies is dropped whole.

A stretch that lies under another speaker's words (overlap) is listened to
the same way: when Whisper hears the second voice on its own, its words are
kept as a phrase at the same time as the first (the edge mixes them).
The work is bounded: at most ``MAX_CALLS_PER_MIN`` stretches per minute of
recording, the longest first.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher

import numpy as np

from ground.diarize import Turn
from ground.frontend import Region, merge
from ground.transcribe import TranscribeOptions, Transcriber, Transcript
from relay.format.bundle import Segment, Word

MIN_UNHEARD = 1.0  # seconds of a turn without its speaker's words worth a second listen
MAX_PIECE = 10.0  # a longer stretch is listened to in pieces (one unsure decode loses less)
PAD = 0.25  # seconds of audio either side of the stretch (words cut at its edges)
COVER_PAD = 0.2  # a word covers its turn this far either side (no second listen for a breath)
TURN_GAP = 0.5  # one speaker's turns closer than this are one turn
MIN_LOGPROB = -1.0  # Whisper's own fallback threshold
MAX_COMPRESSION = 2.4  # ... and its repetition threshold
MAX_WORDS_PER_S = 5.0  # fast speech is about 4 words a second
SAME_WORD_S = 1.0  # the same word this close in time is the same word heard twice (a second
# listen's times are looser than the first's: 0.8 s apart was seen)
MAX_CALLS_PER_MIN = 12  # bounded work: each call is one Whisper window
PROMPT_WORDS = 30
TOKENS_PER_SECOND = 8.0  # decoding stops there: fast speech is about 6 tokens a second
TEMPERATURES = (0.0, 0.4)  # one hotter try for an unsure stretch; the guards judge what comes back


@dataclass(slots=True)
class Relistened:
    """What the second listen added, and what it threw away and why."""

    segments: list[Segment]  # new phrases, speaker set, in time order
    confidences: list[float] = field(default_factory=list)  # one per new phrase
    no_speech: list[float] = field(default_factory=list)
    stretches: int = 0  # listened to
    seconds: float = 0.0  # of turn listened to
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> pieces


def unheard(turns: Sequence[Turn], segments: Sequence[Segment], min_len: float = MIN_UNHEARD) -> list[Turn]:
    """Stretches of each speaker's turns, ``min_len`` s or more, with none of their
    words (as :class:`Turn`: the speaker talked there, by the diarizer)."""
    by_speaker: dict[int, list[Region]] = {}
    for t in turns:
        by_speaker.setdefault(t.speaker, []).append(Region(t.start, t.end))
    words: dict[int, list[tuple[float, float]]] = {}
    for seg in segments:
        for w in seg.words or (Word(seg.text, seg.start, seg.end),):
            words.setdefault(seg.speaker, []).append((w.start - COVER_PAD, w.end + COVER_PAD))
    out: list[Turn] = []
    for speaker, regions in by_speaker.items():
        covered = sorted(words.get(speaker, []))
        starts = [a for a, _ in covered]
        longest = max((b - a for a, b in covered), default=0.0)
        for r in merge(regions, pad=0.0, gap=TURN_GAP):
            at = r.start
            for a, b in covered[bisect.bisect_left(starts, r.start - longest) : bisect.bisect_left(starts, r.end)]:
                if b <= at:
                    continue
                if a - at >= min_len:
                    out.append(Turn(at, a, speaker))
                at = max(at, b)
            if r.end - at >= min_len:
                out.append(Turn(at, r.end, speaker))
    return sorted((piece for stretch in out for piece in _pieces(stretch)), key=lambda s: (s.start, s.speaker))


def _pieces(stretch: Turn) -> list[Turn]:
    """``stretch`` cut into equal pieces of at most ``MAX_PIECE`` seconds."""
    n = max(1, int(np.ceil(stretch.duration / MAX_PIECE - 1e-9)))
    step = stretch.duration / n
    return [Turn(round(stretch.start + i * step, 3), round(stretch.start + (i + 1) * step, 3), stretch.speaker)
            for i in range(n)]


def _norm(text: str) -> str:
    return re.sub(r"[^\w']", "", text.lower())


def _prompt(segments: Sequence[Segment], before: float) -> str | None:
    words = sorted((w for s in segments for w in s.words if w.end <= before), key=lambda w: w.start)
    text = " ".join(w.text for w in words[-PROMPT_WORDS:])
    return text or None


def _repeats(words: Sequence[Word]) -> bool:
    norm = [_norm(w.text) for w in words]
    return any(norm[i] and norm[i] == norm[i + 1] == norm[i + 2] for i in range(len(norm) - 2))


def relisten(transcriber: Transcriber, levelled: np.ndarray, turns: Sequence[Turn], segments: Sequence[Segment],
             options: TranscribeOptions, duration: float, loud: np.ndarray | None = None) -> Relistened:
    """New phrases for the stretches of ``turns`` that ``segments`` (words with
    their speakers) leave unheard. ``levelled``: the audio the first pass heard."""
    stretches = unheard(turns, segments)
    limit = max(1, int(MAX_CALLS_PER_MIN * duration / 60.0))
    if len(stretches) > limit:  # the longest first, in time order again
        stretches = sorted(sorted(stretches, key=lambda s: -s.duration)[:limit], key=lambda s: s.start)
    result = Relistened([], stretches=len(stretches), seconds=sum(s.duration for s in stretches))
    if not stretches:
        return result
    regions = [Region(max(0.0, s.start - PAD), min(duration, s.end + PAD)) for s in stretches]
    prompts = [_prompt(segments, s.start) for s in stretches]
    again = TranscribeOptions(beam_size=options.beam_size, language=options.language, vad_filter=False,
                              no_speech_threshold=None, temperatures=TEMPERATURES,
                              tokens_per_second=TOKENS_PER_SECOND)
    heard = transcriber.transcribe(levelled, again, regions=regions, prompts=prompts, loud=loud)
    existing = sorted(((w.start + w.end) / 2, _norm(w.text)) for s in segments for w in s.words)
    times = [m for m, _ in existing]
    for k, seg in enumerate(heard.segments):
        home = stretches[heard.region[k]]
        reason = _guard(heard, k, home)
        kept: list[Word] = []
        if reason is None:
            # outside the stretch, or punctuation alone ("." "..."): not this stretch's words
            inside = [w for w in seg.words
                      if home.start - PAD <= (w.start + w.end) / 2 <= home.end + PAD and _norm(w.text)]
            lo = bisect.bisect_left(times, seg.start - SAME_WORD_S)
            near = [t for _, t in existing[lo : bisect.bisect_right(times, seg.end + SAME_WORD_S)]]
            copied = _copied([_norm(w.text) for w in inside], near)
            kept = [w for i, w in enumerate(inside) if i not in copied]
            if inside and len(copied) * 2 >= len(inside):
                reason = "heard already"
            elif not kept:
                reason = "outside the stretch"
        if reason is not None:
            result.dropped[reason] = result.dropped.get(reason, 0) + 1
            continue
        words = tuple(kept)
        for w in words:  # what this piece wrote is what a later, overlapping stretch must not copy
            at = bisect.bisect(times, (w.start + w.end) / 2)
            times.insert(at, (w.start + w.end) / 2)
            existing.insert(at, ((w.start + w.end) / 2, _norm(w.text)))
        result.segments.append(Segment(home.speaker, words[0].start, words[-1].end,
                                       " ".join(w.text for w in words), words))
        result.confidences.append(heard.confidences[k])
        result.no_speech.append(heard.no_speech[k])
    return result


def _copied(new: list[str], near: list[str]) -> set[int]:
    """Positions in ``new`` that repeat, in order, what is already written around
    them (``near``): runs of two words or more, or a whole piece of one or two
    words. One common word ("the", "I") said by two people is not a copy."""
    if not new or not near:
        return set()
    blocks = SequenceMatcher(None, new, near, autojunk=False).get_matching_blocks()
    short = len(new) <= 2
    return {b.a + i for b in blocks if b.size >= 2 or (short and b.size == len(new)) for i in range(b.size)}


def _guard(heard: Transcript, k: int, home: Turn) -> str | None:
    """Why piece ``k`` of the second listen is not believed, or None."""
    seg = heard.segments[k]
    if heard.confidences[k] < MIN_LOGPROB:
        return "unsure"
    if (heard.compression[k] if k < len(heard.compression) else 0.0) > MAX_COMPRESSION or _repeats(seg.words):
        return "repeats"
    if len(seg.words) > MAX_WORDS_PER_S * (home.duration + 2 * PAD):
        return "too many words"
    return None


def merged(segments: Sequence[Segment], extra: Sequence[Segment]) -> list[Segment]:
    """Both lists as one, in time order (a second voice's phrase may overlap the first's)."""
    return sorted([*segments, *extra], key=lambda s: (s.start, s.end, s.speaker))

"""A bundle's words as text a listener can take away: subtitles (WebVTT,
SRT) from the word timings, and a plain transcript with speakers and times.

The edge speaks each phrase at its original time, so the original word
timings are the rehydrated audio's too: the same cues fit the edge's WAV.
Cues follow common subtitling practice: at most two lines of 42 characters
and 6 seconds on screen, one speaker per cue, broken at word boundaries.
A bundle's text comes from the ground, so it is treated as untrusted here
as everywhere: control characters are dropped, and what either format
would read as markup or a timing line is escaped or defused.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from relay.format.bundle import Bundle, Segment, Word

LINE_CHARS = 42
MAX_LINES = 2
MAX_CUE_SECONDS = 6.0
FORMATS = ("txt", "vtt", "srt")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Cue:
    """Words on screen together: one speaker, at most two lines."""

    start: float
    end: float
    speaker: str
    text: str

    def lines(self) -> list[str]:
        """The text in at most :data:`MAX_LINES` lines (a longer word alone on
        its line), broken where the two lines come out most even."""
        return lines_of(self.text)


def _greedy(words: list[str]) -> list[str]:
    lines: list[str] = []
    for w in words:
        if lines and len(lines[-1]) + 1 + len(w) <= LINE_CHARS:
            lines[-1] += " " + w
        else:
            lines.append(w)
    return lines


def _cut(words: list[str]) -> list[str]:
    """Words longer than a line (a web address, a code) cut into line-long pieces."""
    return [w[i:i + LINE_CHARS] for w in words for i in range(0, len(w), LINE_CHARS)]


def lines_of(text: str) -> list[str]:
    """``text`` in lines of at most :data:`LINE_CHARS`: two even ones where two will do."""
    words = _cut(text.split())
    greedy = _greedy(words)
    if len(greedy) != 2:
        return greedy
    splits = [(" ".join(words[:i]), " ".join(words[i:])) for i in range(1, len(words))]
    fitting = [p for p in splits if max(len(p[0]), len(p[1])) <= LINE_CHARS]
    if not fitting:
        return greedy
    first, second = min(fitting, key=lambda p: abs(len(p[0]) - len(p[1])))
    return [first, second]


def _clean(text: str) -> str:
    return " ".join(_CONTROL.sub(" ", text).split())


def speaker_name(bundle: Bundle, index: int) -> str:
    """The speaker's name as the bundle gives it (``S1`` for one the ground does not know)."""
    if 0 <= index < len(bundle.speakers):
        return _clean(bundle.speakers[index].label) or f"S{index + 1}"
    return f"S{index + 1}"


def _words(segment: Segment) -> tuple[Word, ...]:
    return segment.words or (Word(segment.text, segment.start, segment.end),)


def cues(bundle: Bundle) -> Iterator[Cue]:
    """The bundle's words grouped into cues, in time order."""
    for segment in sorted(bundle.segments, key=lambda s: s.start):
        name = speaker_name(bundle, segment.speaker)
        group: list[Word] = []
        for word in _words(segment):
            text = _clean(word.text)
            if not text:
                continue
            word = Word(text, word.start, word.end)
            if group:
                lines = _greedy(_cut([*(w.text for w in group), text]))
                if len(lines) > MAX_LINES or word.end - group[0].start > MAX_CUE_SECONDS:
                    yield _cue(group, name)
                    group = []
            group.append(word)
        if group:
            yield _cue(group, name)


def _cue(words: list[Word], speaker: str) -> Cue:
    start = words[0].start
    return Cue(start, max(words[-1].end, start + 0.2), speaker, " ".join(w.text for w in words))


def _clock(seconds: float, separator: str) -> str:
    ms = max(0, int(round(seconds * 1000)))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{separator}{ms:03d}"


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def webvtt(bundle: Bundle) -> str:
    """WebVTT, each cue's speaker as a voice span (``<v Name>``), which players show or style."""
    out = ["WEBVTT", ""]
    for c in cues(bundle):
        out.append(f"{_clock(c.start, '.')} --> {_clock(c.end, '.')}")
        lines = c.lines()
        out.append(f"<v {_vtt_escape(c.speaker)}>{_vtt_escape(lines[0])}")
        out.extend(_vtt_escape(line) for line in lines[1:])
        out.append("")
    return "\n".join(out)


def srt(bundle: Bundle) -> str:
    """SubRip, each cue's first line led by the speaker's name."""
    out = []
    for i, c in enumerate(cues(bundle), 1):
        lines = [line.replace("-->", "->") for line in c.lines()]
        out += [str(i), f"{_clock(c.start, ',')} --> {_clock(c.end, ',')}", f"{c.speaker}: {lines[0]}", *lines[1:], ""]
    return "\n".join(out)


def transcript(bundle: Bundle) -> str:
    """Plain text: a title line, then one line per phrase, ``[m:ss] Name: words``."""
    title = _clean(bundle.source.title) or "untitled"
    out = [f"{title} ({timestamp(bundle.source.duration)})", ""]
    for s in sorted(bundle.segments, key=lambda s: s.start):
        text = _clean(s.text)
        if text:
            out.append(f"[{timestamp(s.start)}] {speaker_name(bundle, s.speaker)}: {text}")
    return "\n".join(out) + "\n"


def timestamp(seconds: float) -> str:
    """``m:ss``, or ``h:mm:ss`` from an hour on."""
    m, s = divmod(max(0, int(seconds)), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


def render(bundle: Bundle, fmt: str) -> str:
    """``fmt`` one of :data:`FORMATS`."""
    if fmt == "vtt":
        return webvtt(bundle)
    if fmt == "srt":
        return srt(bundle)
    if fmt == "txt":
        return transcript(bundle)
    raise ValueError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")

"""The in-memory bundle: what a recording becomes before it crosses the link.

These dataclasses are the contract between the ground station (which fills
them from ASR and diarization), the wire format (:mod:`relay.format.wire`, which
packs them into a few hundred bytes) and the edge (which speaks them again).
Times are seconds from the start of the source audio.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from relay.format.profile import VoiceProfile


@dataclass(frozen=True, slots=True)
class Word:
    """One recognised word with its time span; ``text`` holds no whitespace."""

    text: str
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch of speech by one speaker.

    When ``words`` is not empty, ``text`` is exactly the words joined by single
    spaces, and ``start``/``end`` are the first word's start and the last
    word's end: the wire format relies on both to avoid sending anything twice.
    """

    speaker: int
    start: float
    end: float
    text: str
    words: tuple[Word, ...] = ()

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class Speaker:
    """A speaker in the bundle. ``label`` is a name or an anonymous tag (``S1``).

    ``profile_id`` names the speaker's voice profile; ``profile`` carries it
    in full, or is ``None`` when the bundle only refers to a profile the edge
    already holds (or when the speaker has no profile at all, ``profile_id``
    empty).
    """

    label: str
    profile_id: bytes = b""
    profile: VoiceProfile | None = None

    @property
    def profile_state(self) -> str:
        """``full``, ``ref`` or ``none``: how the profile travels."""
        return "full" if self.profile else ("ref" if self.profile_id else "none")


CLIP_REASONS = ("forced", "low-confidence", "non-speech")


@dataclass(frozen=True, slots=True)
class AudioClip:
    """A stretch of the recording that travels as coded audio, not text.

    ``codec`` is a tier name from :mod:`relay.audio.codecs`; ``data`` is that
    codec's bytes for exactly this stretch. ``speaker`` is an index into the
    bundle's speakers, or ``None`` for sound that is nobody's speech (music,
    a jingle). ``reason`` says why it is audio: the operator forced an audio
    tier, Whisper was not confident, or it was not speech at all.
    """

    start: float
    duration: float
    codec: str
    data: bytes
    speaker: int | None = None
    reason: str = "forced"

    @property
    def end(self) -> float:
        return self.start + self.duration


@dataclass(frozen=True, slots=True)
class StreamPart:
    """Where a bundle sits in a live stream (``relay ground capture``): the
    stream's random id, its place in it (0, 1, ...), its start on the
    stream's clock in seconds, and whether the capture ended with it. The
    edge plays a stream's parts in order, one after the other."""

    stream_id: bytes  # 4 random bytes
    seq: int
    start: float
    last: bool = False

    @property
    def id_hex(self) -> str:
        return self.stream_id.hex()


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """What the bundle was made from."""

    title: str
    duration: float
    language: str
    stream: StreamPart | None = None  # a part of a live stream; None for a recording


def new_bundle_id() -> bytes:
    """64 random bits: enough that two ground stations never collide in practice,
    and 8 bytes less per bundle than a UUID on a link that counts bytes."""
    return os.urandom(8)


@dataclass(slots=True)
class Bundle:
    """Source metadata, speakers, timed text segments and, beside them, the
    stretches that travel as coded audio (``clips``), all on one timeline."""

    source: SourceInfo
    speakers: list[Speaker]
    segments: list[Segment]
    clips: list[AudioClip] = field(default_factory=list)
    bundle_id: bytes = field(default_factory=new_bundle_id)
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def id_hex(self) -> str:
        return self.bundle_id.hex()

    def text(self) -> str:
        """The whole transcript as one string, segments joined by spaces."""
        return " ".join(s.text for s in self.segments)

    def to_dict(self) -> dict:
        """A JSON-ready view for scripts (``relay inspect --json``)."""
        return {
            "id": self.id_hex,
            "created": self.created,
            "source": {
                "title": self.source.title,
                "duration": round(self.source.duration, 3),
                "language": self.source.language,
                **({"stream": {"id": self.source.stream.id_hex, "seq": self.source.stream.seq,
                               "start": round(self.source.stream.start, 3), "last": self.source.stream.last}}
                   if self.source.stream else {}),
            },
            "speakers": [
                {
                    "index": i,
                    "label": s.label,
                    "profile_id": s.profile_id.hex() or None,
                    "profile": s.profile_state,
                    **({"voice": s.profile.to_dict()} if s.profile else {}),
                }
                for i, s in enumerate(self.speakers)
            ],
            "segments": [
                {
                    "speaker": seg.speaker,
                    "speaker_label": self.speakers[seg.speaker].label,
                    "start": round(seg.start, 3),
                    "end": round(seg.end, 3),
                    "text": seg.text,
                    "words": [
                        {"text": w.text, "start": round(w.start, 3), "end": round(w.end, 3)}
                        for w in seg.words
                    ],
                }
                for seg in self.segments
            ],
            "clips": [
                {
                    "start": round(c.start, 3),
                    "duration": round(c.duration, 3),
                    "codec": c.codec,
                    "bytes": len(c.data),
                    "speaker": c.speaker,
                    "reason": c.reason,
                }
                for c in self.clips
            ],
        }

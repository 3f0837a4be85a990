"""Bundle -> speech on the original timeline.

Each phrase (a segment split at the speaker's pauses) is spoken at the rate
that makes it last as long as it did in the original, within bounds that
keep it natural (``length_scale`` changes phoneme durations, so the pitch
does not move), trimmed of the engine's own leading and trailing silence,
and placed at its original start. What ``length_scale`` leaves over (more
than 3 % off) is taken up by a bounded PSOLA time-stretch, in the same pass
that moves the voice's pitch toward the speaker's (:class:`relay.voice.prosody.Prosody`).
A phrase that still runs long pushes the next one later rather than
overlapping it; pauses between phrases are kept. Where two people talked at
once in the original (the ground keeps a second voice's words as a phrase of
their own), both are spoken at once, mixed.

Stretches the ground sent as coded audio (``bundle.clips``: music, speech
Whisper was unsure of, or everything when an audio tier was forced) are
decoded and placed on the same timeline, in time order with the phrases.

:func:`rehydrate` yields segment by segment so playback can start as soon as
the first one is ready; :func:`render` mixes them into one buffer. Each
speaker can have its own voice (a mapping from speaker index to engine);
voices at other sample rates are resampled to the output rate.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from relay.audio.codecs import get_codec
from relay.audio.io import SAMPLE_RATE, resample
from relay.config import Codecs
from relay.errors import RelayError
from relay.format.bundle import AudioClip, Bundle, Segment
from relay.voice.prosody import Prosody
from relay.voice.tts import TTSEngine

SpeakerVoices = TTSEngine | Mapping[int, TTSEngine]  # one voice for all, or one per speaker index

MIN_SCALE, MAX_SCALE = 0.8, 1.2  # beyond these Piper stops sounding like speech
SILENCE_THRESHOLD = 0.01
RETRY_TOLERANCE = 0.12  # re-synthesize when off the target duration by more than this
STRETCH_TOLERANCE = 0.03  # then time-stretch what is still off by more than this
NEUTRAL = Prosody()
PHRASE_PAUSE = 0.35  # seconds of silence between words that start a new phrase


@dataclass(frozen=True, slots=True)
class RenderedSegment:
    """One segment's audio and where it goes on the timeline."""

    index: int  # of the bundle segment this phrase belongs to
    segment: Segment
    start: float  # seconds, where it is placed (>= segment.start)
    audio: np.ndarray
    sample_rate: int
    length_scale: float
    stretch: float = 1.0  # PSOLA duration factor applied after synthesis
    clip: AudioClip | None = None  # set when this is decoded audio, not synthesis
    joined: tuple[RenderedSegment, ...] = ()  # phrases of others spoken at the same time, mixed in

    @property
    def end(self) -> float:
        return self.start + len(self.audio) / self.sample_rate


def trim_silence(audio: np.ndarray, sample_rate: int, pad: float = 0.02) -> np.ndarray:
    """Drop leading and trailing near-silence the TTS adds, keeping a short pad."""
    loud = np.flatnonzero(np.abs(audio) > SILENCE_THRESHOLD)
    if loud.size == 0:
        return audio[:0]
    margin = int(pad * sample_rate)
    return audio[max(0, loud[0] - margin) : loud[-1] + margin + 1]


class RateModel:
    """Running estimate of the voice's seconds per character at scale 1.0,
    so most segments hit their duration on the first synthesis."""

    def __init__(self, seconds_per_char: float = 0.07) -> None:
        self.seconds_per_char = seconds_per_char
        self._n = 0

    def predict(self, text: str) -> float:
        return max(len(text), 1) * self.seconds_per_char

    def update(self, text: str, seconds: float, scale: float) -> None:
        observed = seconds / scale / max(len(text), 1)
        self._n += 1
        weight = 1.0 / min(self._n, 10)
        self.seconds_per_char += weight * (observed - self.seconds_per_char)


def _speak(
    engine: TTSEngine, seg: Segment, rate: RateModel, prosody: Prosody = NEUTRAL
) -> tuple[np.ndarray, float, float]:
    """One phrase: audio, the length_scale used, the time-stretch applied."""
    sr = engine.sample_rate
    target = max(seg.duration, 0.1)
    scale = float(np.clip(target / rate.predict(seg.text), MIN_SCALE, MAX_SCALE))
    audio = trim_silence(engine.synthesize(seg.text, length_scale=scale), sr)
    seconds = len(audio) / sr
    if seconds == 0:
        return audio, scale, 1.0
    rate.update(seg.text, seconds, scale)
    wanted = float(np.clip(scale * target / seconds, MIN_SCALE, MAX_SCALE))
    if abs(seconds - target) / target > RETRY_TOLERANCE and abs(wanted - scale) > 0.02:
        scale = wanted
        audio = trim_silence(engine.synthesize(seg.text, length_scale=scale), sr)
        seconds = len(audio) / sr
    stretch = target / seconds if seconds else 1.0
    if abs(stretch - 1.0) <= STRETCH_TOLERANCE:
        stretch = 1.0
    if stretch != 1.0 or not prosody.neutral:
        audio = prosody.apply(audio, sr, duration=stretch)
    return audio, scale, stretch


def phrases(seg: Segment, min_pause: float = PHRASE_PAUSE) -> list[Segment]:
    """Split a segment where the speaker paused, so the pause survives.

    Whisper segments often span a breath or a dramatic pause ("ask not …
    what"); speaking each phrase at its own start keeps that rhythm instead of
    smearing it across a slowed-down sentence.
    """
    if not seg.words:
        return [seg]
    out: list[Segment] = []
    group = [seg.words[0]]
    for word in seg.words[1:]:
        if word.start - group[-1].end >= min_pause:
            out.append(_segment_of(seg.speaker, group))
            group = []
        group.append(word)
    out.append(_segment_of(seg.speaker, group))
    return out


def _segment_of(speaker: int, words: list) -> Segment:
    return Segment(speaker, words[0].start, words[-1].end, " ".join(w.text for w in words), tuple(words))


def _voice_of(voices: SpeakerVoices, speaker: int) -> TTSEngine:
    if isinstance(voices, Mapping):
        return voices.get(speaker) or next(iter(voices.values()))
    return voices


def output_rate(voices: SpeakerVoices | None) -> int:
    """The output sample rate: the highest of the voices', so none is degraded;
    16 kHz (the codecs' rate) when nothing is synthesised (``voices`` None:
    a bundle of audio clips only)."""
    if voices is None:
        return SAMPLE_RATE
    engines = list(voices.values()) if isinstance(voices, Mapping) else [voices]
    return max(e.sample_rate for e in engines)


def decode_clip(clip: AudioClip, sample_rate: int, codecs: Codecs | None = None) -> np.ndarray:
    """A clip's audio at ``sample_rate``, exactly as long as the clip. Data a
    codec cannot read is a :class:`RelayError` (one line, the daemon keeps
    the bundle and goes on), not a crash that would repeat at every restart."""
    codec = get_codec(clip.codec, codecs)
    try:
        audio = codec.decode(clip.data)
    except Exception as exc:
        raise RelayError(
            f"audio clip at {clip.start:.2f} s ({clip.codec}) cannot be decoded ({exc.__class__.__name__}: {exc})"
        ) from None
    audio = np.pad(audio, (0, max(0, int(round(clip.duration * SAMPLE_RATE)) - len(audio))))
    audio = audio[: int(round(clip.duration * SAMPLE_RATE))]
    return resample(audio, SAMPLE_RATE, sample_rate)


def rehydrate(
    bundle: Bundle,
    voices: SpeakerVoices | None,
    prosody: Mapping[int, Prosody] | None = None,
    codecs: Codecs | None = None,
) -> Iterator[RenderedSegment]:
    """Speak each phrase and decode each clip in time order, yielding each as
    soon as it is ready. ``prosody`` brings each speaker's voice to their
    pitch (by speaker index); ``codecs`` says where codec models are.

    Where two people talked at once in the original (a phrase starts before
    another speaker's phrase has ended), both are spoken at once: the later
    one is mixed into the earlier and the two are yielded as one part. A
    phrase that did not overlap anything in the original never overlaps what
    is spoken before it (a phrase that ran long pushes it later)."""
    sr = output_rate(voices)
    rates: dict[int, RateModel] = {}  # one speaking-rate estimate per voice
    pieces: list[tuple[int, Segment | AudioClip]] = [
        (i, p) for i, seg in enumerate(bundle.segments) for p in phrases(seg)
    ]
    pieces += [(-1 - k, c) for k, c in enumerate(bundle.clips)]
    pieces.sort(key=lambda item: item[1].start)
    busy: dict[int, float] = {}  # speaker -> where their last spoken phrase ends
    said: dict[int, float] = {}  # speaker -> where their last phrase ended in the original
    held: RenderedSegment | None = None
    for n, (index, seg) in enumerate(pieces):
        speaker = -1 if seg.speaker is None else seg.speaker
        if isinstance(seg, Segment) and not seg.text.strip():
            continue
        # others who had finished before this began in the original are not talked over
        start = max([seg.start, busy.get(speaker, 0.0)]
                    + [end for k, end in busy.items() if k != speaker and said.get(k, 0.0) <= seg.start + 1e-6])
        rendered = _render_piece(index, seg, start, sr, voices, prosody, codecs, rates)
        busy[speaker] = rendered.end
        said[speaker] = max(said.get(speaker, 0.0), seg.end)
        if held is not None and rendered.start < held.end:
            held = _mixed(held, rendered)
        else:
            if held is not None:
                yield held
            held = rendered
        following = pieces[n + 1][1] if n + 1 < len(pieces) else None
        if following is None or following.start >= held.end - 1e-6:  # nothing can join it: out now
            yield held
            held = None
    if held is not None:
        yield held


def _render_piece(index: int, seg: Segment | AudioClip, start: float, sr: int, voices: SpeakerVoices | None,
                  prosody: Mapping[int, Prosody] | None, codecs: Codecs | None,
                  rates: dict[int, RateModel]) -> RenderedSegment:
    """One phrase spoken, or one clip decoded, to be placed at ``start``."""
    if isinstance(seg, AudioClip):
        speaker = seg.speaker if seg.speaker is not None else -1
        placed = Segment(speaker, seg.start, seg.end, "")
        return RenderedSegment(index, placed, start, decode_clip(seg, sr, codecs), sr, 1.0, 1.0, seg)
    if voices is None:
        raise ValueError("a bundle with text needs voices")
    engine = _voice_of(voices, seg.speaker)
    shape = (prosody or {}).get(seg.speaker, NEUTRAL)
    audio, scale, stretch = _speak(engine, seg, rates.setdefault(id(engine), RateModel()), shape)
    if engine.sample_rate != sr and len(audio):
        audio = resample(audio, engine.sample_rate, sr)
    return RenderedSegment(index, seg, start, audio, sr, scale, stretch)


def _mixed(first: RenderedSegment, second: RenderedSegment) -> RenderedSegment:
    """``second`` (starting inside ``first``) mixed into it: two voices at once, one part."""
    sr = first.sample_rate
    offset = max(0, int(round((second.start - first.start) * sr)))
    out = np.zeros(max(len(first.audio), offset + len(second.audio)), np.float32)
    out[: len(first.audio)] += first.audio
    out[offset : offset + len(second.audio)] += second.audio
    np.clip(out, -1.0, 1.0, out=out)
    return RenderedSegment(first.index, first.segment, first.start, out, sr, first.length_scale, first.stretch,
                           first.clip, first.joined + (second,))


def render(
    bundle: Bundle,
    voices: SpeakerVoices | None,
    prosody: Mapping[int, Prosody] | None = None,
    codecs: Codecs | None = None,
) -> tuple[np.ndarray, list[RenderedSegment]]:
    """The whole bundle as one buffer at :func:`output_rate`, as long as the
    original (longer only if speech ran past its end)."""
    parts = list(rehydrate(bundle, voices, prosody, codecs))
    return mix(parts, bundle.source.duration, output_rate(voices)), parts


def mix(parts: list[RenderedSegment], duration: float, sample_rate: int) -> np.ndarray:
    """Rendered phrases on one buffer at least ``duration`` seconds long."""
    total = max([duration] + [p.end for p in parts])
    out = np.zeros(int(np.ceil(total * sample_rate)) + 1, np.float32)
    for p in parts:
        i = int(round(p.start * sample_rate))
        out[i : i + len(p.audio)] += p.audio
    return out

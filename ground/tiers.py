"""Which stretches of a recording travel as text and which as coded audio.

The settings are :class:`relay.config.Tiers` (``[tiers]`` in ground.toml,
``relay ground encode --tier``) and :class:`relay.config.Codecs`. Tiers, per
bundle:

* ``text``: everything as text, spoken again by the edge's voices. The
  cheapest by far (~100 bit/s), and all a clear talker needs.
* ``hybrid``: text where Whisper is sure of itself, coded audio where it is
  not: a segment whose average log-probability is below ``min_logprob`` or
  whose no-speech probability is above ``max_no_speech`` (a noisy radio
  call, a name nobody can spell), and every stretch of sound that is not
  speech at all (music, a jingle: loud, but no words). The listener hears
  the real thing exactly where a synthetic voice would be wrong.
* an audio tier (``codec2-700C`` … ``opus-12k``, or a family name:
  ``codec2``, ``lyra``, ``opus``, ``encodec``): every stretch of sound as
  coded audio, for when a listener must hear the real voice. Silence is
  never sent; clips sit on the original timeline.

With a bandwidth budget (``--budget`` bit/s) the richest tier whose bundle
fits is chosen, trying them from the richest down and measuring each real
bundle, ending at text (which always goes: a bundle is never refused).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from relay.audio.codecs import CodecUnavailable, get_codec
from relay.audio.io import SAMPLE_RATE, frame_db
from relay.config import Codecs, Tiers
from relay.format.bundle import AudioClip, Bundle, Segment
from relay.format.wire import encode_bundle

# richest first; what --budget walks down
RICHNESS = [
    "opus-12k", "lyra-9200", "lyra-6000", "opus-6k", "codec2-3200", "lyra-3200", "encodec-1.5k",
    "codec2-1200", "codec2-700C", "hybrid", "text",
]
PAD_BEFORE, PAD_AFTER = 0.10, 0.15  # seconds around a segment's words: onsets and releases
MERGE_GAP = 0.3  # clips closer than this are one clip (each clip costs a header and a codec warm-up)
MIN_SOUND = 0.5  # seconds: shorter non-speech sounds (a click, a breath) are not worth sending
FRAME = 0.02


@dataclass(frozen=True, slots=True)
class Confidence:
    """Whisper's own doubt about one bundle segment."""

    logprob: float
    no_speech: float


def segment_confidence(segments: list[Segment], transcript) -> list[Confidence]:
    """Each bundle segment takes the figures of the transcript segment it
    overlaps most (diarization may have split a Whisper segment in two)."""
    spans = [(s.start, s.end) for s in transcript.segments]
    out = []
    for seg in segments:
        overlaps = [max(0.0, min(seg.end, e) - max(seg.start, s)) for s, e in spans]
        if not overlaps or max(overlaps) == 0:
            out.append(Confidence(0.0, 0.0))
            continue
        k = int(np.argmax(overlaps))
        no_speech = transcript.no_speech[k] if k < len(transcript.no_speech) else 0.0
        out.append(Confidence(transcript.confidences[k], no_speech))
    return out


def sound_regions(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> list[tuple[float, float]]:
    """Stretches clearly louder than the recording's own background (15 dB
    over its quietest tenth, and above -50 dBFS), gaps under 0.3 s closed."""
    db = frame_db(audio, FRAME, sample_rate)
    if db.size == 0:
        return []
    loud = db > max(np.percentile(db, 10) + 15, -50)
    regions: list[list[float]] = []
    for i in np.flatnonzero(loud):
        t = i * FRAME
        if regions and t - regions[-1][1] <= MERGE_GAP:
            regions[-1][1] = t + FRAME
        else:
            regions.append([t, t + FRAME])
    return [(a, b) for a, b in regions]


def _subtract(region: tuple[float, float], spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    pieces = [region]
    for s, e in spans:
        nxt = []
        for a, b in pieces:
            if e <= a or s >= b:
                nxt.append((a, b))
                continue
            if s > a:
                nxt.append((a, s))
            if e < b:
                nxt.append((e, b))
        pieces = nxt
    return pieces


def speech_spans(seg: Segment) -> list[tuple[float, float]]:
    """Where a segment's words are (padded): a Whisper segment can run across
    a long pause or a jingle between two of its words, its words do not."""
    if not seg.words:
        return [(seg.start - PAD_BEFORE, seg.end + PAD_AFTER)]
    return [(w.start - PAD_BEFORE, w.end + PAD_AFTER) for w in seg.words]


def non_speech(audio: np.ndarray, segments: list[Segment]) -> list[tuple[float, float]]:
    """Sound that no transcribed word covers, at least ``MIN_SOUND`` long."""
    spans = [span for s in segments for span in speech_spans(s)]
    out = []
    for region in sound_regions(audio):
        out += [(a, b) for a, b in _subtract(region, spans) if b - a >= MIN_SOUND]
    return out


def _clips(
    audio: np.ndarray, spans: list[tuple[float, float, int | None, str]], codec_name: str, settings: Codecs
) -> list[AudioClip]:
    """Cover every span with clips and code them.

    Spans closer than ``MERGE_GAP`` make one stretch (each clip costs a
    header and a codec warm-up); a stretch is cut where the speaker changes,
    so every clip keeps its speaker, and sound that is nobody's (``None``)
    joins the speaker it follows (or precedes, at a stretch's start). A stretch
    with no speaker at all is one non-speech clip.
    """
    codec = get_codec(codec_name, settings)
    n = int(np.ceil(len(audio) / SAMPLE_RATE / FRAME))
    covered = np.zeros(n, bool)
    owner = np.full(n, -1, np.int64)  # speaker per frame, -1: nobody's
    why: dict[int, str] = {}
    for start, end, speaker, reason in sorted(spans, key=lambda sp: sp[0]):
        a, b = max(0, int(round(start / FRAME))), min(n, int(round(end / FRAME)))
        if b <= a:
            continue
        covered[a:b] = True
        if speaker is not None:
            owner[a:b] = np.where(owner[a:b] < 0, speaker, owner[a:b])  # the first speaker keeps an overlap
            why[speaker] = reason
        else:
            why.setdefault(-1, reason)
    gap = int(round(MERGE_GAP / FRAME))
    edges = np.flatnonzero(np.diff(np.concatenate([[0], covered.astype(np.int8), [0]])))
    stretches: list[list[int]] = []
    for a, b in zip(edges[0::2], edges[1::2]):
        if stretches and a - stretches[-1][1] <= gap:
            stretches[-1][1] = b
        else:
            stretches.append([a, b])
    out = []
    for a, b in stretches:
        who = owner[a:b].copy()
        known = np.flatnonzero(who >= 0)
        if known.size:  # nobody's frames take the nearest speaker before them, else after
            idx = np.maximum.accumulate(np.where(who >= 0, np.arange(len(who)), -1))
            who = np.where(idx >= 0, who[np.maximum(idx, 0)], who[known[0]])
        cuts = np.flatnonzero(np.diff(who)) + 1
        for lo, hi in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [len(who)]])):
            speaker = int(who[lo])
            t0, t1 = (a + lo) * FRAME, (a + hi) * FRAME
            piece = audio[int(round(t0 * SAMPLE_RATE)) : int(round(t1 * SAMPLE_RATE))]
            reason = why.get(speaker, "non-speech") if speaker >= 0 else "non-speech"
            out.append(
                AudioClip(t0, t1 - t0, codec_name, codec.encode(piece), speaker if speaker >= 0 else None, reason)
            )
    return out


def apply_tier(bundle: Bundle, audio: np.ndarray, transcript, tier: str, tiers: Tiers, codecs: Codecs) -> Bundle:
    """The bundle with its stretches moved to audio as ``tier`` says."""
    if tier == "text":
        return replace(bundle, clips=[])
    if tier == "hybrid":
        sounds = non_speech(audio, bundle.segments)
        conf = segment_confidence(bundle.segments, transcript)
        doubtful = [
            c.logprob < tiers.min_logprob or c.no_speech > tiers.max_no_speech for c in conf
        ]
        spans: list[tuple[float, float, int | None, str]] = [
            (a, b, s.speaker, "low-confidence")
            for s, d in zip(bundle.segments, doubtful) if d
            for a, b in speech_spans(s)
        ]
        spans += [(a, b, None, "non-speech") for a, b in sounds]
        keep = [s for s, d in zip(bundle.segments, doubtful) if not d]
        clips = _clips(audio, spans, tiers.codec, codecs) if spans else []
        return replace(bundle, segments=keep, clips=clips)
    # every word and every sound, short ones too: Whisper's word times miss onsets and
    # quiet words, and a listener who asked for the real voice should hear all of it
    forced: list[tuple[float, float, int | None, str]] = [
        (a, b, s.speaker, "forced") for s in bundle.segments for a, b in speech_spans(s)]
    forced += [(a, b, None, "non-speech") for a, b in sound_regions(audio)]
    spans = forced
    return replace(bundle, segments=[], clips=_clips(audio, spans, tier, codecs))


@dataclass(slots=True)
class TierChoice:
    tier: str
    bundle: Bundle
    data: bytes
    tried: dict[str, int] = field(default_factory=dict)  # tier -> bundle bytes, for what was measured


def choose_tier(
    bundle: Bundle,
    audio: np.ndarray,
    transcript,
    tiers: Tiers,
    codecs: Codecs,
    encode: Callable[[Bundle], bytes] = encode_bundle,
) -> TierChoice:
    """Apply the configured tier, or with a budget the richest tier that fits."""
    if tiers.budget is None:
        out = apply_tier(bundle, audio, transcript, tiers.tier, tiers, codecs)
        data = encode(out)
        return TierChoice(tiers.tier, out, data, {tiers.tier: len(data)})
    duration = max(bundle.source.duration, 1e-3)
    sound = min(duration, sum(b - a for a, b in sound_regions(audio)))
    tried: dict[str, int] = {}
    for tier in RICHNESS:
        if tier not in ("text", "hybrid"):
            try:
                codec = get_codec(tier, codecs)
            except CodecUnavailable:
                continue  # a tier this station cannot make is not a choice
            if codec.bitrate * sound / duration > 1.2 * tiers.budget:
                continue  # clearly too rich: do not spend the time coding it
        out = apply_tier(bundle, audio, transcript, tier, tiers, codecs)
        data = encode(out)
        tried[tier] = len(data)
        if len(data) * 8 / duration <= tiers.budget or tier == "text":
            return TierChoice(tier, out, data, tried)
    raise AssertionError("unreachable: text always fits")

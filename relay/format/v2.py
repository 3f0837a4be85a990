"""Bundle format v2: every field arithmetic-coded against what both ends predict.

Layout::

    magic      2 bytes   89, then 1 + the text model (02: Whisper tiny.en, relay.format.textmodel);
                         v1 starts 89 53 52 01, so the second byte tells them apart
    bundle_id  8 bytes   random id, the key for dedup on the edge
    created    4 bytes   unix seconds, big-endian
    stream     the rest: one arithmetic-coded stream (relay.format.arith), no length, no padding

The header stays plain so the link layer and the queues can read the id
without the model. There is no digest: in transit the link's signed manifest
carries a BLAKE2b-128 of the bundle (docs/link-protocol.md), and the queues
on both sides store only what that verified; the stream ends with a 12-bit
check that a file cut short or garbled fails. The coded stream, in order:

    flags      has a stream part, has clips (adaptive bits)
    title      a bit, then Whisper tokens under the text model and EOT, or (a
               file's name, when shorter so) printable ASCII under an
               adaptive character model and an end symbol
    language   "en" in one bit, or a length and UTF-8 bytes
    speakers   count; per speaker: default label S<n> (a bit) or its tokens;
               profile: none / reference (the id's first 4 bytes) / full,
               field by field: the id raw, the embedding's nibbles under an
               adaptive table, pitch, range and rate, then after a bit each
               the reference clip, the colour and the fitted voice
    segments   count; then all segments' text as one token stream under the
               text model (it sees the text so far as context); per segment
               whether it is empty and after which word it ends; its speaker
               (adaptive, in the context of the previous segment's speaker)
    timings    per segment, at 80 ms: its start against the previous end, its
               length against the speaker's pace x the words' weight; per
               word a gap flag (context: the word before ends a clause or a
               sentence), the gap, and (but for the last word) the duration as
               a residual against its share of what is left of the segment,
               shared by weight (letters + 6), in the context of the word's
               own ending (a word before a comma or a full stop runs long)
    duration   the source's in 20 ms ticks, against the last segment's end
    stream     id (32 bits), seq, start (20 ms), last
    clips      count; each the msgpack clip entry (relay.format.entries), as a
               length and bytes
    end check  0xA5C in 12 raw bits

An 80 ms grid is no coarser than Whisper's word times are accurate (their
boundaries come from 20 ms cross-attention frames through DTW and land
within about a tenth of a second of the truth). Every time is rounded to the
grid, never chained from rounded durations, so no time moves by more than
40 ms and no error accumulates over a recording. Measured: 40 ms steps cost
5.1 bits a word of timings, 60 ms 4.4, 80 ms 3.9 (16 read sentences).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

import msgpack

from relay.errors import BundleError
from relay.format.arith import (
    Adaptive,
    ArithmeticDecoder,
    ArithmeticEncoder,
    Bit,
    Count,
    get_bytes,
    get_raw,
    put_bytes,
    put_raw,
)
from relay.format.arith import unzigzag as _unzigzag
from relay.format.arith import zigzag as _zigzag
from relay.format.bundle import Bundle, Segment, SourceInfo, Speaker, StreamPart, Word
from relay.format.entries import (
    STREAM_ID_BYTES,
    TICK,
    clean_text,
    pack_clip,
    pack_profile,
    ticks,
    unpack_clip,
    unpack_speaker,
)
from relay.format.limits import DEFAULT_LIMITS, DecodeBudget, LimitExceeded, Limits
from relay.format.profile import PROFILE_ID_SIZE

INT4_BYTES = 96  # a 192-d embedding in signed nibbles (int8: twice as many bytes)
MAGIC = b"\x89\x02"  # 0x89, then 1 + the text model's number
VERSION = 2
HEADER_SIZE = 14
END_CHECK = 0xA5C  # 12 bits coded last: a truncated or garbled stream fails it (odds 1 in 4096)
END_BITS = 12
MODEL_ID = 1  # Whisper tiny.en, tables tiny-en-lm-v1
UNIT = 0.08  # seconds per timing step
TICKS_PER_UNIT = 4  # v1's 20 ms ticks in a step: the recording's length and a stream's start keep them
REF_SIZE = 4  # bytes of a profile id sent as a reference
RESIDUALS = 24  # zigzag residuals below this have their own count; the rest escape
RESIDUAL_STEP = 16  # what a residual adds to its count (the prior totals about 300)
# Tokens a bundle may hold (title, labels and text): TOKENS_BASE plus TOKENS_PER_BYTE for each byte of its
# stream; the ground refuses to write more, so the work of decoding follows the bytes received. Speech costs
# about one token a byte; a word said over and over (a hallucination loop) up to about 50 (measured: "la" 5,000
# times, 98 bytes); a stream of zeros ends with its data after a few.
TOKENS_BASE, TOKENS_PER_BYTE = 64, 64
TITLE_TOKENS, LABEL_TOKENS = 1000, 200  # a title's, a speaker label's
SENTENCE_END = (".", "?", "!")
CLAUSE_END = (",", ";", ":", "-")


def _units(seconds: float) -> int:
    return max(0, round(seconds / UNIT))


def _letters(word: str) -> int:
    return sum(1 for ch in word if ch.isalnum())


def _ending(word: str) -> int:
    """0 mid-clause, 1 after a clause, 2 after a sentence: the gap flag's context."""
    stripped = word.rstrip("\"')]")
    return 2 if stripped.endswith(SENTENCE_END) else 1 if stripped.endswith(CLAUSE_END) else 0


WEIGHT_BASE = 6  # a word lasts about (letters + 6) x a speaker's pace: fitted on Whisper's word times


def _weight(word: str) -> int:
    """Letters, digits three times more (a year is four words aloud), and a base."""
    return _letters(word) + 3 * sum(ch.isdigit() for ch in word) + WEIGHT_BASE


@dataclass
class _Rate:
    """A speaker's pace: 80 ms steps per unit of word weight, in 1/64ths, learnt as segments come."""

    units: int = 24 * 64 * 10  # prior: 0.375 steps (30 ms) a unit of weight, over 640 units
    weight: int = 640

    def predict(self, weight: int) -> int:
        return (self.units * weight + 32 * self.weight) // (64 * self.weight)

    def learn(self, weight: int, duration: int) -> None:
        self.units += duration * 64
        self.weight += weight
        if self.weight > 20_000:  # follow a speaker who changes pace
            self.units //= 2
            self.weight //= 2


def _nibble_prior() -> list[int]:
    """An int4 embedding's signed nibbles (0..7, then -8..-1 as 8..15) cluster
    near zero: the direction of a 192-d vector scaled to its largest value."""
    return [24, 24, 20, 16, 10, 6, 3, 2, 1, 2, 3, 6, 10, 16, 20, 24]


def _residual_prior() -> list[int]:
    return [max(1, 64 >> (z // 2)) for z in range(RESIDUALS)] + [4]


@dataclass
class _Models:
    """Every adaptive model of one bundle, in the same state on both ends."""

    n_speakers: int = 1
    flags: list[Bit] = field(default_factory=lambda: [Bit(0.1), Bit(0.1)])
    english: Bit = field(default_factory=lambda: Bit(0.95))
    title_is_name: Bit = field(default_factory=lambda: Bit(0.5))
    small: Count = field(default_factory=Count)  # counts, lengths
    label_default: Bit = field(default_factory=lambda: Bit(0.8))
    profile_kind: Adaptive = field(default_factory=lambda: Adaptive(3, [4, 8, 4]))
    nibble: Adaptive = field(default_factory=lambda: Adaptive(16, _nibble_prior(), step=8))
    present: Bit = field(default_factory=lambda: Bit(0.5))
    colour: Count = field(default_factory=Count)
    empty: Bit = field(default_factory=lambda: Bit(0.02))
    ends: list[Bit] = field(default_factory=lambda: [Bit(0.02), Bit(0.1), Bit(0.4)])
    turn: dict[int, Adaptive] = field(default_factory=dict)
    has_words: Bit = field(default_factory=lambda: Bit(0.95))
    offset: Count = field(default_factory=Count)
    gap_flag: list[Bit] = field(default_factory=lambda: [Bit(0.08), Bit(0.3), Bit(0.6)])
    gap: list[Count] = field(default_factory=lambda: [Count(), Count(), Count()])
    total: Count = field(default_factory=Count)
    residual: list[Adaptive] = field(
        default_factory=lambda: [Adaptive(RESIDUALS + 1, _residual_prior(), step=RESIDUAL_STEP) for _ in range(3)])
    escape: Count = field(default_factory=Count)
    seg_duration: Count = field(default_factory=Count)
    tail: Count = field(default_factory=Count)
    rates: dict[int, _Rate] = field(default_factory=dict)

    def speaker_model(self, previous: int) -> Adaptive:
        if previous not in self.turn:
            prior = [2] * self.n_speakers
            if previous < self.n_speakers:
                prior[previous] = 8
            self.turn[previous] = Adaptive(self.n_speakers, prior, step=16)
        return self.turn[previous]

    def rate(self, speaker: int) -> _Rate:
        return self.rates.setdefault(speaker, _Rate())


# --- the symmetric parts: one writer and one reader per field ---------------------------------


class Writer:
    def __init__(self) -> None:
        self.enc = ArithmeticEncoder()
        self.m = _Models()
        self.costs: dict[str, int] = {}
        self.head_tokens = 0  # the title's and the labels' (the reader counts them against the size alone)
        self.text_tokens = 0

    def part(self, name: str, fn: Callable[[], object]) -> None:
        before = self.enc.bits()
        fn()
        self.costs[name] = self.costs.get(name, 0) + self.enc.bits() - before

    def count(self, model: Count, value: int) -> None:
        model.encode(self.enc, value)

    def blob(self, data: bytes) -> None:
        self.m.small.encode(self.enc, len(data))
        put_bytes(self.enc, data)

    def tokens(self, text: str, limit: int | None = None) -> list[int]:
        """``text`` under the model; ``limit``: the most a reader takes here (None: the bundle's text)."""
        from relay.format.textmodel import encode_tokens, text_of, tokens_of

        toks = tokens_of(text) if text else []
        if text_of(toks) != text:
            raise ValueError(f"{text[:40]!r} does not survive Whisper's tokenizer (it holds a special token)")
        if limit is not None and len(toks) > limit:
            raise ValueError(f"{text[:40]!r}... is {len(toks)} tokens, over the {limit} a reader takes there")
        if limit is None:
            self.text_tokens += len(toks)
        else:
            self.head_tokens += len(toks)
        encode_tokens(self.enc, toks)
        return toks


class _Reader:
    def __init__(self, data: bytes, limits: Limits, budget: DecodeBudget | None = None) -> None:
        self.dec = ArithmeticDecoder(data)
        self.size = len(data)
        self.m = _Models()
        self.limits = limits
        self.budget = budget
        self.tokens_left = TOKENS_BASE + TOKENS_PER_BYTE * len(data)  # across the title, labels and text

    def blob(self, what: str, limit: int) -> bytes:
        n = self.m.small.decode(self.dec)
        if n > limit:
            raise LimitExceeded(f"{what} of {n} bytes is over the limit of {limit}")
        return get_bytes(self.dec, n)

    def tokens(self, limit: int) -> str:
        """Text under the model: at most ``limit`` tokens, and at most what the
        bundle's size allows in all (:data:`TOKENS_PER_BYTE`): a token the model
        is sure of costs a hundredth of a bit, so a forged stream could
        otherwise spin out text for hours."""
        from relay.format.textmodel import decode_tokens, text_of

        cap = min(limit, self.tokens_left)
        toks = decode_tokens(self.dec, cap, budget=self.budget,
                             over=None if cap == limit else f"over the {cap} tokens a bundle of "
                                                             f"{self.size + HEADER_SIZE} bytes may hold")
        self.tokens_left -= len(toks)
        return text_of(toks)




def _words_of(bundle: Bundle) -> list[list[str]]:
    out = []
    for seg in bundle.segments:
        words = clean_text(seg.text).split(" ") if clean_text(seg.text) else []
        if seg.words and len(words) != len(seg.words):
            raise ValueError(f"segment text {seg.text!r} does not split into its {len(seg.words)} words")
        if not 0 <= seg.speaker < len(bundle.speakers):
            raise ValueError(f"segment speaker {seg.speaker} is not in the speaker list")
        out.append(words)
    return out


# --- encoding ----------------------------------------------------------------------------------


def encode(bundle: Bundle) -> tuple[bytes, dict[str, int]]:
    """The bundle's bytes and the bits each part cost (``header`` in bits too)."""
    if len(bundle.bundle_id) != 8:
        raise ValueError("bundle_id must be 8 bytes")
    words = _words_of(bundle)
    w = Writer()
    m, enc = w.m, w.enc
    src = bundle.source
    m.flags[0].encode(enc, int(src.stream is not None))
    m.flags[1].encode(enc, int(bool(bundle.clips)))
    w.part("title", lambda: put_title(w, clean_text(src.title)))
    w.part("source", lambda: put_language(w, src.language))
    put_speakers(w, bundle.speakers)
    w.part("structure", lambda: w.count(m.small, len(bundle.segments)))
    flat = [word for ws in words for word in ws]
    w.part("text", lambda: w.tokens(" ".join(flat)))
    w.part("structure", lambda: _put_structure(w, bundle, words))
    last_end = 0
    def timings() -> None:
        nonlocal last_end
        last_end = _put_timings(w, bundle.segments, words)
    w.part("timings", timings)
    # the recording's length in 20 ms ticks: the edge renders to it, so it keeps v1's resolution
    w.part("source", lambda: w.count(m.tail, _zigzag(ticks(src.duration) - last_end * TICKS_PER_UNIT)))
    if (stream := src.stream) is not None:
        w.part("source", lambda: _put_stream(w, stream))
    if bundle.clips:
        def clips() -> None:
            w.count(m.small, len(bundle.clips))
            for clip in bundle.clips:
                w.blob(msgpack.packb(pack_clip(clip, len(bundle.speakers)), use_bin_type=True))
        w.part("clips", clips)
    w.part("end check", lambda: put_raw(enc, END_CHECK, END_BITS))
    body = enc.finish()
    tokens = w.head_tokens + w.text_tokens
    if tokens > TOKENS_BASE + TOKENS_PER_BYTE * len(body):
        raise ValueError(f"{tokens} tokens in a bundle of {len(body) + HEADER_SIZE} bytes: more than a reader "
                         f"takes ({TOKENS_PER_BYTE} a byte; the text repeats itself over and over)")
    header = MAGIC + bundle.bundle_id + struct.pack(">I", bundle.created)
    costs = {"header": 8 * len(header), **w.costs}
    costs["flush"] = 8 * len(body) - sum(v for k, v in w.costs.items())
    return header + body, costs


PRINTABLE = 95  # ASCII 32..126


def _name_prior() -> list[int]:
    """Characters of a file name: digits, letters, separators; an end symbol last."""
    prior = [1] * (PRINTABLE + 1)
    for ch in "0123456789":
        prior[ord(ch) - 32] = 12
    for ch in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ":
        prior[ord(ch) - 32] = 4
    for ch in "-_. ":
        prior[ord(ch) - 32] = 8
    prior[PRINTABLE] = 8
    return prior


def _put_name(enc: ArithmeticEncoder, text: str) -> None:
    model = Adaptive(PRINTABLE + 1, _name_prior(), step=16)
    for ch in text:
        model.encode(enc, ord(ch) - 32)
    model.encode(enc, PRINTABLE)


def name_cost(text: str) -> int:
    enc = ArithmeticEncoder()
    _put_name(enc, text)
    return len(enc.finish())


def put_title(w: Writer, title: str) -> None:
    """A title is often a file's name ("LJ001-0013", "2026-12-02_bridge"), which
    Whisper's model codes poorly (digits and codes are rare in speech): a bit
    says whether it goes character by character under a file-name model, when
    that is shorter (printable ASCII only), or as text under the model."""
    as_name = title.isascii() and title.isprintable() and name_cost(title) < text_cost(title)
    w.m.title_is_name.encode(w.enc, int(as_name))
    if as_name:
        _put_name(w.enc, title)
    else:
        w.tokens(title, TITLE_TOKENS)


def text_cost(text: str) -> int:
    from relay.format.textmodel import encode_tokens, tokens_of

    enc = ArithmeticEncoder()
    encode_tokens(enc, tokens_of(text) if text else [])
    return len(enc.finish())


def _get_title(r: _Reader) -> str:
    if not r.m.title_is_name.decode(r.dec):
        return r.tokens(TITLE_TOKENS)
    model = Adaptive(PRINTABLE + 1, _name_prior(), step=16)
    out: list[str] = []
    while (symbol := model.decode(r.dec)) != PRINTABLE:
        if len(out) >= 1000:
            raise ValueError("a title of over 1000 characters")
        out.append(chr(symbol + 32))
    return "".join(out)


def put_language(w: Writer, language: str) -> None:
    w.m.english.encode(w.enc, int(language == "en"))
    if language != "en":
        w.blob(language.encode())


def put_speakers(w: Writer, speakers: list[Speaker]) -> None:
    """Labels are charged to ``speakers``, profiles (and their kind) to ``profiles``."""
    m = w.m
    w.part("speakers", lambda: w.count(m.small, len(speakers)))
    m.n_speakers = max(1, len(speakers))
    for i, spk in enumerate(speakers):
        default = spk.label == f"S{i + 1}"

        def label(spk: Speaker = spk, default: bool = default) -> None:
            m.label_default.encode(w.enc, int(default))
            if not default:
                w.tokens(spk.label, LABEL_TOKENS)

        def profile(spk: Speaker = spk) -> None:
            kind = 0 if not spk.profile_id else 1 if spk.profile is None else 2
            m.profile_kind.encode(w.enc, kind)
            if kind == 1:
                put_raw(w.enc, int.from_bytes(spk.profile_id[:REF_SIZE], "big"), 8 * REF_SIZE)
            elif kind == 2:
                _put_profile(w, spk)

        w.part("speakers", label)
        w.part("profiles" if spk.profile_id else "speakers", profile)


def _put_profile(w: Writer, spk: Speaker) -> None:
    """A profile in full, field by field (the fields of the msgpack profile
    entry in relay.format.entries, 20 bytes less than that msgpack): id raw; the embedding's nibbles under an adaptive
    table (int8: raw bytes); pitch and range raw 7 bits, rate a count; then
    each optional part after a bit: the reference clip (codec raw 8, bytes),
    the colour (16 zigzag counts), the fitted voice (msgpack bytes)."""
    m, enc = w.m, w.enc
    entry = pack_profile(spk)
    assert entry is not None and len(entry) >= 5
    pid, embedding, f0, f0_range, rate = entry[:5]
    optional = [*entry[5:], None, None, None][:3]
    put_raw(enc, int.from_bytes(pid, "big"), 8 * PROFILE_ID_SIZE)
    m.present.encode(enc, int(len(embedding) == 2 * INT4_BYTES))
    if len(embedding) == INT4_BYTES:
        for byte in embedding:
            m.nibble.encode(enc, byte >> 4)
            m.nibble.encode(enc, byte & 15)
    elif len(embedding) == 2 * INT4_BYTES:
        put_bytes(enc, embedding)
    else:
        raise ValueError(f"an embedding of {len(embedding)} bytes")
    put_raw(enc, f0, 7)
    put_raw(enc, f0_range, 7)
    w.count(m.small, rate)
    reference, colour, fitted = optional
    m.present.encode(enc, int(bool(reference)))
    if reference:
        put_raw(enc, reference[0], 8)
        w.blob(reference[1])
    m.present.encode(enc, int(colour is not None))
    if colour is not None:
        w.count(m.small, len(colour))
        for value in colour:
            w.count(m.colour, _zigzag(value - 256 if value > 127 else value))
    m.present.encode(enc, int(fitted is not None))
    if fitted is not None:
        w.blob(msgpack.packb(fitted, use_bin_type=True))


def _put_structure(w: Writer, bundle: Bundle, words: list[list[str]]) -> None:
    m, enc = w.m, w.enc
    previous = 0
    for i, (seg, ws) in enumerate(zip(bundle.segments, words)):
        if i < len(words) - 1:
            m.empty.encode(enc, int(not ws))
            for j, word in enumerate(ws):
                m.ends[_ending(word)].encode(enc, int(j == len(ws) - 1))
        if m.n_speakers > 1:
            m.speaker_model(previous).encode(enc, seg.speaker)
        previous = seg.speaker


def _put_timings(w: Writer, segments: list[Segment], words: list[list[str]]) -> int:
    m, enc = w.m, w.enc
    prev_end = 0
    for seg, ws in zip(segments, words):
        m.has_words.encode(enc, int(bool(seg.words)))
        if seg.words:
            starts = [_units(x.start) for x in seg.words]
            ends = [_units(x.end) for x in seg.words]
            start = starts[0]
        else:
            start = _units(seg.start)
        w.count(m.offset, _zigzag(start - prev_end))
        if not seg.words:
            end = max(start, _units(seg.end))
            w.count(m.seg_duration, end - start)
            prev_end = end
            continue
        words_at = []
        cursor = start
        for s, e in zip(starts, ends):
            s = max(s, cursor)
            cursor = max(e, s)
            words_at.append((s, cursor))
        end = cursor
        weights = [_weight(word) for word in ws]
        remaining = sum(weights)
        rate = m.rate(seg.speaker)
        w.count(m.total, _zigzag(end - start - rate.predict(remaining)))
        rate.learn(remaining, end - start)
        cursor, ending = start, 0
        for i, (word, (s, e)) in enumerate(zip(ws, words_at)):
            gap = s - cursor
            m.gap_flag[ending].encode(enc, int(gap > 0))
            if gap:
                w.count(m.gap[ending], gap - 1)
            ending = _ending(word)
            if i < len(ws) - 1:
                z = _zigzag(e - s - (end - s) * weights[i] // remaining)
                m.residual[ending].encode(enc, min(z, RESIDUALS))
                if z >= RESIDUALS:
                    w.count(m.escape, z - RESIDUALS)
            remaining -= weights[i]
            cursor = e
        prev_end = end
    return prev_end


def _put_stream(w: Writer, stream: StreamPart) -> None:
    if len(stream.stream_id) != STREAM_ID_BYTES or not 0 <= stream.seq < 2**32 or stream.start < 0:
        raise ValueError(f"stream part {stream!r}: a {STREAM_ID_BYTES}-byte id, a seq under 2^32, a start >= 0")
    put_raw(w.enc, int.from_bytes(stream.stream_id, "big"), 8 * STREAM_ID_BYTES)
    w.count(w.m.small, stream.seq)
    w.count(w.m.small, ticks(stream.start))
    w.m.flags[0].encode(w.enc, int(stream.last))


# --- decoding ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Header:
    bundle_id: bytes
    created: int
    model: int


def read_header(data: bytes, source: str | None = None) -> Header:
    if len(data) < HEADER_SIZE:
        raise BundleError("truncated", f"truncated bundle: only {len(data)} bytes", source)
    model = data[1] - 1
    if model != MODEL_ID:
        raise BundleError("dictionary", f"bundle needs text model {model}, which this relay does not have", source)
    (created,) = struct.unpack_from(">I", data, 10)
    return Header(bytes(data[2:10]), created, model)


def decode(data: bytes, limits: Limits = DEFAULT_LIMITS, budget: DecodeBudget | None = None) -> Bundle:
    """The bundle in ``data`` (magic already checked); ``ValueError`` for a
    malformed stream, :class:`LimitExceeded` past ``limits`` or ``budget``,
    :class:`relay.format.limits.DecodeAbandoned` when the budget's owner
    cancelled it, and :class:`BundleError` (``truncated``) when the stream ran
    out first."""
    header = read_header(data)
    r = _Reader(data[HEADER_SIZE:], limits, budget)
    try:
        return _decode(r, header)
    except (ValueError, IndexError, TypeError, UnicodeDecodeError, msgpack.UnpackException) as exc:
        if r.dec.overrun() > 0 and not isinstance(exc, LimitExceeded):
            raise BundleError("truncated", f"truncated or corrupted bundle: {exc}") from None
        raise


def _decode(r: _Reader, header: Header) -> Bundle:
    limits = r.limits
    m, dec = r.m, r.dec
    has_stream = m.flags[0].decode(dec)
    has_clips = m.flags[1].decode(dec)
    title = _get_title(r)
    language = "en" if m.english.decode(dec) else r.blob("the language", 32).decode()
    speakers = _get_speakers(r)
    n_segments = m.small.decode(dec)
    if n_segments > limits.max_segments:
        raise LimitExceeded(f"bundle has {n_segments} segments, over the limit of {limits.max_segments}")
    text = r.tokens(limits.max_words * 8)
    if len(text) > limits.max_text_chars:
        raise LimitExceeded(f"bundle text of {len(text)} characters is over the limit of {limits.max_text_chars}")
    flat = text.split(" ") if text else []
    if len(flat) > limits.max_words:
        raise LimitExceeded(f"bundle has {len(flat)} words, over the limit of {limits.max_words}")
    if n_segments and not speakers:
        raise ValueError("segments without any speaker")
    words, seg_speakers = _get_structure(r, n_segments, flat)
    max_units = int(limits.max_duration / UNIT)
    segments, last_end = _get_timings(r, words, seg_speakers, max_units)
    duration = last_end * TICKS_PER_UNIT + _unzigzag(m.tail.decode(dec))  # in 20 ms ticks
    if duration < 0:
        raise ValueError(f"the recording lasts {duration * TICK:.2f} s")
    if duration > max_units * TICKS_PER_UNIT:
        raise LimitExceeded(f"bundle declares {duration * TICK:.0f} s of audio, "
                             f"over the limit of {limits.max_duration:.0f} s")
    stream = _get_stream(r) if has_stream else None
    clips = []
    if has_clips:
        n = m.small.decode(dec)
        if n > limits.max_clips:
            raise LimitExceeded(f"bundle has {n} audio clips, over the limit of {limits.max_clips}")
        for _ in range(n):
            entry = msgpack.unpackb(r.blob("a clip", limits.max_body_bytes), raw=False, max_ext_len=0)
            clips.append(unpack_clip(entry, len(speakers), int(limits.max_duration / TICK)))
    if get_raw(r.dec, END_BITS) != END_CHECK:
        raise BundleError("truncated", "truncated or corrupted bundle: its end check fails")
    return Bundle(SourceInfo(title, duration * TICK, language, stream), speakers, segments, clips,
                  header.bundle_id, header.created)


def _get_speakers(r: _Reader) -> list[Speaker]:
    m, dec = r.m, r.dec
    n = m.small.decode(dec)
    if n > r.limits.max_speakers:
        raise LimitExceeded(f"bundle has {n} speakers, over the limit of {r.limits.max_speakers}")
    m.n_speakers = max(1, n)
    speakers: list[Speaker] = []
    for i in range(n):
        label = f"S{i + 1}" if m.label_default.decode(dec) else r.tokens(LABEL_TOKENS)
        kind = m.profile_kind.decode(dec)
        if kind == 0:
            speakers.append(Speaker(label))
        elif kind == 1:
            speakers.append(Speaker(label, get_raw(dec, 8 * REF_SIZE).to_bytes(REF_SIZE, "big")))
        else:
            speakers.append(unpack_speaker([label], _get_profile(r)))
    return speakers


def _get_profile(r: _Reader) -> list:
    """The v1 entry of a full profile, read field by field (the v1 reader then checks it)."""
    m, dec = r.m, r.dec
    pid = get_raw(dec, 8 * PROFILE_ID_SIZE).to_bytes(PROFILE_ID_SIZE, "big")
    if m.present.decode(dec):
        embedding = get_bytes(dec, 2 * INT4_BYTES)
    else:
        embedding = bytes((m.nibble.decode(dec) << 4) | m.nibble.decode(dec) for _ in range(INT4_BYTES))
    entry: list = [pid, embedding, get_raw(dec, 7), get_raw(dec, 7), m.small.decode(dec)]
    reference = None
    if m.present.decode(dec):
        reference = [get_raw(dec, 8), r.blob("a reference clip", r.limits.max_body_bytes)]
    colour = None
    if m.present.decode(dec):
        n = m.small.decode(dec)
        if n > 64:
            raise ValueError(f"a colour of {n} bands")
        values = [_unzigzag(m.colour.decode(dec)) for _ in range(n)]
        if any(not -128 <= v <= 127 for v in values):
            raise ValueError("a colour band out of range")
        colour = bytes(v & 0xFF for v in values)
    fitted = None
    if m.present.decode(dec):
        fitted = msgpack.unpackb(r.blob("a fitted voice", 4096), raw=False, max_ext_len=0)
    entry += [reference, colour, fitted]
    while entry[-1] is None:
        entry.pop()
    return entry


def _get_structure(r: _Reader, n_segments: int, flat: list[str]) -> tuple[list[list[str]], list[int]]:
    m, dec = r.m, r.dec
    words: list[list[str]] = []
    speakers: list[int] = []
    pos, previous = 0, 0
    for i in range(n_segments):
        if i == n_segments - 1:
            words.append(flat[pos:])
            pos = len(flat)
        elif m.empty.decode(dec):
            words.append([])
        else:
            first = pos
            while True:
                if pos >= len(flat):
                    raise ValueError("the segments claim more words than the text holds")
                word = flat[pos]
                pos += 1
                if m.ends[_ending(word)].decode(dec):
                    break
            words.append(flat[first:pos])
        speaker = m.speaker_model(previous).decode(dec) if m.n_speakers > 1 else 0
        speakers.append(speaker)
        previous = speaker
    if pos != len(flat):
        raise ValueError("text left over after the last segment")
    return words, speakers


def _get_timings(r: _Reader, words: list[list[str]], speakers: list[int],
                 max_units: int) -> tuple[list[Segment], int]:
    m, dec = r.m, r.dec

    def unit(value: int, what: str) -> int:
        if value < 0:
            raise ValueError(f"{what} at {value * UNIT:.2f} s, before the recording starts")
        if value > max_units:
            raise LimitExceeded(f"{what} at {value * UNIT:.2f} s is outside the limit of {max_units * UNIT:.0f} s")
        return value

    segments = []
    prev_end = 0
    for ws, spk in zip(words, speakers):
        has_words = m.has_words.decode(dec)
        start = unit(prev_end + _unzigzag(m.offset.decode(dec)), "a segment")
        if not has_words:
            prev_end = unit(start + m.seg_duration.decode(dec), "a segment")
            segments.append(Segment(spk, start * UNIT, prev_end * UNIT, " ".join(ws)))
            continue
        weights = [_weight(word) for word in ws]
        remaining = sum(weights)
        rate = m.rate(spk)
        end = unit(start + rate.predict(remaining) + _unzigzag(m.total.decode(dec)), "a segment")
        if end < start:
            raise ValueError("a segment ends before it starts")
        rate.learn(remaining, end - start)
        cursor, ending = start, 0
        out = []
        for i, word in enumerate(ws):
            if m.gap_flag[ending].decode(dec):
                cursor = unit(cursor + 1 + m.gap[ending].decode(dec), "a word")
            s = cursor
            ending = _ending(word)
            if i < len(ws) - 1:
                z = m.residual[ending].decode(dec)
                if z >= RESIDUALS:
                    z += m.escape.decode(dec)
                cursor = s + (end - s) * weights[i] // remaining + _unzigzag(z)
            else:
                cursor = end
            if not s <= cursor <= end:
                raise ValueError("a word falls outside its segment")
            remaining -= weights[i]
            out.append(Word(word, s * UNIT, cursor * UNIT))
        prev_end = end
        segments.append(Segment(spk, start * UNIT, end * UNIT, " ".join(ws), tuple(out)))
    return segments, prev_end


def _get_stream(r: _Reader) -> StreamPart:
    sid = get_raw(r.dec, 8 * STREAM_ID_BYTES).to_bytes(STREAM_ID_BYTES, "big")
    seq = r.m.small.decode(r.dec)
    start = r.m.small.decode(r.dec)
    if seq >= 2**32 or start >= 1 << 40:
        raise ValueError("the stream part is out of range")
    return StreamPart(sid, seq, start * TICK, bool(r.m.flags[0].decode(r.dec)))

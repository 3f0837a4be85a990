"""Bundle format v1: the bytes that cross the link.

Layout (all multi-byte integers big-endian; ``uvarint`` is LEB128)::

    magic      3 bytes   89 53 52  ("\\x89SR": the high first byte keeps text
                                    files and most other formats from matching)
    version    1 byte    1
    flags      1 byte    bit 0: body is zstd-compressed; other bits must be 0
    dict_id    uvarint   zstd dictionary id (0 = none); see relay.format.dictionary
    bundle_id  8 bytes   random id, the key for dedup on the edge
    created    4 bytes   unix seconds
    body_len   uvarint   length of the body
    body       body_len bytes: msgpack, compressed with zstd (magic-less frame)
    digest     8 bytes   BLAKE2b-64 of everything before it

The header stays outside the compression so the link layer can read the id
and the dictionary without decompressing. The body is a msgpack array::

    [source, speakers, seg_speakers, texts, timings, profiles?, clips?]

    source        [title, language, duration_ticks, stream?]
                  stream: [id (bin 4), seq, start_ticks, last?] for a part of a live stream
    speakers      [[label], ...]          (later fields may be appended)
    seg_speakers  bin: one speaker index per segment
    texts         str: segment texts joined by "\\n"
    timings       bin: uvarints, see _pack_timings
    profiles      one entry per speaker (absent when no speaker has one):
                  nil, [id] (a profile the edge holds) or
                  [id, embedding int8[192], f0, f0_range, rate, clip?, colour?, fitted?];
                  see relay.format.profile (colour: 16 int8, relay.audio.colour;
                  fitted: [engine, [style, thousandths, ...]])
                  (nil when clips follow and no speaker has a profile)
    clips         stretches sent as coded audio, each
                  [codec_id, speaker or nil, start_ticks, duration_ticks, reason, data]

Times are in ticks of 20 ms, the resolution of Whisper's timestamps. A reader
of v1 ignores array elements it does not know, so fields can be appended to
``source`` or a speaker without a new version. ``docs/bundle-format.md`` is the
long form of this comment.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

import msgpack
import zstandard

from relay.errors import BundleError
from relay.format.bundle import Bundle, Segment, SourceInfo, StreamPart, Word
from relay.format.dictionary import DEFAULT_DICT_ID, get_dictionary
from relay.format.entries import (
    STREAM_ID_BYTES,
    TICK,
    array_of,
    bytes_of,
    clean_text,
    pack_clip,
    pack_profile,
    str_of,
    ticks,
    unpack_clip,
    unpack_speaker,
)
from relay.format.limits import DEFAULT_LIMITS, LimitExceeded, Limits
from relay.format.varint import get_uvarint as _get_uvarint
from relay.format.varint import put_uvarint as _put_uvarint

MAGIC = b"\x89SR"
VERSION = 1
FLAG_ZSTD = 0x01
DIGEST_SIZE = 8
ZSTD_LEVEL = 19


# --- varints -----------------------------------------------------------------


def _zigzag(n: int) -> int:
    return n * 2 if n >= 0 else -n * 2 - 1


def _unzigzag(z: int) -> int:
    return z // 2 if z % 2 == 0 else -(z + 1) // 2


# --- timings -----------------------------------------------------------------


def _pack_timings(segments: list[Segment]) -> bytes:
    """Delta-code every segment's and word's times.

    Per segment: ``zigzag(start - previous_end) << 1 | has_words`` (signed, so
    overlapping speakers cost nothing special). With words, each word then
    adds ``duration << 1 | has_gap`` and, when ``has_gap``, the gap since the
    previous word's end; the first word starts the segment. Without words the
    segment's duration follows. Most words butt against the previous one, so a
    word usually costs one byte.
    """
    out = bytearray()
    prev_end = 0
    for seg in segments:
        if seg.words:
            starts = [ticks(w.start) for w in seg.words]
            ends = [ticks(w.end) for w in seg.words]
            seg_start = starts[0]
            _put_uvarint(out, _zigzag(seg_start - prev_end) << 1 | 1)
            cursor = seg_start
            for start, end in zip(starts, ends):
                start = max(start, cursor)  # words never overlap within a segment
                end = max(end, start)
                gap = start - cursor
                _put_uvarint(out, (end - start) << 1 | (1 if gap else 0))
                if gap:
                    _put_uvarint(out, gap)
                cursor = end
            prev_end = cursor
        else:
            seg_start, seg_end = ticks(seg.start), ticks(seg.end)
            _put_uvarint(out, _zigzag(seg_start - prev_end) << 1)
            _put_uvarint(out, max(0, seg_end - seg_start))
            prev_end = max(seg_start, seg_end)
    return bytes(out)


def _unpack_timings(
    blob: bytes, texts: list[list[str]], speakers: bytes, max_ticks: int
) -> list[Segment]:
    """Inverse of :func:`_pack_timings`. Every time is checked against
    ``max_ticks`` as it is read, so a hostile delta cannot place a word
    days away (and make the edge allocate for the gap)."""
    segments: list[Segment] = []
    pos = 0
    prev_end = 0

    def tick(value: int, what: str) -> int:
        if not 0 <= value <= max_ticks:
            raise ValueError(f"{what} at {value * TICK:.2f} s is outside the limit of {max_ticks * TICK:.0f} s")
        return value

    for tokens, spk in zip(texts, speakers):
        head, pos = _get_uvarint(blob, pos)
        seg_start = tick(prev_end + _unzigzag(head >> 1), "a segment")
        if head & 1:
            words: list[Word] = []
            cursor = seg_start
            for token in tokens:
                code, pos = _get_uvarint(blob, pos)
                gap = 0
                if code & 1:
                    gap, pos = _get_uvarint(blob, pos)
                start = tick(cursor + gap, "a word")
                cursor = tick(start + (code >> 1), "a word")
                words.append(Word(token, start * TICK, cursor * TICK))
            prev_end = cursor
            segments.append(Segment(spk, seg_start * TICK, cursor * TICK, " ".join(tokens), tuple(words)))
        else:
            dur, pos = _get_uvarint(blob, pos)
            prev_end = tick(seg_start + dur, "a segment")
            segments.append(Segment(spk, seg_start * TICK, prev_end * TICK, " ".join(tokens)))
    if pos != len(blob):
        raise ValueError(f"{len(blob) - pos} timing bytes left over")
    return segments


# --- body --------------------------------------------------------------------


def _pack_stream(stream: StreamPart | None) -> list[list]:
    if stream is None:
        return []
    if len(stream.stream_id) != STREAM_ID_BYTES or not 0 <= stream.seq < 2**32 or stream.start < 0:
        raise ValueError(f"stream part {stream!r}: a {STREAM_ID_BYTES}-byte id, a seq under 2^32, a start >= 0")
    return [[stream.stream_id, stream.seq, ticks(stream.start), *([True] if stream.last else [])]]


def _unpack_stream(field: object) -> StreamPart | None:
    if field is None:
        return None
    f = array_of(field, "the stream part", 16, at_least=3)
    sid = bytes_of(f[0], "the stream id")
    seq, start = f[1], f[2]
    if len(sid) != STREAM_ID_BYTES:
        raise ValueError(f"the stream id has {len(sid)} bytes, not {STREAM_ID_BYTES}")
    for value, what, top in ((seq, "the stream seq", 2**32), (start, "the stream start", 1 << 40)):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < top:
            raise ValueError(f"{what} is {value!r}, not a count")
    last = f[3] if len(f) > 3 else False
    if not isinstance(last, bool):
        raise ValueError(f"the stream's last flag is {last!r}, not true or false")
    return StreamPart(sid, seq, start * TICK, last)


def body_fields(bundle: Bundle) -> list[tuple[str, object]]:
    """The body's fields in wire order, named for ``relay inspect``."""
    for seg in bundle.segments:
        if seg.words and len(clean_text(seg.text).split()) != len(seg.words):
            raise ValueError(
                f"segment text {seg.text!r} does not split into its {len(seg.words)} words"
            )
        if not 0 <= seg.speaker < len(bundle.speakers) or seg.speaker > 255:
            raise ValueError(f"segment speaker {seg.speaker} is not in the speaker list")
    src = bundle.source
    fields: list[tuple[str, object]] = [
        ("source", [src.title, src.language, ticks(src.duration), *_pack_stream(src.stream)]),
        ("speakers", [[s.label] for s in bundle.speakers]),
        ("segment_speakers", bytes(s.speaker for s in bundle.segments)),
        ("text", "\n".join(clean_text(s.text) for s in bundle.segments)),
        ("timings", _pack_timings(bundle.segments)),
    ]
    if any(s.profile_id for s in bundle.speakers):
        fields.append(("profiles", [pack_profile(s) for s in bundle.speakers]))
    if bundle.clips:
        if len(fields) == 5:
            fields.append(("profiles", None))
        fields.append(("clips", [pack_clip(c, len(bundle.speakers)) for c in bundle.clips]))
    return fields


def _compressor(dict_id: int) -> zstandard.ZstdCompressor:
    return zstandard.ZstdCompressor(
        level=ZSTD_LEVEL,
        dict_data=get_dictionary(dict_id) if dict_id else None,
        write_checksum=False,  # the bundle digest covers it
        write_content_size=True,
        write_dict_id=False,  # the header carries it
    )


def compress(payload: bytes, dict_id: int) -> bytes:
    frame = _compressor(dict_id).compress(payload)
    return frame[4:]  # drop the zstd magic number; the bundle header identifies the format


def _decompress(body: bytes, dict_id: int, max_size: int) -> bytes:
    """The body, refusing to inflate past ``max_size`` (a few KB of zeros
    expand to gigabytes; the frame's own content size is not trusted)."""
    frame = zstandard.FRAME_HEADER + body
    if dict_id:
        dctx = zstandard.ZstdDecompressor(dict_data=get_dictionary(dict_id))
    else:
        dctx = zstandard.ZstdDecompressor()
    out, size = [], 0
    with dctx.stream_reader(frame, read_across_frames=False) as reader:
        while chunk := reader.read(1 << 16):
            size += len(chunk)
            if size > max_size:
                raise BundleError("limits", f"bundle body inflates past {max_size} bytes")
            out.append(chunk)
    return b"".join(out)


# --- public API --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Header:
    """The uncompressed front of a bundle."""

    version: int
    flags: int
    dict_id: int
    bundle_id: bytes
    created: int
    body_offset: int
    body_len: int


def encode_bundle(bundle: Bundle, dict_id: int = DEFAULT_DICT_ID) -> bytes:
    """Pack a bundle into bytes (format v1)."""
    if len(bundle.bundle_id) != 8:
        raise ValueError("bundle_id must be 8 bytes")
    payload = msgpack.packb([value for _, value in body_fields(bundle)], use_bin_type=True)
    body = compress(payload, dict_id)
    out = bytearray(MAGIC)
    out.append(VERSION)
    out.append(FLAG_ZSTD)
    _put_uvarint(out, dict_id)
    out += bundle.bundle_id
    out += struct.pack(">I", bundle.created)
    _put_uvarint(out, len(body))
    out += body
    out += hashlib.blake2b(out, digest_size=DIGEST_SIZE).digest()
    return bytes(out)


def read_header(data: bytes, source: str | None = None) -> Header:
    """Parse and check the header and digest, without touching the body."""

    def fail(reason: str, message: str) -> BundleError:
        return BundleError(reason, message, source)

    if len(data) < len(MAGIC) + 2:
        if MAGIC.startswith(data[: len(MAGIC)]) and data:
            raise fail("truncated", f"truncated bundle: only {len(data)} bytes")
        raise fail("magic", "not a speech-relay bundle (too short, no magic bytes)")
    if data[: len(MAGIC)] != MAGIC:
        raise fail("magic", "not a speech-relay bundle (wrong magic bytes)")
    version = data[3]
    if version != VERSION:
        raise fail(
            "version",
            f"bundle format version {version} is not supported (this relay reads version {VERSION})",
        )
    flags = data[4]
    try:
        dict_id, pos = _get_uvarint(data, 5)
        bundle_id = data[pos : pos + 8]
        (created,) = struct.unpack_from(">I", data, pos + 8)
        body_len, body_offset = _get_uvarint(data, pos + 12)
    except (IndexError, struct.error):
        raise fail("truncated", f"truncated bundle: header incomplete ({len(data)} bytes)") from None
    except ValueError as exc:
        raise fail("body", f"malformed bundle header: {exc}") from None
    expected = body_offset + body_len + DIGEST_SIZE
    if len(data) < expected:
        raise fail("truncated", f"truncated bundle: {len(data)} of {expected} bytes")
    if len(data) > expected:
        raise fail("truncated", f"bundle has {len(data) - expected} unexpected trailing bytes")
    digest = hashlib.blake2b(data[: expected - DIGEST_SIZE], digest_size=DIGEST_SIZE).digest()
    if digest != data[expected - DIGEST_SIZE :]:
        raise fail("hash", "bundle integrity check failed (corrupted or altered in transit)")
    if flags & ~FLAG_ZSTD:
        raise fail("version", f"bundle uses unknown flags 0x{flags:02x}")
    return Header(version, flags, dict_id, bytes(bundle_id), created, body_offset, body_len)


def decode_bundle(data: bytes, source: str | None = None, limits: Limits = DEFAULT_LIMITS) -> Bundle:
    """Unpack bytes into a :class:`Bundle`; any defect, and anything beyond
    ``limits``, raises :class:`BundleError` (reason ``limits`` for the latter)
    before memory is allocated for it."""
    if len(data) > limits.max_bundle_bytes:
        raise BundleError("limits", f"bundle of {len(data)} bytes is over the limit of {limits.max_bundle_bytes}",
                          source)
    header = read_header(data, source)
    body = data[header.body_offset : header.body_offset + header.body_len]
    try:
        get_dictionary(header.dict_id) if header.dict_id else None
    except KeyError:
        raise BundleError(
            "dictionary",
            f"bundle needs compression dictionary {header.dict_id}, which this relay does not have",
            source,
        ) from None
    try:
        return _decode_body(header, body, limits)
    except BundleError as exc:
        raise BundleError(exc.reason, str(exc), source) from None
    except LimitExceeded as exc:
        raise BundleError("limits", str(exc), source) from None
    except Exception as exc:  # any malformation of a hash-valid body is a bad bundle
        raise BundleError("body", f"malformed bundle body ({exc.__class__.__name__}: {exc})", source) from None


def _decode_body(header: Header, body: bytes, limits: Limits) -> Bundle:
    payload = _decompress(body, header.dict_id, limits.max_body_bytes) if header.flags & FLAG_ZSTD else body
    if len(payload) > limits.max_body_bytes:
        raise LimitExceeded(f"bundle body of {len(payload)} bytes is over the limit of {limits.max_body_bytes}")
    max_items = max(limits.max_segments, limits.max_clips, limits.max_speakers, 256)
    fields = msgpack.unpackb(
        payload, raw=False, strict_map_key=True, max_array_len=max_items, max_map_len=16,
        max_str_len=limits.max_text_chars * 4, max_bin_len=limits.max_body_bytes, max_ext_len=0,
    )
    fields = array_of(fields, "the body", 64, at_least=5)
    source_f, speakers_f, seg_spk, text, timings = fields[:5]
    source_f = array_of(source_f, "the source", 64, at_least=3)
    max_ticks = int(limits.max_duration / TICK)
    title = str_of(source_f[0], "the title", 1000)
    language = str_of(source_f[1], "the language", 32)
    duration_ticks = source_f[2]
    if not isinstance(duration_ticks, int) or isinstance(duration_ticks, bool) or duration_ticks < 0:
        raise ValueError(f"the duration is {duration_ticks!r}, not a number of ticks")
    if duration_ticks > max_ticks:
        raise LimitExceeded(
            f"bundle declares {duration_ticks * TICK:.0f} s of audio, over the limit of {limits.max_duration:.0f} s"
        )
    speakers_f = array_of(speakers_f, "the speakers", 1_000_000)
    if len(speakers_f) > limits.max_speakers:
        raise LimitExceeded(f"bundle has {len(speakers_f)} speakers, over the limit of {limits.max_speakers}")
    profiles_f = fields[5] if len(fields) > 5 and fields[5] is not None else [None] * len(speakers_f)
    if len(array_of(profiles_f, "the profiles", 1_000_000)) != len(speakers_f):
        raise ValueError("profile count mismatch")
    speakers = [unpack_speaker(s, p) for s, p in zip(speakers_f, profiles_f)]
    seg_spk = bytes_of(seg_spk, "the segment speakers")
    if len(seg_spk) > limits.max_segments:
        raise LimitExceeded(f"bundle has {len(seg_spk)} segments, over the limit of {limits.max_segments}")
    text = str_of(text, "the text", 1 << 62)
    if len(text) > limits.max_text_chars:
        raise LimitExceeded(f"bundle text of {len(text)} characters is over the limit of {limits.max_text_chars}")
    texts = [line.split() for line in text.split("\n")] if seg_spk else []
    if len(texts) != len(seg_spk):
        raise ValueError("segment count mismatch")
    if any(i >= len(speakers) for i in seg_spk):
        raise ValueError("segment refers to an unknown speaker")
    if (words := sum(len(t) for t in texts)) > limits.max_words:
        raise LimitExceeded(f"bundle has {words} words, over the limit of {limits.max_words}")
    segments = _unpack_timings(bytes_of(timings, "the timings"), texts, seg_spk, max_ticks)
    clips_f = array_of(fields[6], "the clips", 1_000_000) if len(fields) > 6 else []
    if len(clips_f) > limits.max_clips:
        raise LimitExceeded(f"bundle has {len(clips_f)} audio clips, over the limit of {limits.max_clips}")
    clips = [unpack_clip(c, len(speakers), max_ticks) for c in clips_f]
    return Bundle(
        source=SourceInfo(title, duration_ticks * TICK, language,
                          _unpack_stream(source_f[3]) if len(source_f) > 3 else None),
        speakers=speakers,
        segments=segments,
        clips=clips,
        bundle_id=header.bundle_id,
        created=header.created,
    )


def field_costs(bundle: Bundle, dict_id: int = DEFAULT_DICT_ID) -> dict[str, int]:
    """Bytes each part of the bundle costs on the wire.

    Body fields are charged their marginal compressed size (compress the first
    k fields, subtract the first k-1), so the figures add up to the real total.
    """
    fields = body_fields(bundle)
    encoded = encode_bundle(bundle, dict_id)
    header = read_header(encoded)
    costs = {"header": header.body_offset, "digest": DIGEST_SIZE}
    previous = 0
    for k in range(1, len(fields) + 1):
        prefix = msgpack.packb([v for _, v in fields[:k]], use_bin_type=True)
        size = len(compress(prefix, dict_id))
        costs[fields[k - 1][0]] = size - previous
        previous = size
    costs["body_total"] = header.body_len
    return costs


"""Bundle format v1: the bytes that cross the link.

Layout (all multi-byte integers big-endian; ``uvarint`` is LEB128)::

    magic      3 bytes   89 53 52  ("\\x89SR": the high first byte keeps text
                                    files and most other formats from matching)
    version    1 byte    1
    flags      1 byte    bit 0: body is zstd-compressed; other bits must be 0
    dict_id    uvarint   zstd dictionary id (0 = none); see relay.dictionary
    bundle_id  8 bytes   random id, the key for dedup on the edge
    created    4 bytes   unix seconds
    body_len   uvarint   length of the body
    body       body_len bytes: msgpack, compressed with zstd (magic-less frame)
    digest     8 bytes   BLAKE2b-64 of everything before it

The header stays outside the compression so the link layer can read the id
and the dictionary without decompressing. The body is a msgpack array::

    [source, speakers, seg_speakers, texts, timings, profiles?, clips?]

    source        [title, language, duration_ticks]
    speakers      [[label], ...]          (later fields may be appended)
    seg_speakers  bin: one speaker index per segment
    texts         str: segment texts joined by "\\n"
    timings       bin: uvarints, see _pack_timings
    profiles      one entry per speaker (absent when no speaker has one):
                  nil, [id] (a profile the edge holds) or
                  [id, embedding int8[192], f0, f0_range, rate]; see relay.profiles
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

from relay.bundle import CLIP_REASONS, AudioClip, Bundle, Segment, SourceInfo, Speaker, Word
from relay.codecs import CODEC_IDS, codec_id
from relay.dictionary import DEFAULT_DICT_ID, get_dictionary
from relay.errors import BundleError
from relay.profiles import PROFILE_ID_SIZE, VoiceProfile
from relay.varint import get_uvarint as _get_uvarint
from relay.varint import put_uvarint as _put_uvarint

MAGIC = b"\x89SR"
VERSION = 1
FLAG_ZSTD = 0x01
TICK = 0.02  # seconds per timing unit
DIGEST_SIZE = 8
ZSTD_LEVEL = 19


# --- varints -----------------------------------------------------------------


def _zigzag(n: int) -> int:
    return n * 2 if n >= 0 else -n * 2 - 1


def _unzigzag(z: int) -> int:
    return z // 2 if z % 2 == 0 else -(z + 1) // 2


def _ticks(seconds: float) -> int:
    return max(0, round(seconds / TICK))


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
            starts = [_ticks(w.start) for w in seg.words]
            ends = [_ticks(w.end) for w in seg.words]
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
            seg_start, seg_end = _ticks(seg.start), _ticks(seg.end)
            _put_uvarint(out, _zigzag(seg_start - prev_end) << 1)
            _put_uvarint(out, max(0, seg_end - seg_start))
            prev_end = max(seg_start, seg_end)
    return bytes(out)


def _unpack_timings(
    blob: bytes, texts: list[str], speakers: bytes
) -> list[Segment]:
    segments: list[Segment] = []
    pos = 0
    prev_end = 0
    for text, spk in zip(texts, speakers):
        head, pos = _get_uvarint(blob, pos)
        seg_start = prev_end + _unzigzag(head >> 1)
        if head & 1:
            words: list[Word] = []
            cursor = seg_start
            for token in text.split():
                code, pos = _get_uvarint(blob, pos)
                gap = 0
                if code & 1:
                    gap, pos = _get_uvarint(blob, pos)
                start = cursor + gap
                cursor = start + (code >> 1)
                words.append(Word(token, start * TICK, cursor * TICK))
            prev_end = cursor
            segments.append(
                Segment(spk, seg_start * TICK, cursor * TICK, text, tuple(words))
            )
        else:
            dur, pos = _get_uvarint(blob, pos)
            prev_end = seg_start + dur
            segments.append(Segment(spk, seg_start * TICK, prev_end * TICK, text))
    if pos != len(blob):
        raise ValueError(f"{len(blob) - pos} timing bytes left over")
    return segments


# --- body --------------------------------------------------------------------


def _clean_text(text: str) -> str:
    return " ".join(text.split())


def _body_fields(bundle: Bundle) -> list[tuple[str, object]]:
    """The body's fields in wire order, named for ``relay inspect``."""
    for seg in bundle.segments:
        if seg.words and len(_clean_text(seg.text).split()) != len(seg.words):
            raise ValueError(
                f"segment text {seg.text!r} does not split into its {len(seg.words)} words"
            )
        if not 0 <= seg.speaker < len(bundle.speakers) or seg.speaker > 255:
            raise ValueError(f"segment speaker {seg.speaker} is not in the speaker list")
    src = bundle.source
    fields: list[tuple[str, object]] = [
        ("source", [src.title, src.language, _ticks(src.duration)]),
        ("speakers", [[s.label] for s in bundle.speakers]),
        ("segment_speakers", bytes(s.speaker for s in bundle.segments)),
        ("text", "\n".join(_clean_text(s.text) for s in bundle.segments)),
        ("timings", _pack_timings(bundle.segments)),
    ]
    if any(s.profile_id for s in bundle.speakers):
        fields.append(("profiles", [_pack_profile(s) for s in bundle.speakers]))
    if bundle.clips:
        if len(fields) == 5:
            fields.append(("profiles", None))
        fields.append(("clips", [_pack_clip(c, len(bundle.speakers)) for c in bundle.clips]))
    return fields


def _pack_clip(clip: AudioClip, n_speakers: int) -> list:
    if clip.speaker is not None and not 0 <= clip.speaker < n_speakers:
        raise ValueError(f"clip speaker {clip.speaker} is not in the speaker list")
    return [
        codec_id(clip.codec), clip.speaker, _ticks(clip.start), _ticks(clip.duration),
        CLIP_REASONS.index(clip.reason), clip.data,
    ]


def _unpack_clip(entry: list, n_speakers: int) -> AudioClip:
    wire_id, speaker, start, duration, reason, data = entry[:6]
    if wire_id not in CODEC_IDS:
        raise ValueError(f"clip codec id {wire_id} is unknown")
    if speaker is not None and not 0 <= speaker < n_speakers:
        raise ValueError("clip refers to an unknown speaker")
    return AudioClip(start * TICK, duration * TICK, CODEC_IDS[wire_id], bytes(data), speaker, CLIP_REASONS[reason])


def _pack_profile(speaker: Speaker) -> list | None:
    if not speaker.profile_id:
        return None
    if speaker.profile is None:
        return [speaker.profile_id]
    return [speaker.profile_id, *speaker.profile.wire_fields()]


def _unpack_speaker(label: object, profile: object) -> Speaker:
    if profile is None:
        return Speaker(str(label))
    pid = bytes(profile[0])
    if len(pid) != PROFILE_ID_SIZE:
        raise ValueError(f"profile id of {len(pid)} bytes")
    full = VoiceProfile.from_wire(pid, profile[1:]) if len(profile) > 1 else None
    return Speaker(str(label), pid, full)


def _compressor(dict_id: int) -> zstandard.ZstdCompressor:
    params = dict(
        level=ZSTD_LEVEL,
        write_checksum=False,  # the bundle digest covers it
        write_content_size=True,
        write_dict_id=False,  # the header carries it
    )
    if dict_id:
        return zstandard.ZstdCompressor(dict_data=get_dictionary(dict_id), **params)
    return zstandard.ZstdCompressor(**params)


def _compress(payload: bytes, dict_id: int) -> bytes:
    frame = _compressor(dict_id).compress(payload)
    return frame[4:]  # drop the zstd magic number; the bundle header identifies the format


def _decompress(body: bytes, dict_id: int) -> bytes:
    frame = zstandard.FRAME_HEADER + body
    if dict_id:
        dctx = zstandard.ZstdDecompressor(dict_data=get_dictionary(dict_id))
    else:
        dctx = zstandard.ZstdDecompressor()
    return dctx.decompress(frame, max_output_size=64 * 1024 * 1024)


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
    payload = msgpack.packb([value for _, value in _body_fields(bundle)], use_bin_type=True)
    body = _compress(payload, dict_id)
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


def decode_bundle(data: bytes, source: str | None = None) -> Bundle:
    """Unpack bytes into a :class:`Bundle`; any defect raises :class:`BundleError`."""
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
        payload = _decompress(body, header.dict_id) if header.flags & FLAG_ZSTD else body
        fields = msgpack.unpackb(payload, raw=False)
        source_f, speakers_f, seg_spk, text, timings = fields[:5]
        title, language, duration_ticks = source_f[:3]
        profiles_f = fields[5] if len(fields) > 5 and fields[5] is not None else [None] * len(speakers_f)
        if len(profiles_f) != len(speakers_f):
            raise ValueError("profile count mismatch")
        speakers = [_unpack_speaker(s[0], p) for s, p in zip(speakers_f, profiles_f)]
        texts = text.split("\n") if seg_spk else []
        if len(texts) != len(seg_spk):
            raise ValueError("segment count mismatch")
        if any(i >= len(speakers) for i in seg_spk):
            raise ValueError("segment refers to an unknown speaker")
        segments = _unpack_timings(timings, texts, seg_spk)
        clips = [_unpack_clip(c, len(speakers)) for c in fields[6]] if len(fields) > 6 else []
    except BundleError:
        raise
    except Exception as exc:  # any malformation of a hash-valid body is a bad bundle
        raise BundleError("body", f"malformed bundle body ({exc.__class__.__name__}: {exc})", source) from None
    return Bundle(
        source=SourceInfo(str(title), duration_ticks * TICK, str(language)),
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
    fields = _body_fields(bundle)
    encoded = encode_bundle(bundle, dict_id)
    header = read_header(encoded)
    costs = {"header": header.body_offset, "digest": DIGEST_SIZE}
    previous = 0
    for k in range(1, len(fields) + 1):
        prefix = msgpack.packb([v for _, v in fields[:k]], use_bin_type=True)
        size = len(_compress(prefix, dict_id))
        costs[fields[k - 1][0]] = size - previous
        previous = size
    costs["body_total"] = header.body_len
    return costs


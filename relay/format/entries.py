"""What both bundle formats carry the same way: times in 20 ms ticks, a
segment's text, an audio clip and a voice profile as msgpack entries, and the
typed reading that checks every field of a decoded entry before it is used.

Format v1 (:mod:`relay.format.v1`) packs its whole body as msgpack; format v2
(:mod:`relay.format.v2`) codes most fields arithmetically but carries clips
and full voice profiles as these same entries (a length, then the bytes).
"""

from __future__ import annotations

import logging

from relay.audio.codecs import CODEC_IDS, codec_id
from relay.format.bundle import CLIP_REASONS, AudioClip, Speaker
from relay.format.profile import (
    FITTED_FORMANT,
    FITTED_MAX_STYLES,
    FITTED_NAME_CHARS,
    FITTED_SCALE,
    PROFILE_ID_SIZE,
    FittedVoice,
    VoiceProfile,
)

TICK = 0.02  # seconds per timing unit (v1's times; v2's clips and durations)
STREAM_ID_BYTES = 4  # a live stream's id: random, unique among the streams one edge hears at a time


def ticks(seconds: float) -> int:
    return max(0, round(seconds / TICK))


def clean_text(text: str) -> str:
    return " ".join(text.split())


def pack_clip(clip: AudioClip, n_speakers: int) -> list:
    if clip.speaker is not None and not 0 <= clip.speaker < n_speakers:
        raise ValueError(f"clip speaker {clip.speaker} is not in the speaker list")
    return [
        codec_id(clip.codec), clip.speaker, ticks(clip.start), ticks(clip.duration),
        CLIP_REASONS.index(clip.reason), clip.data,
    ]


def unpack_clip(entry: object, n_speakers: int, max_ticks: int) -> AudioClip:
    fields = array_of(entry, "a clip", 64, at_least=6)
    wire_id = int_in(fields[0], "clip codec id", 0, 255)
    if wire_id not in CODEC_IDS:
        raise ValueError(f"clip codec id {wire_id} is unknown")
    speaker = None if fields[1] is None else int_in(fields[1], "clip speaker", 0, max(n_speakers - 1, 0))
    if speaker is not None and n_speakers == 0:
        raise ValueError("clip refers to an unknown speaker")
    start = int_in(fields[2], "clip start", 0, max_ticks)
    duration = int_in(fields[3], "clip duration", 0, max_ticks - start)
    reason = int_in(fields[4], "clip reason", 0, len(CLIP_REASONS) - 1)
    data = bytes_of(fields[5], "clip data")
    return AudioClip(start * TICK, duration * TICK, CODEC_IDS[wire_id], data, speaker, CLIP_REASONS[reason])


# --- typed reading of a decoded body: every field checked before it is used ----------------------


def array_of(value: object, what: str, max_len: int, at_least: int = 0) -> list:
    if not isinstance(value, list):
        raise ValueError(f"{what} is a {type(value).__name__}, not an array")
    if not at_least <= len(value) <= max_len:
        raise ValueError(f"{what} has {len(value)} elements (expected {at_least}..{max_len})")
    return value


def int_in(value: object, what: str, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{what} is a {type(value).__name__}, not an integer")
    if not lo <= value <= hi:
        raise ValueError(f"{what} {value} is outside {lo}..{hi}")
    return value


def str_of(value: object, what: str, max_len: int) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} is a {type(value).__name__}, not text")
    if len(value) > max_len:
        raise ValueError(f"{what} has {len(value)} characters (at most {max_len})")
    return value


def bytes_of(value: object, what: str) -> bytes:
    if not isinstance(value, bytes):
        raise ValueError(f"{what} is a {type(value).__name__}, not bytes")
    return value


def pack_profile(speaker: Speaker) -> list | None:
    if not speaker.profile_id:
        return None
    if speaker.profile is None:
        return [speaker.profile_id]
    return [speaker.profile_id, *speaker.profile.wire_fields()]


def unpack_speaker(label: object, profile: object) -> Speaker:
    name = str_of(array_of(label, "a speaker", 64, at_least=1)[0], "a speaker's label", 200)
    if profile is None:
        return Speaker(name)
    entry = array_of(profile, "a voice profile", 16, at_least=1)
    pid = bytes_of(entry[0], "a profile id")
    if len(pid) != PROFILE_ID_SIZE:
        raise ValueError(f"profile id of {len(pid)} bytes")
    full = None
    if len(entry) > 1:
        embedding = bytes_of(entry[1], "a profile's embedding")
        figures = array_of(entry[2:5], "a profile", 3, 3)
        f0 = int_in(figures[0], "a profile's pitch", 0, 127)  # quarter tones above 55 Hz
        f0_range = int_in(figures[1], "a profile's pitch range", 0, 127)
        rate = int_in(figures[2], "a profile's speaking rate", 0, 65535)
        reference = entry[5] if len(entry) > 5 else None
        if reference:
            ref = array_of(reference, "a reference clip", 8, at_least=2)
            reference = [int_in(ref[0], "reference codec id", 0, 255), bytes_of(ref[1], "a reference clip")]
        colour = bytes_of(entry[6], "a profile's colour") if len(entry) > 6 and entry[6] is not None else None
        fitted = _fitted_or_none(pid, entry[7]) if len(entry) > 7 and entry[7] is not None else None
        full = VoiceProfile.from_wire(pid, [embedding, f0, f0_range, rate, reference, colour, fitted])
    return Speaker(name, pid, full)


def _fitted_or_none(pid: bytes, value: object) -> list | None:
    """A fitted voice that fails its checks (here, or :class:`FittedVoice`'s own:
    a name unprintable or twice) is dropped with one log line, not the bundle:
    the profile is sound, and the edge casts from its own voices."""
    try:
        checked = unpack_fitted(value)
        FittedVoice.from_wire(*checked)
        return checked
    except ValueError as exc:
        logging.getLogger("relay.format").warning(
            "speaker %s: its fitted voice is ignored (%s); the edge casts from its own voices", pid.hex(), exc)
        return None


def unpack_fitted(value: object) -> list:
    """``[engine, [style, thousandths, ...], formant?]``, each part checked before use."""
    fitted = array_of(value, "a fitted voice", 3, 2)
    engine = str_of(fitted[0], "a fitted voice's engine", FITTED_NAME_CHARS)
    flat = array_of(fitted[1], "a fitted voice's mix", 2 * FITTED_MAX_STYLES, at_least=2)
    for i in range(0, len(flat) - 1, 2):
        str_of(flat[i], "a fitted voice's style", FITTED_NAME_CHARS)
        int_in(flat[i + 1], "a fitted voice's weight", 1, FITTED_SCALE)
    if len(fitted) == 3:
        low, high = (round(x * FITTED_SCALE) for x in FITTED_FORMANT)
        return [engine, flat, int_in(fitted[2], "a fitted voice's formant ratio", low, high)]
    return [engine, flat]

"""Audio codec tiers: real audio beside the text tier.

Text and a synthetic voice are the cheapest way across a thin link, but not
every minute is speech Whisper gets right: music, a noisy radio call, a name
nobody can spell. Those stretches travel as coded audio, and an operator can
send a whole bundle that way. Every codec here takes and returns mono
float32 at 16 kHz (the rate the rest of the relay works at) and produces a
self-contained byte string per clip, with no container around it: on a link
that counts bytes, an Ogg page header per packet is a luxury.

=============  ========  ===================================================
tier           bit/s     what it is
=============  ========  ===================================================
codec2-700C    700       Codec2 700C, 28-bit frames packed end to end
codec2-1200    1200      Codec2 1200
codec2-3200    3200      Codec2 3200
lyra-3200      3200      Lyra v2 (SoundStream), 16 of 46 quantizers
lyra-6000      6000      Lyra v2, 30 quantizers
lyra-9200      9200      Lyra v2, all 46 quantizers
opus-6k        6000      Opus (libopus via PyAV), VoIP mode, 60 ms packets
opus-12k       12000     Opus, 12 kbit/s
encodec-1.5k   1500      EnCodec 24 kHz, 2 codebooks (needs a checkpoint)
=============  ========  ===================================================

A codec whose model or library is missing raises :class:`CodecUnavailable`
with one line that says what to install or configure; nothing downloads.
"""

from __future__ import annotations

from relay.audio.codecs.base import (
    CODEC_IDS,
    AudioCodec,
    CodecUnavailable,
    audio_tiers,
    codec_id,
    get_codec,
    resolve_tier,
)

__all__ = ["CODEC_IDS", "AudioCodec", "CodecUnavailable", "audio_tiers", "codec_id", "get_codec", "resolve_tier"]

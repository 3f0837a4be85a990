"""How big a bundle may be, in every dimension a hostile one could inflate.

A bundle is a few hundred bytes on the wire, but its body is compressed and
its counts and times are varints: a 4 KB bundle can claim 21 million words or
a 55-hour duration, and a reader that believes it allocates gigabytes. Every
reader of bundles (the edge daemon, ``relay inspect`` and ``decode``, the
ground's queue) decodes under a :class:`Limits`, which refuses such a bundle
with a :class:`relay.errors.BundleError` *before* allocating for it.

The defaults admit a six-hour recording with every word, the largest thing
the ground makes, with room to spare; ``[limits]`` in ``edge.toml`` and
``ground.toml`` changes them (the ground refuses to queue a bundle its own
limits would refuse, so keep both ends alike).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

MiB = 1024 * 1024


class Limits(BaseModel):
    """Maxima a bundle must keep to; see the module docstring."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    max_bundle_bytes: Annotated[int, Field(ge=64, le=1024 * MiB)] = 16 * MiB  # on the wire
    max_body_bytes: Annotated[int, Field(ge=64, le=1024 * MiB)] = 32 * MiB  # decompressed
    max_duration: Annotated[float, Field(gt=0, le=7 * 86400)] = 6 * 3600.0  # seconds of audio covered
    max_segments: Annotated[int, Field(ge=1, le=10_000_000)] = 20_000
    max_words: Annotated[int, Field(ge=1, le=10_000_000)] = 150_000
    max_text_chars: Annotated[int, Field(ge=1, le=100_000_000)] = 2_000_000
    max_speakers: Annotated[int, Field(ge=1, le=255)] = 64
    max_clips: Annotated[int, Field(ge=0, le=10_000_000)] = 20_000


DEFAULT_LIMITS = Limits()

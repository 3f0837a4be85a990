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

import threading
import time
from dataclasses import dataclass, field
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from relay.errors import RelayError

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
    # CPU seconds decoding one bundle may take: this much, plus decode_cpu_per_kb for each KiB on the wire. The
    # tokens a bundle may hold follow its size (relay.format.v2.TOKENS_PER_BYTE), each about 11 ms of decoding
    # here (5x that on a Pi): ordinary speech is a token a byte, a word said over and over up to about 50. The
    # budget is the net under that for a slow or busy machine; a bundle over it is refused with the reason.
    decode_cpu_seconds: Annotated[float, Field(gt=0, le=86400)] = 300.0
    decode_cpu_per_kb: Annotated[float, Field(ge=0, le=86400)] = 1000.0

    def decode_seconds(self, size: int) -> float:
        """The CPU budget of decoding a bundle of ``size`` bytes."""
        return self.decode_cpu_seconds + self.decode_cpu_per_kb * size / 1024


DEFAULT_LIMITS = Limits()


class LimitExceeded(ValueError):
    """A well-formed bundle bigger, or dearer to decode, than the reader allows."""


class DecodeAbandoned(RelayError):
    """Whoever asked for a decode gave up on it (a more urgent bundle came first, the daemon is stopping)."""


@dataclass
class DecodeBudget:
    """What one decoding may cost: ``seconds`` of this thread's CPU time, and
    ``cancel``, which its owner sets to abandon it (the decoder looks at both
    once per token, so it stops within one token's time). A worker thread
    cannot be killed; one that checks a flag can be abandoned."""

    seconds: float
    cancel: threading.Event | None = None
    _start: float | None = field(default=None, repr=False)

    @classmethod
    def of(cls, limits: Limits, size: int, cancel: threading.Event | None = None) -> DecodeBudget:
        return cls(limits.decode_seconds(size), cancel)

    def begin(self) -> DecodeBudget:
        """Start counting, in the thread that decodes (CPU time is counted per thread)."""
        self._start = time.thread_time()
        return self

    def used(self) -> float:
        return 0.0 if self._start is None else time.thread_time() - self._start

    def check(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise DecodeAbandoned("decoding abandoned")
        if self.used() > self.seconds:
            raise LimitExceeded(f"decoding took over {self.seconds:.0f} CPU-seconds (limits.decode_cpu_seconds "
                                "and decode_cpu_per_kb)")

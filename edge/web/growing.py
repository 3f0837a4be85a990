"""A bundle's audio served while it is still being rendered, so the browser
starts playing after the first phrase, not after the whole bundle.

The length of a bundle's rendering is known before it starts (its timeline:
``duration`` seconds at the voices' rate), so the WAV header is written
first with its final sizes and the file grows behind it. A request for the
audio (with or without a byte range, as browsers ask) is answered from the
growing file, each byte sent as soon as it is written; when the rendering
is complete the file is renamed into the cache and later requests are plain
file responses.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

HEADER = struct.Struct("<4sI4s4sIHHIIHH4sI")
CHUNK = 64 * 1024


def wav_size(frames: int) -> int:
    return HEADER.size + 2 * frames


@dataclass
class GrowingWav:
    """An output (:class:`edge.playback.Output`) of exactly ``frames`` frames:
    more is cut, less is padded with silence at ``close``; readers wait on
    :meth:`wait_for` for bytes to exist."""

    path: Path  # where the finished file goes
    sample_rate: int
    frames: int
    written: int = 0  # bytes in the partial file, header included
    done: bool = False
    failed: str | None = None
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        self.partial = self.path.with_name(f".{self.path.name}.growing")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.partial.open("wb")
        data = 2 * self.frames
        self._append(HEADER.pack(b"RIFF", 36 + data, b"WAVE", b"fmt ", 16, 1, 1, self.sample_rate,
                                 2 * self.sample_rate, 2, 16, b"data", data))

    @property
    def size(self) -> int:
        return wav_size(self.frames)

    def _append(self, data: bytes) -> None:
        room = self.size - self.written
        data = data[:room]
        if data:
            self._file.write(data)
            self._file.flush()
            with self._cond:
                self.written += len(data)
                self._cond.notify_all()

    def write(self, block: np.ndarray) -> None:
        self._append((np.clip(np.asarray(block, np.float32), -1.0, 1.0) * 32767).astype("<i2").tobytes())

    def close(self) -> None:
        self._append(bytes(self.size - self.written))
        self._file.close()
        os.replace(self.partial, self.path)
        with self._cond:
            self.done = True
            self._cond.notify_all()

    def abort(self, why: str = "the rendering failed") -> None:
        self._file.close()
        self.partial.unlink(missing_ok=True)
        with self._cond:
            self.failed = why
            self._cond.notify_all()

    def wait_for(self, end: int, timeout: float = 120.0) -> int:
        """Block until ``end`` bytes exist (or the rendering ended); how many do."""
        with self._cond:
            self._cond.wait_for(lambda: self.written >= end or self.done or self.failed is not None, timeout)
            if self.failed is not None and self.written < end:
                raise OSError(self.failed)
            return self.written

    def _open(self) -> BinaryIO:
        """The file as it is now: the partial one, or (renamed as the rendering
        finished, between the check and the open) the whole one."""
        for path in (self.path,) if self.done else (self.partial, self.path):
            try:
                return path.open("rb")
            except FileNotFoundError:
                continue
        raise OSError(self.failed or "the rendering's file is gone")

    def read(self, start: int, end: int, is_gone: Callable[[], bool] = lambda: False) -> Iterator[bytes]:
        """Bytes ``start``..``end`` (exclusive), each chunk as soon as it is written."""
        pos = start
        while pos < end and not is_gone():
            have = self.wait_for(min(end, pos + CHUNK))
            with self._open() as f:
                f.seek(pos)
                data = f.read(min(have, end) - pos)
            if not data:
                raise OSError("the rendering stopped early")
            pos += len(data)
            yield data


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``Range: bytes=a-b`` as (start, end exclusive) within ``size``; None for none or one not understood."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header[6:].partition("-")
    try:
        if first == "":
            n = int(last)
            return (max(0, size - n), size) if n > 0 else None
        start = int(first)
        end = min(size, int(last) + 1) if last else size
    except ValueError:
        return None
    return (start, end) if 0 <= start < end else None

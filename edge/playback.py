"""Playing rehydrated speech while the rest of the bundle is still being spoken.

:func:`edge.rehydrate.rehydrate` yields one phrase at a time. :func:`play`
runs it in a background thread a few phrases ahead of the sound card and
writes each phrase at its place on the original timeline (silence for the
pauses between), so the first words sound as soon as the first phrase is
synthesized, typically a fraction of a second with Piper, instead of after
the whole bundle.

An :class:`Output` is anything that takes float32 mono blocks and, like a
sound card, blocks while it plays them: :class:`DeviceOutput` is the default
device through ``sounddevice`` (PortAudio); :class:`WavOutput` writes a WAV
file as it goes (an edge without speakers, ``play = false``), so memory
holds one phrase and never the whole timeline; :class:`RecordingOutput`
keeps what it is given (for tests), optionally at real-time pace. Silence
between phrases is written in blocks of at most a second, so a bundle that
declares hours allocates nothing for them.
"""

from __future__ import annotations

import collections
import os
import queue
import struct
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from edge.rehydrate import RenderedSegment
from relay.errors import RelayError

PREFETCH = 8  # phrases synthesized ahead of playback
GAP_S = 0.05  # a wait for the synthesizer longer than this is an audible gap
MAX_LEAD = 900.0  # timeline seconds held rendered before the first sound (about 90 MB at 24 kHz), at most
SILENCE_BLOCK = 1.0  # seconds of silence written at a time


class PlaybackError(RelayError):
    """No usable audio output (no device, PortAudio missing, device busy)."""


class Output(Protocol):
    sample_rate: int

    def write(self, block: np.ndarray) -> None:
        """Queue ``block`` for playback, blocking while the device is full."""
        ...

    def close(self) -> None:
        """Play out what is queued and release the device."""
        ...


class DeviceOutput:
    """The default (or a named) output device, through ``sounddevice``."""

    def __init__(self, sample_rate: int, device: int | str | None = None) -> None:
        try:
            import sounddevice as sd
        except (ImportError, OSError) as e:  # OSError: PortAudio library missing
            raise PlaybackError(f"no audio playback here: {e}") from None
        try:
            self._stream = sd.OutputStream(samplerate=sample_rate, channels=1, dtype="float32", device=device)
            self._stream.start()
        except Exception as e:  # PortAudioError, ValueError: no device / bad device / busy
            raise PlaybackError(f"no usable audio output device ({e})") from None
        self.sample_rate = sample_rate

    def write(self, block: np.ndarray) -> None:
        try:
            self._stream.write(np.ascontiguousarray(block, np.float32).reshape(-1, 1))
        except Exception as e:  # PortAudioError: the device went away mid-bundle
            raise PlaybackError(f"audio output failed ({e})") from None

    def close(self) -> None:
        try:
            self._stream.stop()
            self._stream.close()
        except Exception as e:
            raise PlaybackError(f"audio output failed ({e})") from None


class WavOutput:
    """A 16-bit mono WAV file, written block by block into a temporary file
    beside ``path`` and renamed into place when playback completes: a full
    disk (``OSError``, ENOSPC, which the edge daemon waits out) or an error
    leaves no half file behind."""

    HEADER = struct.Struct("<4sI4s4sIHHIIHH4sI")

    def __init__(self, path: str | Path, sample_rate: int) -> None:
        self.path = Path(path)
        self.sample_rate = sample_rate
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        self._tmp = Path(tmp)
        self._file = os.fdopen(fd, "wb")
        self.frames = 0
        try:
            self._file.write(self._header())
        except BaseException:
            self.abort()
            raise

    def _header(self) -> bytes:
        data = 2 * self.frames
        return self.HEADER.pack(b"RIFF", 36 + data, b"WAVE", b"fmt ", 16, 1, 1, self.sample_rate, 2 * self.sample_rate,
                                2, 16, b"data", data)

    def write(self, block: np.ndarray) -> None:
        pcm = (np.clip(np.asarray(block, np.float32), -1.0, 1.0) * 32767).astype("<i2")
        self._file.write(pcm.tobytes())
        self.frames += len(pcm)

    def close(self) -> None:
        try:
            self._file.seek(0)
            self._file.write(self._header())
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Give up: remove the temporary file."""
        try:
            self._file.close()
        except OSError:
            pass
        self._tmp.unlink(missing_ok=True)


class RecordingOutput:
    """An output that keeps the audio it is given; with ``realtime`` it also
    takes as long as a sound card would to play it (a fake for edges without
    speakers: a fake is acceptable only for absent hardware)."""

    def __init__(self, sample_rate: int, realtime: bool = False) -> None:
        self.sample_rate = sample_rate
        self.realtime = realtime
        self.blocks: list[np.ndarray] = []
        self.first_write: float | None = None  # time.perf_counter() of the first write

    def write(self, block: np.ndarray) -> None:
        if self.first_write is None:
            self.first_write = time.perf_counter()
        self.blocks.append(np.asarray(block, np.float32).copy())
        if self.realtime:
            time.sleep(len(block) / self.sample_rate)

    def close(self) -> None:
        pass

    @property
    def audio(self) -> np.ndarray:
        return np.concatenate(self.blocks) if self.blocks else np.zeros(0, np.float32)


@dataclass(slots=True)
class PlaybackReport:
    """What happened while playing: how soon speech started, whether the
    synthesizer kept ahead of the sound card."""

    phrases: int = 0
    seconds: float = 0.0  # of audio written, pauses included
    first_sound_s: float | None = None  # wall time from the call to the first phrase's audio
    waited_s: float = 0.0  # wall time the output waited for the synthesizer after the first phrase
    gaps: int = 0  # times it waited more than GAP_S (a listener hears a pause that was not spoken)
    lead_s: float = 0.0  # timeline seconds rendered before the first sound (edge.speed.lead_seconds)
    segments: list[RenderedSegment] = field(default_factory=list)


def _silence(output: Output, samples: int) -> None:
    block = int(SILENCE_BLOCK * output.sample_rate)
    while samples > 0:
        n = min(samples, block)
        output.write(np.zeros(n, np.float32))
        samples -= n


def play(parts: Iterable[RenderedSegment], output: Output, prefetch: int = PREFETCH, from_start: bool = False,
         until: float | None = None, lead: float = 0.0) -> PlaybackReport:
    """Write ``parts`` to ``output`` on their timeline, synthesizing ahead in a thread.

    Leading silence before the first phrase is skipped, so the listener does
    not wait for it (``from_start`` keeps it: a file then lines up with the
    original recording); from then on each phrase is placed at its start
    relative to the first, keeping the pauses; ``until`` pads the end with
    silence to that timeline second. ``lead`` holds the first sound back
    until that many seconds of the timeline are rendered (a device slower
    than real time: :func:`edge.speed.lead_seconds`), up to :data:`MAX_LEAD`.
    An error in synthesis stops playback and is raised here; the output is
    closed (or, if it can, aborted)."""
    started = time.perf_counter()
    lead = min(max(lead, 0.0), MAX_LEAD)
    ahead: queue.Queue = queue.Queue(maxsize=0 if lead > 0 else prefetch)
    done = object()

    def produce() -> None:
        try:
            for part in parts:
                ahead.put(part)
            ahead.put(done)
        except BaseException as e:  # handed to the consumer, raised there
            ahead.put(e)

    threading.Thread(target=produce, name="rehydrate", daemon=True).start()
    report = PlaybackReport()
    origin: float | None = 0.0 if from_start else None  # timeline second written at output position 0
    written = 0  # samples
    sr = output.sample_rate
    ok = False
    report.lead_s = lead
    held: collections.deque = collections.deque()
    while lead > 0:  # render ahead: the rest then renders while this much plays
        item = ahead.get()
        held.append(item)
        if item is done or isinstance(item, BaseException) or item.end - held[0].start >= lead:
            break
    try:
        while True:
            t = time.perf_counter()
            item = held.popleft() if held else ahead.get()
            if report.phrases:
                wait = time.perf_counter() - t
                report.waited_s += wait
                report.gaps += wait > GAP_S
            if item is done:
                break
            if isinstance(item, BaseException):
                raise item
            part: RenderedSegment = item
            if origin is None:
                origin = part.start
            if report.first_sound_s is None:
                report.first_sound_s = time.perf_counter() - started
            gap = int(round((part.start - origin) * sr)) - written
            if gap > 0:
                _silence(output, gap)
                written += gap
            output.write(part.audio)
            written += len(part.audio)
            report.phrases += 1
            report.segments.append(part)
        if until is not None:
            tail = int(round((until - (origin or 0.0)) * sr)) - written
            if tail > 0:
                _silence(output, tail)
                written += tail
        ok = True
    finally:
        if ok:
            output.close()
        else:
            getattr(output, "abort", output.close)()
    report.seconds = written / sr
    return report

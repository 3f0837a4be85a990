"""Playing rehydrated speech while the rest of the bundle is still being spoken.

:func:`edge.rehydrate.rehydrate` yields one phrase at a time. :func:`play`
runs it in a background thread a few phrases ahead of the sound card and
writes each phrase at its place on the original timeline (silence for the
pauses between), so the first words sound as soon as the first phrase is
synthesized, typically a fraction of a second with Piper, instead of after
the whole bundle.

An :class:`Output` is anything that takes float32 mono blocks and, like a
sound card, blocks while it plays them: :class:`DeviceOutput` is the default
device through ``sounddevice`` (PortAudio); :class:`RecordingOutput` keeps
what it is given (for an edge without speakers, and for tests), optionally
at real-time pace.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from edge.rehydrate import RenderedSegment
from relay.errors import RelayError

PREFETCH = 8  # phrases synthesized ahead of playback


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
        self.underflows = 0

    def write(self, block: np.ndarray) -> None:
        if self._stream.write(np.ascontiguousarray(block, np.float32).reshape(-1, 1)):
            self.underflows += 1

    def close(self) -> None:
        self._stream.stop()
        self._stream.close()


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
    segments: list[RenderedSegment] = field(default_factory=list)


def play(parts: Iterable[RenderedSegment], output: Output, prefetch: int = PREFETCH) -> PlaybackReport:
    """Write ``parts`` to ``output`` on their timeline, synthesizing ahead in a thread.

    Leading silence before the first phrase is skipped, so the listener does
    not wait for it; from then on each phrase is placed at its start relative
    to the first, keeping the pauses. An error in synthesis stops playback and
    is raised here."""
    started = time.perf_counter()
    ahead: queue.Queue = queue.Queue(maxsize=prefetch)
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
    origin: float | None = None  # timeline second written at output position 0
    written = 0  # samples
    sr = output.sample_rate
    try:
        while True:
            t = time.perf_counter()
            item = ahead.get()
            if report.phrases:
                report.waited_s += time.perf_counter() - t
            if item is done:
                break
            if isinstance(item, BaseException):
                raise item
            part: RenderedSegment = item
            if origin is None:
                origin = part.start
                report.first_sound_s = time.perf_counter() - started
            gap = int(round((part.start - origin) * sr)) - written
            if gap > 0:
                output.write(np.zeros(gap, np.float32))
                written += gap
            output.write(part.audio)
            written += len(part.audio)
            report.phrases += 1
            report.segments.append(part)
    finally:
        output.close()
    report.seconds = written / sr
    return report

"""Live capture: a sound card's input (a radio receiver's line out) cut at
pauses into short bundles that form one stream (``relay ground capture``).

Audio comes in blocks (:func:`device_blocks` from a sound card through
PortAudio; :func:`file_blocks`, a recording played in real time, stands in
for a line-in where there is none, as in the tests). The :class:`Cutter`
keeps what has not been sent yet and, each second, asks Silero VAD (the
model in the faster-whisper wheel) where the speech is in it:

* once at least ``min_seconds`` are held and the speaker has paused
  (``pause`` seconds of silence after the last speech), it cuts in that
  pause: a short phrase leaves at once, which is what keeps the delay low;
* at ``max_seconds`` it cuts in the last pause it can find, or, in speech
  that never pauses, right there;
* silence with no speech in it is never sent: the stream's clock moves on
  and the next part starts where the speech does.

Each part is encoded by the ground's own :class:`ground.encoder.Encoder`
(Whisper, diarization, the speakers it already knows) into a bundle that
carries the stream's id, the part's number and its start on the stream's
clock (:class:`relay.format.bundle.StreamPart`), and is queued for the edge
like any other; the ground daemon sends it. The edge plays a stream's parts
in order, one after the other.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ground.queue import Outbox
from relay.audio.io import SAMPLE_RATE
from relay.errors import RelayError
from relay.format.bundle import Bundle, Speaker
from relay.link.messages import Priority

if TYPE_CHECKING:
    from ground.encoder import Encoder

BLOCK = 0.1  # seconds of audio per block read from the input
LOOK_EVERY = 1.0  # seconds of new audio between looks for a pause
MIN_GAP = 0.3  # seconds of silence between words that count as a place to cut
ANONYMOUS = re.compile(r"S\d+")  # a speaker the ground does not know by name
# similarity at which a part's speaker is one the stream carried: tuned on trn01-04 (benchmarks/stream_speakers.py)
STREAM_MATCH = 0.5


class CaptureError(RelayError):
    """The input cannot be opened or read."""


@dataclass(frozen=True, slots=True)
class Part:
    """A stretch of the stream to encode: its audio, its number, its start on
    the stream's clock, whether the capture ended with it, and when its last
    sample was heard (for the latency the benchmark measures)."""

    audio: np.ndarray
    seq: int
    start: float
    last: bool
    heard_at: float

    @property
    def duration(self) -> float:
        return len(self.audio) / SAMPLE_RATE


def speech_spans(audio: np.ndarray) -> list[tuple[float, float]]:
    """Where Silero VAD hears speech in ``audio``, in seconds (tight: little padding)."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(min_silence_duration_ms=int(MIN_GAP * 1000), speech_pad_ms=60)
    return [(c["start"] / SAMPLE_RATE, c["end"] / SAMPLE_RATE) for c in get_speech_timestamps(audio, options)]


class Cutter:
    """Cuts a stream of blocks into :class:`Part` s at pauses (see the module's docstring)."""

    def __init__(self, max_seconds: float = 10.0, min_seconds: float | None = None, pause: float = 0.6,
                 clock: Callable[[], float] = time.time) -> None:
        if not 1.0 <= max_seconds <= 600.0:
            raise CaptureError(f"--chunk {max_seconds:g}: between 1 and 600 seconds")
        self.max = max_seconds
        self.min = min(min_seconds if min_seconds is not None else max(1.0, max_seconds / 4), max_seconds)
        self.pause = pause
        self.clock = clock
        self.held = np.zeros(0, np.float32)
        self.start = 0.0  # the stream's clock at held[0]
        self.seq = 0
        self._since_look = 0.0

    def feed(self, block: np.ndarray) -> Iterator[Part]:
        """Take a block; yield the parts it completes."""
        self.held = np.concatenate([self.held, np.asarray(block, np.float32).reshape(-1)])
        self._since_look += len(block) / SAMPLE_RATE
        if self._since_look < LOOK_EVERY and len(self.held) < self.max * SAMPLE_RATE:
            return
        self._since_look = 0.0
        while (found := self._cut()) is not None and found[0] > 0:
            part = self._take(*found)
            if part is not None:
                yield part

    def flush(self) -> Part:
        """The input ended: what is left, as the last part (empty if it held no
        speech: the edge still learns that the stream is over)."""
        spans = speech_spans(self.held) if len(self.held) else []
        if spans:
            part = self._take(min(len(self.held), int((spans[-1][1] + 0.2) * SAMPLE_RATE)), True, last=True)
            if part is not None:
                return part
        return Part(np.zeros(0, np.float32), self.seq, self.start, True, self.clock())

    def _cut(self) -> tuple[int, bool] | None:
        """Where to cut the held audio (a sample index) and whether what comes
        before the cut holds speech; None to wait for more."""
        held = len(self.held) / SAMPLE_RATE
        spans = speech_spans(self.held)
        if not spans:  # silence: keep only a moment before whatever comes next
            keep = int(0.3 * SAMPLE_RATE)
            return (len(self.held) - keep, False) if held > 1.0 else None
        if spans[0][0] > 0.5:  # silence before the speech starts is not sent
            return int((spans[0][0] - 0.2) * SAMPLE_RATE), False
        trailing = held - spans[-1][1]
        if held >= self.min and trailing >= self.pause:
            return int((spans[-1][1] + min(trailing / 2, 0.3)) * SAMPLE_RATE), True
        if held < self.max:
            return None
        gaps = [(a_end + b_start) / 2 for (_, a_end), (b_start, _) in zip(spans, spans[1:])
                if b_start - a_end >= MIN_GAP and (a_end + b_start) / 2 >= self.min / 2]
        return int((gaps[-1] if gaps else self.max) * SAMPLE_RATE), True

    def _take(self, cut: int, speech: bool, last: bool = False) -> Part | None:
        audio, self.held = self.held[:cut], self.held[cut:]
        start, self.start = self.start, self.start + cut / SAMPLE_RATE
        if len(audio) == 0 or not speech:  # silence is not sent: the clock moved on
            return None
        part = Part(audio, self.seq, start, last, self.clock())
        self.seq += 1
        return part


def file_blocks(path: str | Path, realtime: bool = True) -> Iterator[np.ndarray]:
    """A recording as if it came from a line-in: :data:`BLOCK`-second blocks,
    at the pace they were spoken (``realtime``), or as fast as read."""
    from relay.audio.io import load_audio

    audio = load_audio(path)
    step = int(BLOCK * SAMPLE_RATE)
    t0 = time.monotonic()
    for i, a in enumerate(range(0, len(audio), step)):
        if realtime:
            wait = t0 + (i + 1) * BLOCK - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        yield audio[a:a + step]


def device_blocks(device: int | str | None = None) -> Iterator[np.ndarray]:
    """A sound card's input, mono, resampled to 16 kHz, in :data:`BLOCK`-second blocks."""
    try:
        import sounddevice as sd
    except (ImportError, OSError) as e:  # OSError: PortAudio library missing
        raise CaptureError(f"no audio input here: {e}") from None
    try:
        info = sd.query_devices(device, "input")
        rate = int(info["default_samplerate"])
    except Exception as e:  # PortAudioError, ValueError: no such device / no input device at all
        raise CaptureError(f"no usable audio input device {device if device is not None else ''} ({e})".replace(
            "  ", " ")) from None
    blocks: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=600)  # a minute: more means encoding fell behind

    def arrived(data: np.ndarray, frames: int, when: object, status: object) -> None:
        try:
            blocks.put_nowait(data[:, 0].copy())
        except queue.Full:  # the encoder is a minute behind: drop, and say so at the end
            dropped.append(frames)

    dropped: list[int] = []
    try:
        stream = sd.InputStream(samplerate=rate, channels=1, dtype="float32", device=device,
                                blocksize=int(BLOCK * rate), callback=arrived)
        stream.start()
    except Exception as e:
        raise CaptureError(f"cannot open the audio input ({e})") from None
    import soxr

    try:
        while True:
            try:
                block = blocks.get(timeout=5.0)
            except queue.Empty:
                raise CaptureError("the audio input stopped delivering audio") from None
            if block is None:
                return
            yield block if rate == SAMPLE_RATE else soxr.resample(block, rate, SAMPLE_RATE).astype(np.float32)
    finally:
        stream.stop()
        stream.close()
        if dropped:  # said, not raised: the parts made so far still go out
            logging.getLogger("relay.ground").warning(
                "%.1f s of input dropped: encoding could not keep up", sum(dropped) / rate)


def new_stream_id() -> bytes:
    return os.urandom(4)


def parts_in_background(blocks: Iterator[np.ndarray], cutter: Cutter,
                        stop: threading.Event | None = None) -> Iterator[Part]:
    """Cut in a thread of its own, so the input is read on time while a part
    is encoded. ``stop`` set: the input is closed and the rest flushed."""
    out: queue.Queue[Part | BaseException | None] = queue.Queue()

    def work() -> None:
        try:
            for block in blocks:
                for part in cutter.feed(block):
                    out.put(part)
                if stop is not None and stop.is_set():
                    break
            out.put(cutter.flush())
            out.put(None)
        except BaseException as e:  # handed to the reader: one line there
            out.put(e)

    threading.Thread(target=work, name="capture", daemon=True).start()
    while (item := out.get()) is not None:
        if isinstance(item, BaseException):
            raise item
        yield item


@dataclass(frozen=True, slots=True)
class Queued:
    """A part encoded and queued: its queue entry, its bundle's size and words."""

    part: Part
    entry: int
    bytes: int
    words: int
    encode_seconds: float


class StreamSpeakers:
    """The speakers a stream has carried so far, so each part's speakers are
    the stream's: a part is a few seconds of speech, too little for its
    speaker's embedding to reach the store's match (``MATCH_THRESHOLD``), and
    without this every part would bring a "new" speaker: a full profile (130
    bytes) each time, and a voice at the edge that changes from part to part.
    A speaker the part measured afresh who is at least ``threshold`` similar
    to one the stream already carried (to the mean of every part's measure
    of them: one part's is noisy) is sent as a reference to that speaker's
    profile, under the stream's label for them."""

    def __init__(self, threshold: float = STREAM_MATCH) -> None:
        self.threshold = threshold
        self.known: list[Speaker] = []  # label, profile id and the profile, in order of first appearance
        self._sums: dict[bytes, np.ndarray] = {}  # each stream speaker's measures, summed

    def _similarity(self, known: Speaker, vec: np.ndarray) -> float:
        mean = self._sums[known.profile_id]
        return float(np.dot(mean, vec) / (np.linalg.norm(mean) or 1.0))

    def link(self, bundle: Bundle) -> tuple[Bundle, set[bytes]]:
        """``bundle`` with its speakers made the stream's, and the ids of the fresh profiles it no longer carries."""
        speakers, dropped, used = [], set(), set()
        for spk in bundle.speakers:
            if spk.profile is None or not spk.profile_id:  # a reference to a stored speaker, or no profile at all
                mine = next((k for k in self.known if spk.profile_id and k.profile_id == spk.profile_id), None)
                if mine is None and spk.profile_id:
                    self.known.append(spk)
                speakers.append(Speaker(mine.label, mine.profile_id, None) if mine else spk)
                continue
            vec = spk.profile.vector()
            scored = [(self._similarity(k, vec), k) for k in self.known
                      if k.profile_id in self._sums and k.profile_id not in used]
            best = max(scored, key=lambda x: x[0], default=(0.0, None))
            if best[1] is not None and best[0] >= self.threshold:
                speakers.append(Speaker(best[1].label, best[1].profile_id, None))
                used.add(best[1].profile_id)
                dropped.add(spk.profile_id)
                self._sums[best[1].profile_id] = self._sums[best[1].profile_id] + vec
                continue
            anonymous = sum(1 for k in self.known if ANONYMOUS.fullmatch(k.label))
            label = f"S{anonymous + 1}" if ANONYMOUS.fullmatch(spk.label) else spk.label  # an enrolled name stays
            fresh = Speaker(label, spk.profile_id, spk.profile)
            self.known.append(fresh)
            self._sums[spk.profile_id] = vec
            used.add(spk.profile_id)
            speakers.append(fresh)
        return dataclasses.replace(bundle, speakers=speakers), dropped


def capture(encoder: Encoder, outbox: Outbox, parts: Iterator[Part], edges: str | Sequence[str], priority: Priority,
            title: str, stream_id: bytes | None = None, threshold: float = STREAM_MATCH) -> Iterator[Queued]:
    """Encode each part into a bundle of the stream, once, and queue it for ``edges``."""
    to = [edges] if isinstance(edges, str) else list(edges)
    from relay.format.bundle import SourceInfo, StreamPart
    from relay.format.wire import encode_bundle

    sid = stream_id or new_stream_id()
    speakers = StreamSpeakers(threshold)
    for part in parts:
        t0 = time.perf_counter()
        where = StreamPart(sid, part.seq, part.start, part.last)
        profiles: list[bytes] = []
        if len(part.audio):
            result = encoder.encode(part.audio, title, fit_voices=False, stream=where, edges=to)
            bundle, dropped = speakers.link(result.bundle)
            data = encode_bundle(bundle) if dropped or bundle.speakers != result.bundle.speakers else result.data
            words = sum(len(s.words) for s in bundle.segments)
            if result.plan is not None:  # the store learns the stream's speakers, not each part's duplicates
                result.plan.remember = [p for p in result.plan.remember if p.profile_id not in dropped]
            encoder.commit(result, sent=False)  # sent once the edge acknowledges, as in the daemon
            profiles = [s.profile_id for s in bundle.speakers if s.profile is not None]
        else:  # the end of the stream, with nothing more said
            data, words = encode_bundle(Bundle(SourceInfo(title, 0.0, "en", where), [Speaker("S1")], [])), 0
        row = outbox.add_bundle(data, to, priority, title, f"capture:{sid.hex()}:{part.seq}", profiles)
        yield Queued(part, row, len(data), words, time.perf_counter() - t0)

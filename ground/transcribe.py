"""Speech to timed words with faster-whisper.

Whisper runs with word timestamps and the Silero VAD that ships in the
faster-whisper wheel, so silence and noise between utterances cost neither
compute nor bundle bytes. The output is :class:`relay.format.bundle.Segment` objects
whose text is exactly their words joined by spaces, which the wire format
relies on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from ground.frontend import Region
from ground.models import ResolvedModel, resolve_whisper
from relay.audio.io import SAMPLE_RATE, frame_db
from relay.errors import ModelError
from relay.format.bundle import Segment, Word

# faster-whisper logs a line at INFO for every window it is given ("Processing audio with
# duration ..."); the second listen gives it one per stretch, which would bury the daemon's log
logging.getLogger("faster_whisper").setLevel(logging.WARNING)


@dataclass(frozen=True, slots=True)
class TranscribeOptions:
    """Decoding knobs. Beam search (5) is the default: on the LJSpeech clips
    with tiny.en it measured 3.3 % WER at RTF 0.095 on two cores, against
    4.0 % at RTF 0.065 greedy (beam 1). The transcript is all that crosses
    the link, so the ground spends the time."""

    beam_size: int = 5
    language: str | None = None
    vad_filter: bool = True
    min_silence_ms: int = 500
    initial_prompt: str | None = None
    # Whisper drops a whole 30 s window it thinks is silence (no-speech probability over this,
    # and a low log-prob): far-field talk then leaves a bundle without words. None: never drop;
    # the second listen uses that, inside turns the diarizer vouches for (:mod:`ground.relisten`)
    no_speech_threshold: float | None = 0.6
    # decoding again hotter when a window comes out unsure or repeating (faster-whisper's fallback)
    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    # at most this many tokens per second of audio in a window (a repetition loop otherwise runs
    # to Whisper's 224-token limit, beam by beam: 12 s of CPU for a 1 s stretch); None: no cap
    tokens_per_second: float | None = None


@dataclass(slots=True)
class Transcript:
    """What Whisper heard, plus how long it took."""

    segments: list[Segment]
    language: str
    duration: float
    elapsed: float
    confidences: list[float] = field(default_factory=list)  # avg log-prob per segment
    no_speech: list[float] = field(default_factory=list)  # Whisper's no-speech probability per segment
    compression: list[float] = field(default_factory=list)  # gzip compression ratio per segment (repeats)
    region: list[int] = field(default_factory=list)  # per segment, its index in ``regions`` with ``prompts``; else -1

    @property
    def rtf(self) -> float:
        return self.elapsed / self.duration if self.duration else 0.0

    def add(self, segments: Sequence[Segment], confidences: Sequence[float], no_speech: Sequence[float]) -> None:
        """Phrases heard on a second listen (:mod:`ground.relisten`), with Whisper's figures for each."""
        self.segments += segments
        self.confidences += confidences
        self.no_speech += no_speech
        self.compression += [0.0] * len(segments)
        self.region += [-1] * len(segments)


class Transcriber:
    """One loaded Whisper model; reuse it across files (loading costs seconds)."""

    def __init__(self, model: str = "tiny.en", cpu_threads: int = 0, compute_type: str = "int8") -> None:
        from faster_whisper import WhisperModel

        self.resolved: ResolvedModel = resolve_whisper(model)
        try:
            self.model = WhisperModel(
                self.resolved.load_arg,
                device="cpu",
                compute_type=compute_type,
                cpu_threads=cpu_threads,
                local_files_only=False,
            )
        except Exception as exc:  # hub errors, corrupt files: all mean "this model cannot be used"
            hint = (
                " (no internet? pass a local CTranslate2 folder, or one of the packaged models: tiny.en, base)"
                if self.resolved.origin == "hub"
                else ""
            )
            raise ModelError(f"cannot load Whisper model '{model}': {exc.__class__.__name__}{hint}") from None

    @property
    def english_only(self) -> bool:
        return not self.model.model.is_multilingual

    def transcribe(self, audio: np.ndarray, options: TranscribeOptions | None = None,
                   regions: Sequence[Region] | None = None,
                   progress: Callable[[float, float], None] | None = None,
                   prompts: Sequence[str | None] | None = None, loud: np.ndarray | None = None) -> Transcript:
        """Transcribe 16 kHz mono float32 audio.

        ``regions``: where the speech is (:func:`ground.frontend.speech_regions`);
        only those stretches are decoded, joined end to end as faster-whisper
        does with its own VAD, and every time is mapped back to the recording.
        Without them, faster-whisper's Silero VAD decides (``options.vad_filter``).
        ``prompts`` (one per region): each region is decoded alone, with its
        own prompt (a second listen to a stretch, :mod:`ground.relisten`).
        ``loud``: :func:`loud_frames` of ``audio``, when the caller has them.
        ``progress(done, total)`` is called in seconds of audio decoded. Long
        recordings are decoded ``BATCH`` seconds of speech at a time, so memory
        does not grow with their length.
        """
        options = options or TranscribeOptions()
        started = time.perf_counter()
        duration = len(audio) / SAMPLE_RATE
        batch_prompts: list[str | None] = []
        origin: list[int] = []  # with prompts: the index in ``regions`` of each batch
        if regions is None:
            batches: list[list[tuple[int, int]] | None] = [None]
            total = duration
        else:
            spans = [(int(r.start * SAMPLE_RATE), min(len(audio), int(r.end * SAMPLE_RATE))) for r in regions]
            if prompts is None:
                batches = list(_batches([(a, b) for a, b in spans if b > a]))
            else:  # one region at a time, each with its prompt
                kept = [(i, span, prompt) for i, (span, prompt) in enumerate(zip(spans, prompts)) if span[1] > span[0]]
                batches = [[span] for _, span, _ in kept]
                batch_prompts = [prompt for _, _, prompt in kept]
                origin = [i for i, _, _ in kept]
            total = sum(b - a for batch in batches for a, b in batch or ()) / SAMPLE_RATE
        segments: list[Segment] = []
        confidences: list[float] = []
        no_speech: list[float] = []
        compression: list[float] = []
        region: list[int] = []
        language = options.language or ("en" if self.english_only else None)
        loud = loud_frames(audio) if loud is None else loud
        done = 0.0
        for k, batch in enumerate(batches):
            listen = audio if batch is None else np.concatenate([audio[a:b] for a, b in batch])
            if len(listen) < SAMPLE_RATE // 10:
                continue
            raw_segments, info = self.model.transcribe(
                listen,
                beam_size=options.beam_size,
                language=language,
                word_timestamps=True,
                vad_filter=options.vad_filter and batch is None,
                vad_parameters={"min_silence_duration_ms": options.min_silence_ms},
                initial_prompt=batch_prompts[k] if batch_prompts else options.initial_prompt,
                condition_on_previous_text=False,
                no_speech_threshold=options.no_speech_threshold,
                temperature=list(options.temperatures),
                max_new_tokens=_token_cap(options.tokens_per_second, len(listen) / SAMPLE_RATE),
            )
            language = info.language  # detected once, kept for the batches after
            for raw in raw_segments:
                if progress is not None:
                    progress(min(done + float(raw.end), total), total)
                words = _join_words(raw.words or ())
                if batch is not None:
                    words = _restore(words, batch)
                words = tighten_words(words, loud)
                if not words:
                    continue
                text = " ".join(w.text for w in words)
                segments.append(Segment(0, words[0].start, words[-1].end, text, words))
                confidences.append(float(raw.avg_logprob))
                no_speech.append(float(raw.no_speech_prob))
                compression.append(float(raw.compression_ratio))
                region.append(origin[k] if origin else -1)
            done += len(listen) / SAMPLE_RATE
        if progress is not None:
            progress(total, total)
        return Transcript(
            segments=segments,
            language=language or "en",
            duration=duration,
            elapsed=time.perf_counter() - started,
            confidences=confidences,
            no_speech=no_speech,
            compression=compression,
            region=region,
        )


def _token_cap(per_second: float | None, seconds: float) -> int | None:
    """Whisper's ``max_new_tokens`` for one window of ``seconds`` (it decodes 30 s at a time)."""
    if per_second is None:
        return None
    return int(min(200, per_second * min(seconds, 30.0) + 8))


# seconds of speech decoded at once: faster-whisper takes the STFT of all it is given
# (45 minutes: peak RSS 1.68 GB at 120 s, 1.87 GB at 300 s, 2.15 GB at 600 s)
BATCH = 120.0


def _batches(spans: Sequence[tuple[int, int]], limit: float = BATCH) -> Iterator[list[tuple[int, int]]]:
    """Speech stretches in groups of at most ``limit`` seconds (a longer stretch is cut)."""
    size = int(limit * SAMPLE_RATE)
    batch: list[tuple[int, int]] = []
    used = 0
    for a, b in spans:
        while b - a > 0:
            take = min(b - a, size - used)
            batch.append((a, a + take))
            used += take
            a += take
            if used >= size:
                yield batch
                batch, used = [], 0
    if batch:
        yield batch


def _restore(words: tuple[Word, ...], spans: Sequence[tuple[int, int]]) -> tuple[Word, ...]:
    """Times in the joined speech back to times in the recording. A word belongs
    to the stretch its middle falls in and is kept inside it (a word cannot
    span the silence that was cut out)."""
    ends = np.cumsum([(b - a) / SAMPLE_RATE for a, b in spans])
    out = []
    for w in words:
        i = min(int(np.searchsorted(ends, (w.start + w.end) / 2, side="right")), len(spans) - 1)
        joined_start = ends[i - 1] if i else 0.0
        a, b = spans[i][0] / SAMPLE_RATE, spans[i][1] / SAMPLE_RATE
        start = min(max(a + w.start - joined_start, a), b)
        end = min(max(a + w.end - joined_start, start), b)
        out.append(Word(w.text, round(float(start), 3), round(float(end), 3)))
    return tuple(out)


FRAME = 0.02  # seconds per loudness frame
MIN_TRIM = 0.15  # silence at a word's edge shorter than this is left alone (it is the word's own)
EDGE_PAD = 0.04  # kept before the first and after the last loud frame: onsets and releases are quiet


def loud_frames(audio: np.ndarray) -> np.ndarray:
    """One flag per 20 ms frame: louder than the recording's background
    (12 dB over its quietest tenth, and above -55 dBFS)."""
    db = frame_db(audio, FRAME)
    if db.size == 0:
        return np.zeros(0, bool)
    return db > max(np.percentile(db, 10) + 12, -55)


def tighten_words(words: tuple[Word, ...], loud: np.ndarray) -> tuple[Word, ...]:
    """Take the silence out of words' edges.

    Whisper's word timestamps often stretch a word back over the pause before
    it ("ask" from 2.55 to 3.87 s in the JFK clip, spoken at 3.3): the pause
    then looks like speech, the edge cannot keep it, and a phrase that should
    break there is spoken as one, too fast. A word keeps its span unless at
    least ``MIN_TRIM`` of silence sits at its start or end; a word with no
    loud frame at all (a quiet word) is left as it is.
    """
    out = []
    for w in words:
        a, b = int(w.start / FRAME), min(len(loud), int(np.ceil(w.end / FRAME)))
        hot = np.flatnonzero(loud[a:b]) if b > a else np.zeros(0, int)
        start, end = w.start, w.end
        if hot.size:
            first, last = (a + hot[0]) * FRAME, (a + hot[-1] + 1) * FRAME
            if first - w.start >= MIN_TRIM:
                start = max(w.start, first - EDGE_PAD)
            if w.end - last >= MIN_TRIM:
                end = min(w.end, last + EDGE_PAD)
        out.append(Word(w.text, round(float(start), 3), round(float(max(end, start + FRAME)), 3)))
    return tuple(out)


def _join_words(raw_words) -> tuple[Word, ...]:
    """Whisper marks the start of a word with a leading space; a piece without
    one ("-line" after "42") continues the previous word, so join them."""
    words: list[Word] = []
    for w in raw_words:
        token = "".join(w.word.split())
        if not token:
            continue
        start, end = float(w.start), float(max(w.end, w.start))
        if words and not w.word[:1].isspace():
            prev = words[-1]
            words[-1] = Word(prev.text + token, prev.start, max(prev.end, end))
        else:
            words.append(Word(token, start, end))
    return tuple(words)

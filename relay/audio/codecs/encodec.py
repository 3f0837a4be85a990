"""EnCodec (Meta's neural codec), for comparison, from a local checkpoint.

EnCodec is the neural codec people compare against, so it has a row in
``relay bench``; it is not a default tier. It needs the ``encodec`` package
and the 24 kHz checkpoint (``encodec_24khz-d7cc33bc.th`` from
https://dl.fbaipublicfiles.com/encodec/v0/) at the path in ``[codecs]
encodec_checkpoint``: nothing is ever downloaded. At 1.5 kbit/s it sends two
codebooks of 1024 entries per 13.3 ms frame; the 10-bit indices are packed
end to end.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from relay.audio.codecs.base import CodecUnavailable
from relay.audio.io import (
    SAMPLE_RATE,  # what every codec takes and returns
    resample,
)

ENCODEC_RATE = 24000
BITS = 10  # log2 of the codebook size


class EnCodec:
    def __init__(self, bitrate: int, checkpoint: str | None) -> None:
        if not checkpoint:
            raise CodecUnavailable(
                "EnCodec needs a checkpoint: set [codecs] encodec_checkpoint to encodec_24khz-d7cc33bc.th "
                "(https://dl.fbaipublicfiles.com/encodec/v0/); it is never downloaded"
            )
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise CodecUnavailable(f"EnCodec checkpoint {path} does not exist")
        try:
            import torch

            from relay.audio.torchaudio_compat import ensure_torchaudio

            ensure_torchaudio()  # encodec imports torchaudio, whose PyPI extension does not load beside CPU torch
            from encodec import EncodecModel
        except ImportError:
            raise CodecUnavailable("EnCodec needs the encodec package (pip install encodec)") from None
        model = EncodecModel.encodec_model_24khz(pretrained=False)
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as exc:
            raise CodecUnavailable(f"EnCodec checkpoint {path} cannot be loaded ({exc.__class__.__name__})") from None
        model.set_target_bandwidth(bitrate / 1000)
        model.eval()
        self._torch, self._model = torch, model
        self.name = f"encodec-{bitrate / 1000:g}k"
        self.bitrate = bitrate
        self.codebooks = model.quantizer.get_num_quantizers_for_bandwidth(model.frame_rate, bitrate / 1000)

    def encode(self, audio: np.ndarray) -> bytes:
        torch = self._torch
        wav = torch.from_numpy(resample(audio, SAMPLE_RATE, ENCODEC_RATE))[None, None]
        with torch.no_grad():
            frames = self._model.encode(wav)
        codes = torch.cat([c for c, _ in frames], dim=-1)[0].numpy().astype(np.int64)  # [books, T]
        bits = (codes.T.reshape(-1, 1) >> np.arange(BITS)) & 1
        return np.packbits(bits.reshape(-1).astype(np.uint8), bitorder="little").tobytes()

    def decode(self, data: bytes) -> np.ndarray:
        torch = self._torch
        bits = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")
        n = len(bits) // (BITS * self.codebooks) * self.codebooks
        words = bits[: n * BITS].reshape(n, BITS)
        values = (words * (1 << np.arange(BITS))).sum(axis=1).astype(np.int64)
        codes = torch.from_numpy(values.reshape(-1, self.codebooks).T.copy())[None]
        with torch.no_grad():
            wav = self._model.decode([(codes, None)])
        return resample(wav[0, 0].numpy(), ENCODEC_RATE, SAMPLE_RATE)

"""Reading and writing audio, with errors a person can act on.

Decoding goes through PyAV (FFmpeg in the wheel), so wav, flac, mp3, ogg,
m4a and the rest read the same way and nothing needs an ffmpeg binary. Both
ends use it: the ground to feed Whisper, the tests and benchmarks to listen
to what the edge produced.
"""

from __future__ import annotations

import gc
import io
from pathlib import Path

import av
import numpy as np
import soundfile as sf

from relay.errors import AudioInputError
from relay.fileio import write_atomic

SAMPLE_RATE = 16_000  # Hz: what Whisper, CAM++, the codecs and the profiles take (the one definition)


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode a file to mono float32 at ``sample_rate`` Hz.

    Raises :class:`AudioInputError` (one line naming the file) for a missing,
    empty, unreadable or silent-by-corruption file.
    """
    path = Path(path)
    if not path.exists():
        raise AudioInputError(f"{path}: no such file")
    if path.is_dir():
        raise AudioInputError(f"{path}: is a folder, not an audio file")
    if path.stat().st_size == 0:
        raise AudioInputError(f"{path}: file is empty")
    resampler = av.AudioResampler(format="s16", layout="mono", rate=sample_rate)
    chunks: list[np.ndarray] = []
    try:
        with av.open(str(path), mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise AudioInputError(f"{path}: contains no audio stream")
            stream = container.streams.audio[0]
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except AudioInputError:
        raise
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise AudioInputError(f"{path}: not a readable audio file ({exc.__class__.__name__})") from None
    finally:
        gc.collect()  # PyAV frames hold native buffers; free them before the models run
    if not chunks or sum(c.size for c in chunks) == 0:
        raise AudioInputError(f"{path}: no audio samples could be decoded")
    audio = np.concatenate(chunks).astype(np.float32) / 32768.0
    return audio


def probe_audio(path: str | Path) -> float:
    """Check, before queueing, that ``path`` is audio this relay can decode:
    its duration in seconds (decoding the first frames only). Raises
    :class:`AudioInputError`, one line naming the file, for anything else."""
    path = Path(path)
    if not path.is_file():
        raise AudioInputError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    if path.stat().st_size == 0:
        raise AudioInputError(f"{path}: file is empty")
    try:
        with av.open(str(path), mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise AudioInputError(f"{path}: contains no audio stream")
            stream = container.streams.audio[0]
            frames = 0
            for frame in container.decode(stream):
                frames += frame.samples
                if frames >= 4096:
                    break
            if frames == 0:
                raise AudioInputError(f"{path}: no audio samples could be decoded")
            if container.duration is not None:
                return container.duration / 1_000_000
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
            return 0.0
    except AudioInputError:
        raise
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise AudioInputError(f"{path}: not a readable audio file ({exc.__class__.__name__})") from None
    finally:
        gc.collect()


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int) -> None:
    """Write 16-bit PCM WAV atomically (see :func:`relay.fileio.write_atomic`):
    a full disk leaves no half file, and the error is one line."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
    write_atomic(path, buf.getvalue())


def frame_stats(audio: np.ndarray, hop: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean power, peak) of each whole ``hop``-sample frame, a minute of
    frames at a time: a long recording is never copied (squaring 45 minutes
    in float64 at once took 0.7 GB)."""
    n = len(audio) // hop
    power, peak = np.zeros(n), np.zeros(n)
    step = 3000  # frames per block
    for i in range(0, n, step):
        frames = np.asarray(audio[i * hop : min(n, i + step) * hop], dtype=np.float32).reshape(-1, hop)
        power[i : i + len(frames)] = np.einsum("ij,ij->i", frames, frames, dtype=np.float64) / hop
        peak[i : i + len(frames)] = np.abs(frames).max(axis=1)
    return power + 1e-12, peak + 1e-9


def frame_db(audio: np.ndarray, frame: float = 0.02, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Loudness (dBFS, RMS) of each whole ``frame``-second frame."""
    power, _ = frame_stats(audio, int(frame * sample_rate))
    return 10 * np.log10(power)


def resample(audio: np.ndarray, rate_in: float, rate_out: float) -> np.ndarray:
    """High-quality sample-rate conversion (libsoxr), mono float32."""
    if rate_in == rate_out:
        return audio.astype(np.float32, copy=False)
    import soxr

    return soxr.resample(audio, rate_in, rate_out).astype(np.float32)

"""Who is talking, second by second: speaker changes found inside pyannote's turns.

segmentation-3.0 looks at 10-second windows and can keep two similar voices
in one local speaker for a whole window; the clustering then gives the whole
stretch to one person (dev00: 12 of 22 windows, 5 s of confusion in 30). Once
the clustering has said who the speakers are (their CAM++ centroids), each
moment of single-speaker speech is scored afresh against every centroid with
CAM++ on a short window (``WINDOW`` s every ``HOP`` s), and a Viterbi path
with a cost per change (``SWITCH``) chooses who talks at each frame. Overlap
(two speakers at once) and speakers without a centroid are left as pyannote
found them; so is a recording with one speaker.

The window (1.5 s) is the usual base scale of multi-scale diarization (NeMo);
the change cost was chosen on the tune files only (benchmarks/diarization.py:
1.0, 1.5 and 2.0 s windows, costs 1 and 3; the test files were not looked at
for it). Measured on the tune files, pyannote's turns: 17.8 % -> 13.6 % DER (test files: 44.5 %, unchanged).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ground.diarize import Diarization, Turn

STEP = 0.02  # seconds per frame of the relabelled timeline (pyannote's own is 0.017)
WINDOW = 1.5  # seconds of speech per embedding
HOP = 0.25
SWITCH = 3.0  # cost of a change of speaker, in units of ``SCALE`` x cosine
SCALE = 10.0
BLOCK = 240  # windows scored per stretch of features (60 s at HOP)


def _activity(turns: list[Turn], frames: int, speakers: int) -> np.ndarray:
    active = np.zeros((frames, speakers), bool)
    for t in turns:
        active[int(round(t.start / STEP)) : int(round(t.end / STEP)), t.speaker] = True
    return active


def _turns(active: np.ndarray, duration: float) -> list[Turn]:
    out = []
    for k in range(active.shape[1]):
        edges = np.diff(np.concatenate([[0], active[:, k].astype(np.int8), [0]]))
        out += [Turn(round(a * STEP, 3), round(min(b * STEP, duration), 3), k)
                for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1))]
    return sorted((t for t in out if t.end > t.start), key=lambda t: (t.start, t.end, t.speaker))


def _viterbi(scores: np.ndarray, frames: np.ndarray, switch: float) -> np.ndarray:
    """Best speaker per frame; a change costs ``switch`` between adjacent frames,
    nothing across a pause (the frames are not contiguous there)."""
    k = scores.shape[1]
    value = scores[0].copy()
    back = np.zeros(scores.shape, dtype=np.int64)
    off_diagonal = 1.0 - np.eye(k)
    for t in range(1, len(scores)):
        cost = switch if frames[t] == frames[t - 1] + 1 else 0.0
        trans = value[:, None] - cost * off_diagonal
        back[t] = trans.argmax(axis=0)
        value = trans.max(axis=0) + scores[t]
    path = np.zeros(len(scores), dtype=np.int64)
    path[-1] = int(value.argmax())
    for t in range(len(scores) - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


def resegment(audio: np.ndarray, diarization: Diarization, encoder,
              progress: Callable[[str, float, float], None] | None = None) -> Diarization:
    """``diarization`` with its single-speaker stretches relabelled by short-window
    CAM++ scores against the speakers' centroids (``encoder``: a
    :class:`relay.audio.speaker_embedder.SpeakerEmbedder`)."""
    valid = np.flatnonzero(np.all(np.isfinite(diarization.embeddings), axis=1))
    if len(valid) < 2 or not diarization.turns:
        return diarization
    n = int(np.ceil(diarization.duration / STEP))
    speakers = diarization.num_speakers
    active = _activity(diarization.turns, n, speakers)
    exclusive = _activity(diarization.exclusive, n, speakers)
    single = (active.sum(axis=1) == 1) & active[:, valid].any(axis=1)
    frames = np.flatnonzero(single)
    if frames.size == 0:
        return diarization
    centroids = diarization.embeddings[valid]
    width, hop = int(WINDOW * 100), int(HOP * 100)  # in 10 ms feature frames
    windows = max(0, (len(audio) - 400) // 160 + 1 - width) // hop + 1 if len(audio) >= 400 else 0
    if windows == 0:
        return diarization
    # the window nearest each frame; only windows some single-speaker frame needs are embedded
    nearest = np.clip(np.round((frames * STEP - WINDOW / 2) / HOP).astype(int), 0, windows - 1)
    needed = np.unique(nearest)
    scores: dict[int, np.ndarray] = {}
    # stretches of at most BLOCK windows, so the features of one stretch are small
    cuts = np.flatnonzero(np.diff(needed // BLOCK)) + 1
    done = 0
    for block in np.split(needed, cuts):
        if progress is not None:
            progress("diarization: speaker changes", float(done), float(len(needed)))
        scores.update(_score_block(audio, block, width, hop, centroids, encoder))
        done += len(block)
    observed = np.stack([scores[int(w)] for w in nearest]) * SCALE
    path = valid[_viterbi(observed, frames, SWITCH)]
    active[frames] = False
    active[frames, path] = True
    exclusive[frames] = False
    exclusive[frames, path] = True
    return _renumbered(diarization, _turns(active, diarization.duration), _turns(exclusive, diarization.duration))


def _score_block(audio: np.ndarray, block: np.ndarray, width: int, hop: int, centroids: np.ndarray,
                 encoder) -> dict[int, np.ndarray]:
    """Cosine of each window in ``block`` (window indices, ascending) with each
    centroid. Features are computed for the block's stretch only, so memory does
    not grow with the recording (fbank frames are local: the same values as for
    the whole signal, and each window is mean-normalised on its own)."""
    import torch

    first, last = int(block[0]) * hop, int(block[-1]) * hop + width  # feature frames
    a, b = first * 160, min(len(audio), (last - 1) * 160 + 400)
    feats = encoder.fbank(torch.from_numpy(np.ascontiguousarray(audio[a:b], dtype=np.float32)))
    out = {}
    for w in block:
        piece = feats[int(w) * hop - first : int(w) * hop - first + width]
        vector = encoder.embed_features(piece - piece.mean(dim=0, keepdim=True)).numpy()
        out[int(w)] = centroids @ (vector / (np.linalg.norm(vector) + 1e-9))
    return out


def _renumbered(old: Diarization, turns: list[Turn], exclusive: list[Turn]) -> Diarization:
    """Speakers numbered again by first appearance. One left with no speech keeps
    a number after the others (a count the caller asked for is kept)."""
    first: dict[int, float] = {}
    for t in turns:
        first.setdefault(t.speaker, t.start)
    order = sorted(first, key=first.__getitem__) + [k for k in range(old.num_speakers) if k not in first]
    mapping = {old_k: new_k for new_k, old_k in enumerate(order)}

    def renamed(ts: list[Turn]) -> list[Turn]:
        return sorted((Turn(t.start, t.end, mapping[t.speaker]) for t in ts if t.speaker in mapping),
                      key=lambda t: (t.start, t.end, t.speaker))

    return Diarization(turns=renamed(turns), exclusive=renamed(exclusive),
                       embeddings=old.embeddings[order] if order else old.embeddings[:0], duration=old.duration)

"""How many speakers: pyannote's clustering, bounded by what the segmentation heard.

pyannote's agglomerative clustering stops merging CAM++ chunk embeddings at
one distance threshold (ground.diarize.CLUSTERING). How far apart two voices'
embeddings lie depends on the room, the microphone and the voices, so a
threshold can merge two people into one. The segmentation model gives an
independent, threshold-free lower bound: it separates up to three local
speakers in every 10-second window, and two local speakers who each talk on
their own for ``CLEAN_SPEECH`` seconds in one window are two people whatever
their embeddings say. The most found in any window (in ``MIN_WINDOWS``
windows, so one slip does not count) is the least number of speakers the
clustering may return; the caller's ``--min``/``--max``/``--speakers`` still
rule.

Tried and not kept: NME-SC (normalised maximum eigengap spectral clustering,
Park et al. 2019, NeMo's default) chose the count from the pruned affinity's
eigengaps without a threshold, but on 30-second files (16 to 37 chunk
embeddings) it found 3 to 4 speakers where there are 2 (pooled DER 61.5 %
against 25.0 %); silhouette over agglomerative cuts preferred 3 or 4 on two of
the five two-speaker files. Both need more embeddings than a short message has.
A threshold calibrated on each recording from pairs the segmentation vouches
for (two local speakers of one window: different people; one local speaker
followed across windows: the same) was looked at too: a 30-second file gives
0 to 2 such different-people pairs, too few to place a threshold.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ground.pyannote_campplus import import_pyannote

CLEAN_SPEECH = 2.0  # seconds a local speaker talks alone in one window to count as a person
MIN_WINDOWS = 2  # ... in at least this many windows (one window can be a segmentation slip)


def local_speaker_bound(segmentations: np.ndarray, frame_step: float) -> int:
    """The most speakers pyannote's segmentation heard talking alone, for
    ``CLEAN_SPEECH`` s each, within one window, in ``MIN_WINDOWS`` windows or more.
    ``segmentations``: (chunks, frames, local speakers), binary."""
    data = np.nan_to_num(segmentations)
    alone = data.sum(axis=2, keepdims=True) == 1
    clean_seconds = (data * alone).sum(axis=1) * frame_step  # (chunks, local speakers)
    per_window = (clean_seconds >= CLEAN_SPEECH).sum(axis=1)
    for bound in range(int(per_window.max(initial=0)), 0, -1):
        if int((per_window >= bound).sum()) >= MIN_WINDOWS:
            return bound
    return 1


def bounded_agglomerative(metric: str = "cosine") -> Any:
    """pyannote's AgglomerativeClustering with the lower bound above (a factory:
    pyannote is imported only when diarization is used)."""
    import_pyannote()
    from pyannote.audio.pipelines.clustering import AgglomerativeClustering

    class BoundedAgglomerative(AgglomerativeClustering):
        """At least as many speakers as the segmentation heard at once."""

        def __call__(self, embeddings, segmentations=None, num_clusters=None, min_clusters=None,
                     max_clusters=None, **kwargs):
            if segmentations is not None and num_clusters is None:
                frame_step = segmentations.sliding_window.duration / segmentations.data.shape[1]
                bound = local_speaker_bound(segmentations.data, frame_step)
                if max_clusters is not None and np.isfinite(max_clusters):
                    bound = min(bound, int(max_clusters))
                min_clusters = max(min_clusters or 1, bound)
            return super().__call__(embeddings, segmentations=segmentations, num_clusters=num_clusters,
                                    min_clusters=min_clusters, max_clusters=max_clusters, **kwargs)

    return BoundedAgglomerative(metric=metric)

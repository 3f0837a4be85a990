"""Choosing a voice for every speaker of a bundle.

Each speaker with a voice profile gets the measured voice nearest to it:
cosine distance between the profile's CAM++ embedding and the voice's, plus
a pitch term (semitones between the speaker's median pitch and the voice's),
because the embedding alone can prefer a voice an octave away.

* Different speakers in a bundle always get different voices: the choice is
  one joint assignment (Hungarian algorithm), not each speaker grabbing its
  nearest voice in turn, which can leave the last speaker with a poor match.
* Different speakers get different *base* voices while there are enough:
  two timbre variants of one model (``joe~p+2`` and ``joe~p+4``) are
  different keys but sound like one person to the ear, and after pitch
  matching even the speaker encoder can confuse them. So the assignment is
  made over base voices first (a base's cost is its best variant's), then
  each speaker takes the best variant of its base; variants of a base
  already taken are used only when the bases run out.
* The same profile keeps its voice across bundles: assignments are stored by
  profile id and honoured first, unless two speakers of one bundle would
  share a voice.
* A speaker without a profile gets any voice not used by the others.
* A voice out of pitch reach (more than ``REACH`` semitones from the
  speaker: an octave or a sex away) is cast only when no voice within reach
  is free, and the choice says so (:attr:`Choice.out_of_reach`).
* Voices that sound alike to each other cost extra (CAM++ cosine between
  the voices above ``SEPARATE``): two people given two similar voices are
  heard as one by a listener and by a diarizer.
* Only if a bundle has more speakers than there are voices are voices reused.
* A voice of the other apparent sex costs as much as one out of reach
  (:data:`OTHER_SEX`), as :mod:`relay.voice.person` tells them apart. The
  embedding alone picked a man's voice for a woman of 211 Hz on the demo call.
* For English text, voices of English speakers come first: a Kokoro style
  trained on another language reads English with its accent (Whisper's
  WER 5.2 % against 0.7 % on English styles) and costs :data:`FOREIGN`.
* espeak-ng is the fallback: its voices carry a penalty, so they are chosen
  only when no neural voice is free or close.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from relay.db import connect
from relay.errors import ModelError
from relay.format.profile import VoiceProfile
from relay.voice.person import PITCH_WEIGHT, foreign, speaker_sex, voice_sex
from relay.voice.prosody import MAX_PITCH_SHIFT, interval
from relay.voice.voicebank import VoiceTraits

NO_PROFILE_COST = 1.0
# formant synthesis: intelligible, but the last resort, after a neural voice with a foreign accent
ENGINE_PENALTY = {"espeak": 0.95}
FOREIGN = 0.45  # a neural voice trained on another language, for English text
OTHER_SEX = 1.0  # a voice of the other apparent sex (relay.voice.person)
# Voices of one bundle should not sound like one person: pyannote's clustering (ground.diarize,
# threshold 0.85 on unit CAM++ vectors) merges centroids closer than cosine 0.64; a pair of voices
# above SEPARATE costs CLASH_WEIGHT per unit of cosine over it (set from that threshold, not fitted).
SEPARATE = 0.5
CLASH_WEIGHT = 1.0
JOINT_MAX, JOINT_TOP = 4, 5  # speakers cast by trying combinations; nearest groups tried per speaker
# A voice whose pitch the prosody cannot bring within 2 semitones of the speaker's (it moves a voice
# by at most MAX_PITCH_SHIFT) is out of reach: an octave or a sex away. It costs UNREACHABLE, more
# than any difference of likeness, so it is cast only when no voice within reach is free.
REACH = MAX_PITCH_SHIFT + 2.0
UNREACHABLE = 1.0


@dataclass(frozen=True, slots=True)
class Choice:
    speaker: int
    voice: str
    similarity: float | None  # cosine, profile vs voice; None without a profile
    remembered: bool
    pitch_gap: float | None = None  # semitones between the speaker's median pitch and the voice's
    fitted: bool = False  # the voice the ground fitted to this speaker, not one of the bank's

    @property
    def out_of_reach(self) -> bool:
        """The voice is further from the speaker's pitch than the prosody can move it (:data:`REACH`)."""
        return self.pitch_gap is not None and self.pitch_gap > REACH


def tier(profile: VoiceProfile | None, voice: VoiceTraits, english: bool = True) -> float:
    """What a voice costs before likeness: its engine, its accent, and for a
    speaker with a profile, pitch out of reach and the other sex."""
    penalty = ENGINE_PENALTY.get(voice.key.split(":", 1)[0], 0.0) + (FOREIGN if english and foreign(voice) else 0.0)
    if profile is None:
        return penalty
    reach = UNREACHABLE if interval(profile.f0_median, voice.f0_median) > REACH else 0.0
    sex = speaker_sex(profile.f0_median)
    return penalty + reach + (OTHER_SEX if sex and voice_sex(voice) not in (sex, "") else 0.0)


def cost(profile: VoiceProfile | None, voice: VoiceTraits, english: bool = True) -> float:
    if profile is None:
        return NO_PROFILE_COST + tier(profile, voice, english)
    gap = interval(profile.f0_median, voice.f0_median)
    return 1.0 - profile.similarity(voice.embedding) + PITCH_WEIGHT * gap + tier(profile, voice, english)


def pitch_gap(profile: VoiceProfile | None, voice: VoiceTraits) -> float | None:
    """Semitones between the speaker's median pitch and the voice's (None when either is unknown)."""
    if profile is None or profile.f0_median <= 0 or voice.f0_median <= 0:
        return None
    return round(interval(profile.f0_median, voice.f0_median), 1)


class AssignmentStore:
    """profile id -> voice key, in SQLite beside the edge's profile store."""

    def __init__(self, path: str | Path) -> None:
        self._db = connect(
            path,
            "CREATE TABLE IF NOT EXISTS voice_assignments "
            "(profile_id BLOB PRIMARY KEY, voice TEXT NOT NULL, assigned INTEGER NOT NULL);",
            "voice assignments",
            ModelError,
        )

    def get(self, profile_id: bytes) -> str | None:
        row = self._db.execute("SELECT voice FROM voice_assignments WHERE profile_id = ?", (profile_id,)).fetchone()
        return row[0] if row else None

    def put(self, profile_id: bytes, voice: str) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO voice_assignments VALUES (?, ?, ?)", (profile_id, voice, int(time.time()))
        )


def _base(key: str) -> str:
    return key.split("~", 1)[0]


def _clash(voices: Sequence[VoiceTraits]) -> float:
    """How much a set of voices risks being heard as fewer people: for every
    pair, the CAM++ cosine above :data:`SEPARATE`."""
    total = 0.0
    for a, va in enumerate(voices):
        for vb in voices[a + 1:]:
            total += max(0.0, float(np.dot(va.embedding, vb.embedding)) - SEPARATE)
    return total


def _assign(
    rest: list[int], profiles: Sequence[VoiceProfile | None], pool: Sequence[VoiceTraits],
    others: Sequence[VoiceTraits] = (), english: bool = True,
) -> dict[int, VoiceTraits]:
    """Joint assignment of ``rest`` to ``pool``, one base voice per speaker
    when the pool has enough distinct bases, else one key per speaker. With up
    to :data:`JOINT_MAX` speakers every combination of their ``JOINT_TOP``
    nearest groups is tried, and voices that sound alike to each other (or
    to ``others``, the voices already cast) cost extra (:func:`_clash`)."""
    from scipy.optimize import linear_sum_assignment

    bases: dict[str, list[VoiceTraits]] = {}
    for v in pool:
        bases.setdefault(_base(v.key), []).append(v)
    groups = list(bases.values()) if len(bases) >= len(rest) else [[v] for v in pool]
    costs = [[[cost(profiles[i], v, english) for v in g] for g in groups] for i in rest]
    matrix = np.array([[min(c) for c in row] for row in costs])
    if 1 < len(rest) + len(others) and len(rest) <= JOINT_MAX:
        top = [list(np.argsort(row)[:JOINT_TOP]) for row in matrix]
        best_value, best = float("inf"), None
        for combo in itertools.product(*top):
            if len(set(combo)) < len(combo):
                continue
            picked = [groups[c][int(np.argmin(costs[r][c]))] for r, c in enumerate(combo)]
            value = float(sum(matrix[r][c] for r, c in enumerate(combo))) + CLASH_WEIGHT * _clash([*others, *picked])
            if value < best_value:
                best_value, best = value, picked
        if best is not None:
            return dict(zip(rest, best))
    rows, cols = linear_sum_assignment(matrix)
    return {rest[r]: groups[c][int(np.argmin(costs[r][c]))] for r, c in zip(rows, cols)}


def assign_voices(
    profiles: Sequence[VoiceProfile | None], voices: Sequence[VoiceTraits], store: AssignmentStore | None = None,
    *, english: bool = True, others: Sequence[VoiceTraits] = (),
) -> list[Choice]:
    """One voice per speaker (index order of ``profiles``); see the module doc.
    ``english``: the text is English (voices of English speakers first);
    ``others``: voices other speakers of the bundle already have (fitted at
    the ground), which these should not sound like."""
    if not voices:
        raise ModelError("no measured voices to choose from (relay edge voices measure)")
    by_key = {v.key: v for v in voices}
    chosen: dict[int, Choice] = {}
    used: set[str] = set()
    for i, p in enumerate(profiles):
        key = store.get(p.profile_id) if (store is not None and p is not None) else None
        # kept while no voice of a better tier has come (a voice set installed since, say)
        if (p is not None and key is not None and key in by_key and key not in used
                and tier(p, by_key[key], english) <= min(tier(p, v, english) for v in voices)):
            chosen[i] = Choice(i, key, p.similarity(by_key[key].embedding), True, pitch_gap(p, by_key[key]))
            used.add(key)
    rest = [i for i in range(len(profiles)) if i not in chosen]
    taken = {_base(k) for k in used}
    free = [v for v in voices if v.key not in used]
    while rest:
        fresh = [v for v in free if _base(v.key) not in taken]
        if len({_base(v.key) for v in fresh}) >= len(rest):
            pool = fresh  # a base voice of its own for every speaker left
        else:
            pool = free if free else list(voices)  # bases run out: variants; voices run out: reuse
        cast_already = [*others, *(by_key[k] for k in used if k in by_key)]
        for i, v in _assign(rest, profiles, pool, cast_already, english).items():
            p = profiles[i]
            chosen[i] = Choice(i, v.key, p.similarity(v.embedding) if p is not None else None, False, pitch_gap(p, v))
            used.add(v.key)
            taken.add(_base(v.key))
        rest = [i for i in rest if i not in chosen]
        free = [v for v in free if v.key not in used]
    if store is not None:
        for i, p in enumerate(profiles):
            if p is not None:
                store.put(p.profile_id, chosen[i].voice)
    return [chosen[i] for i in range(len(profiles))]

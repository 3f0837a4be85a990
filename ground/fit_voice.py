"""A voice fitted to each speaker at the ground, shipped once in the profile.

The edge can only pick the nearest of its stock voices; the ground has the
speaker's real audio and the compute to do better. Of Kokoro's styles it
keeps those of the speaker's apparent sex, English speakers first
(:mod:`relay.voice.person`), and of these the :data:`SHORTLIST` nearest by
the voice bank's measurements (CAM++ and pitch, each style at its best
timbre variant: :func:`relay.voice.voicebank.seeded`, no synthesis); it tries
each with the vocal tract longer and shorter, then blends of the best with
the next best, renders each candidate as the edge will (the speaker's pitch,
range and colour applied by :func:`relay.voice.tune.tune`), and keeps the one
whose speech CAM++ finds nearest the speaker. What travels is a few style
names, weights and a formant ratio (:class:`relay.format.profile.FittedVoice`,
under 300 bytes).

Fitting on some sentences can fool the encoder on those sentences only
(issue 14: a style walk raised CAM++ on its sentence and lowered it on a new
one), so one sentence is held out: the search's result is kept only if it
beats the best single style on it too. The independent judge of likeness
(Resemblyzer, in ``benchmarks/likeness.py`` and ``relay bench``) is never
used here.

Costs: each style and blend speaks the fitting sentences once (about 20
words; Kokoro runs at about half real time on 2 cores) and each formant
ratio is a PSOLA pass on that speech: 34 candidates at most, bounded by a
time budget (two minutes per speaker). It needs the edge's Kokoro installed on
the ground (``pip install .[edge]``); without it no voice is fitted and the
edge casts from its bank as before.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from relay.audio.io import SAMPLE_RATE, resample
from relay.errors import ModelError
from relay.format.profile import FittedVoice, VoiceProfile

FORMANTS = (0.92, 0.96, 1.04, 1.08)  # the vocal-tract ratios tried, as the edge's own variants
BLEND_SHARES = (0.25, 0.5)  # a second style's share tried in the best style
SHORTLIST = 6  # styles rendered, of those the bank's measurements put nearest the speaker
BUDGET_S = 120.0  # per speaker, on 2 cores
FIT_WORDS = 20  # the speaker's own phrases are used for fitting up to about this many words
MAX_PHRASE_WORDS = 40  # longer phrases would spend the budget on a few candidates
FIT_SENTENCES = (
    "The supply ship left the harbour this morning with fuel and fresh food for the winter.",
    "We checked the instruments twice, and the readings from the northern mast look right.",
    "Tell the team that the weather window opens on Thursday and closes by the weekend.",
)
Mix = tuple[tuple[str, float], ...]  # style names and weights


@dataclass(frozen=True, slots=True)
class VoiceFit:
    """The fitted voice and what it was chosen on (CAM++ cosine to the speaker)."""

    voice: FittedVoice
    fit: float  # on the fitting sentences
    held_out: float  # on the held-out sentence
    stock: str  # the best single style (with its formant ratio)
    stock_held_out: float
    candidates: int
    seconds: float


def _sentences(texts: Sequence[str]) -> tuple[list[str], str]:
    """Fitting phrases (about ``FIT_WORDS`` words) and a held-out one: the
    speaker's own when they said enough, else the stock sentences."""
    own = [t.strip() for t in texts if 4 <= len(t.split()) <= MAX_PHRASE_WORDS]
    fitting: list[str] = []
    for phrase in own[:-1]:
        fitting.append(phrase)
        if sum(len(t.split()) for t in fitting) >= FIT_WORDS:
            return fitting, own[len(fitting)]
    return list(FIT_SENTENCES[:-1]), FIT_SENTENCES[-1]


class VoiceFitter:
    """Fits Kokoro style mixes to speakers; one per process (it holds the model)."""

    engine = "kokoro"

    def __init__(self, encoder=None, *, budget_s: float = BUDGET_S) -> None:
        from relay.voice.engines.kokoro import KokoroBackend

        self.backend = KokoroBackend()
        self.budget_s = budget_s
        self._encoder = encoder
        self._spoken: dict[tuple[Mix, tuple[str, ...]], tuple[list[np.ndarray], int]] = {}

    def unavailable(self) -> str | None:
        """Why voices cannot be fitted here, or None."""
        status = self.backend.status()
        return None if status.available else f"voice fitting needs Kokoro: {status.detail}"

    @property
    def encoder(self):
        if self._encoder is None:
            from relay.audio.speaker_embedder import SpeakerEmbedder

            self._encoder = SpeakerEmbedder()
        return self._encoder

    def _speak(self, mix: Mix, texts: Sequence[str]) -> tuple[list[np.ndarray], int]:
        """``texts`` in ``mix`` as synthesized, cached: formant ratios are tried on the same speech."""
        key = (mix, tuple(texts))
        if key not in self._spoken:
            engine = self.backend.load(self.backend.mix(mix))
            self._spoken[key] = ([engine.synthesize(t) for t in texts], engine.sample_rate)
        return self._spoken[key]

    def _render(self, fitted: FittedVoice, profile: VoiceProfile, texts: Sequence[str]) -> np.ndarray:
        """``texts`` in ``fitted``, brought to the speaker as the edge brings it
        (:func:`relay.voice.prosody.variant_for`, then :func:`relay.voice.tune.tune`), 16 kHz."""
        from relay.audio.pitch import pitch_stats
        from relay.voice.prosody import variant_for
        from relay.voice.tune import tune
        from relay.voice.voicebank import traits_of

        raw, rate = self._speak(fitted.mix, texts)
        variant = variant_for(profile.f0_median, pitch_stats(resample(np.concatenate(raw), rate, SAMPLE_RATE))[0],
                              fitted.formant)
        phrases = [variant.apply(a, rate) for a in raw]
        prosody = tune(profile, traits_of("fit", resample(np.concatenate(phrases), rate, SAMPLE_RATE), np.zeros(0)))
        return np.concatenate([resample(prosody.apply(a, rate), rate, SAMPLE_RATE) for a in phrases])

    def shortlist(self, profile: VoiceProfile, size: int = SHORTLIST) -> list[str]:
        """The styles worth rendering for ``profile``: of its apparent sex (where
        any is), English speakers where there are any, nearest first by the
        bank's shipped measurements (cosine less the edge's pitch cost, at the
        style's best timbre variant); unmeasured styles come last."""
        from relay.voice.person import PITCH_WEIGHT, speaker_sex
        from relay.voice.prosody import interval
        from relay.voice.voicebank import seeded
        from relay.voice.voiceset import style_info

        styles = self.backend.styles()
        sex = speaker_sex(profile.f0_median)
        if sex:
            styles = [s for s in styles if style_info(s).sex in (sex, "")] or styles
        styles = [s for s in styles if style_info(s).english] or styles
        shipped = seeded()
        target = profile.vector()

        def nearness(style: str) -> float:
            found = [t for key, (_, t) in shipped.items() if key.split("~", 1)[0] == f"kokoro:{style}"]
            return max((float(t.embedding @ target) - PITCH_WEIGHT * interval(profile.f0_median, t.f0_median)
                        for t in found), default=-9.0)

        return sorted(styles, key=nearness, reverse=True)[:size]

    def fit(self, profile: VoiceProfile, texts: Sequence[str] = ()) -> VoiceFit:
        """The voice nearest the speaker of ``profile``, on ``texts`` (the
        speaker's own phrases; stock sentences when they are too few).

        Every style with every formant ratio (one synthesis per style; the
        ratios are PSOLA on it), then the best style mixed with the next two
        best. Stops at the time budget."""
        why = self.unavailable()
        if why:
            raise ModelError(why)
        start = time.perf_counter()
        self._spoken.clear()
        fitting, held_out = _sentences(texts)
        target = profile.vector()
        scores: dict[FittedVoice, float] = {}

        def score(voice: FittedVoice) -> float:
            if voice not in scores and (not scores or time.perf_counter() - start < self.budget_s):
                scores[voice] = float(self.encoder.embed(self._render(voice, profile, fitting)) @ target)
            return scores.get(voice, -1.0)

        styles = self.shortlist(profile)
        for style in styles:
            for formant in (1.0, *FORMANTS):
                score(FittedVoice(self.engine, ((style, 1.0),), formant))
        best = max(scores, key=scores.__getitem__)
        ranked = dict.fromkeys(v.mix[0][0] for v in sorted(scores, key=scores.__getitem__, reverse=True))
        stock = best
        for other in [name for name in ranked if name != best.mix[0][0]][:2]:
            for share in BLEND_SHARES:
                mix = FittedVoice(self.engine, ((best.mix[0][0], 1.0 - share), (other, share)), stock.formant)
                best = max(best, mix, key=score)
        judged = {v: float(self.encoder.embed(self._render(v, profile, [held_out])) @ target) for v in {best, stock}}
        chosen = best if judged[best] >= judged[stock] else stock
        self._spoken.clear()
        return VoiceFit(chosen, scores[chosen], judged[chosen], stock.describe(), judged[stock], len(scores),
                        time.perf_counter() - start)

"""Audio -> bundle: the ground station's pipeline, built once, used by every caller.

:class:`Encoder` holds what the ground loads once (Whisper, pyannote's
diarization with CAM++, the profile store) and the settings it encodes with
(:class:`relay.config.GroundConfig`: model, beam, diarization, tiers,
codecs). ``relay ground encode``, the ground daemon, ``relay ground speakers
add`` and the system bench all go through it, so they transcribe, diarize,
match speakers and choose tiers the same way, against the same profile
store. Each recording: level its loudness for the ASR (ground.frontend),
diarize (pyannote, on the audio as recorded), transcribe (faster-whisper)
wherever the VAD *or* the diarizer heard speech, give each word its speaker
and fit each phrase to its speaker's turn, attach voice profiles, choose what
travels as coded audio, pack. Diarization can be off, so a station without the speaker models
still sends text, as one speaker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ground.attribute import attribute, cover_turns, fit_spans
from ground.diarize import Diarization, DiarizationOptions, Diarizer
from ground.enroll import Enrollment, enroll
from ground.fit_voice import VoiceFit, VoiceFitter
from ground.frontend import Region, level, speech_regions, vad_regions
from ground.relisten import merged, relisten
from ground.speakers import SpeakerPlan, plan_speakers
from ground.tiers import choose_tier
from ground.transcribe import TranscribeOptions, Transcriber, Transcript, loud_frames
from relay.audio.codecs import get_codec
from relay.audio.io import SAMPLE_RATE, load_audio
from relay.config import GroundConfig
from relay.env import environment
from relay.errors import ModelError
from relay.format.bundle import Bundle, Segment, SourceInfo, Speaker, StreamPart
from relay.format.profile import VoiceProfile
from relay.profiles import ProfileStore

log = logging.getLogger("relay.ground")

Progress = Callable[[str, float, float], None]  # (stage, done, total)


@dataclass(slots=True)
class EncodeResult:
    """The bundle, its bytes, and the figures an operator wants to see."""

    bundle: Bundle
    data: bytes
    input_bytes: int
    transcript: Transcript
    diarization: Diarization | None = None
    plan: SpeakerPlan | None = None
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds
    tier: str = "text"
    tried: dict[str, int] = field(default_factory=dict)  # tier -> bundle bytes, when a budget chose
    fits: dict[str, VoiceFit] = field(default_factory=dict)  # speaker label -> the voice fitted to them

    @property
    def duration(self) -> float:
        return self.transcript.duration

    @property
    def bits_per_second(self) -> float:
        return len(self.data) * 8 / self.duration if self.duration else 0.0

    @property
    def ratio(self) -> float:
        """How many times smaller than the input file."""
        return self.input_bytes / len(self.data)

    @property
    def rtf(self) -> float:
        """Ground real-time factor: ASR, diarization and packing together (not
        fitting voices, once per new speaker, which the daemon does after queueing)."""
        spent = sum(v for k, v in self.timings.items() if k != "voice fitting")
        return spent / self.duration if self.duration else 0.0


class Encoder:
    """The ground pipeline. Models load on first use (a daemon starts at once, and
    a bad configuration fails before minutes of loading); pass ``transcriber`` or
    ``diarizer`` to share models already loaded. ``store`` is the profile store
    speakers are matched against: by default the configuration's
    (``ground.state_dir/profiles.db``, the daemon's), ``None`` for none."""

    def __init__(self, config: GroundConfig | None = None, *, transcriber: Transcriber | None = None,
                 diarizer: Diarizer | None = None, store: ProfileStore | None | bool = True,
                 hf_token: str | None = None, fitter: VoiceFitter | None = None) -> None:
        self.config = config or GroundConfig()
        self.hf_token = hf_token or environment().hf_token  # for a hub pipeline (ground.pipeline)
        self._transcriber = transcriber
        self._diarizer = diarizer
        self._store: ProfileStore | None = store if isinstance(store, ProfileStore) else None
        self._own_store = store is True
        self._fitter = fitter
        self._no_fitting = False  # fitting is on by default and Kokoro is missing here

    @property
    def transcriber(self) -> Transcriber:
        if self._transcriber is None:
            g = self.config.ground
            self._transcriber = Transcriber(g.model, cpu_threads=g.threads)
        return self._transcriber

    @property
    def diarizer(self) -> Diarizer | None:
        if self._diarizer is None and self.config.ground.diarize:
            self._diarizer = Diarizer(self.config.ground.pipeline, token=self.hf_token)
        return self._diarizer

    @property
    def store(self) -> ProfileStore | None:
        if self._store is None and self._own_store and self.config.ground.diarize:
            self._store = ProfileStore(self.config.ground.profiles_db)
        return self._store

    @property
    def fitter(self) -> VoiceFitter:
        if self._fitter is None:
            self._fitter = VoiceFitter()
        return self._fitter

    def check(self) -> None:
        """Fail now, in one line, if a codec the settings need is missing (before minutes of ASR)."""
        tiers, codecs = self.config.tiers, self.config.codecs
        if tiers.budget is None:
            for name in {tiers.tier, tiers.codec if tiers.tier == "hybrid" else ""} - {"", "text", "hybrid"}:
                get_codec(name, codecs)
        if tiers.reference_clips:
            get_codec(tiers.reference_clips, codecs)
        if self.config.ground.fit_voices and self.config.ground.diarize:
            why = self.fitter.unavailable()
            if why and "fit_voices" in self.config.ground.model_fields_set:
                raise ModelError(why)  # asked for: say so
            if why:  # on by default: a ground without Kokoro sends profiles without a fitted voice
                log.warning("voices are not fitted: %s", why)
                self._no_fitting = True

    def encode(self, audio: np.ndarray, title: str, input_bytes: int = 0,
               speakers: DiarizationOptions | None = None,
               progress: Progress | None = None, fit_voices: bool | None = None,
               stream: StreamPart | None = None, edges: Sequence[str] | None = None) -> EncodeResult:
        """Transcribe (and diarize) decoded 16 kHz audio and pack the bundle
        (a part of a live ``stream``: :mod:`ground.capture`).
        With a profile store, speakers are matched against known profiles; call
        :meth:`commit` once the bundle is safely stored. ``progress(stage, done,
        total)`` follows the long stages (a 45-minute recording takes minutes).
        ``fit_voices`` (default: ``ground.fit_voices``) fits a voice to each new
        speaker before packing (:mod:`ground.fit_voice`; up to 2 minutes each).
        ``edges``: the edges the bundle goes to; a known speaker travels by
        reference only if every one of them has their profile."""
        g = self.config.ground
        fit_voices = (g.fit_voices and not self._no_fitting) if fit_voices is None else fit_voices
        timings: dict[str, float] = {}
        duration = len(audio) / SAMPLE_RATE
        diarizer = self.diarizer
        diarization: Diarization | None = None
        if diarizer is not None:
            t0 = time.perf_counter()
            diarization = diarizer(audio, speakers, progress=progress)
            timings["diarization"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        levelled = level(audio)
        heard = [Region(t.start, t.end) for t in diarization.turns] if diarization else []
        regions = speech_regions(vad_regions(levelled), heard, duration)
        front = time.perf_counter() - t0
        asr_progress = None if progress is None else (lambda done, total: progress("transcribing", done, total))
        options = TranscribeOptions(beam_size=g.beam_size, language=g.language)
        loud = loud_frames(levelled)
        transcript = self.transcriber.transcribe(levelled, options, regions=regions, progress=asr_progress,
                                                 loud=loud)
        timings["asr"] = front + transcript.elapsed
        attributed: list[Segment] = []
        if diarization is not None:
            t0 = time.perf_counter()
            attributed = attribute(transcript.segments, diarization.turns, diarization.exclusive)
            if g.relisten:
                again = TranscribeOptions(beam_size=g.beam_size, language=transcript.language)
                extra = relisten(self.transcriber, levelled, diarization.turns, attributed, again, duration, loud)
                attributed = merged(attributed, extra.segments)
                transcript.add(extra.segments, extra.confidences, extra.no_speech)
                if extra.stretches:
                    log.info("second listen: %d stretches (%.1f s), %d phrases kept, dropped %s (%.1f s)",
                             extra.stretches, extra.seconds, len(extra.segments), extra.dropped or "none",
                             time.perf_counter() - t0)
            timings["asr"] += time.perf_counter() - t0
        del levelled  # a long recording's copy; everything after works on the audio as recorded

        def pack(bundle: Bundle, plan: SpeakerPlan | None = None, fits: dict[str, VoiceFit] | None = None
                 ) -> EncodeResult:
            t0 = time.perf_counter()
            choice = choose_tier(bundle, audio, transcript, self.config.tiers, self.config.codecs)
            timings["pack"] = time.perf_counter() - t0
            return EncodeResult(choice.bundle, choice.data, input_bytes, transcript, diarization, plan, timings,
                                choice.tier, choice.tried, fits or {})

        source = SourceInfo(title=title, duration=transcript.duration, language=transcript.language, stream=stream)
        if diarization is None:  # everything by one speaker
            return pack(Bundle(source, [Speaker("S1")], transcript.segments))
        t0 = time.perf_counter()
        segments = cover_turns(fit_spans(attributed, diarization.turns), diarization.turns)
        tiers = self.config.tiers
        reference = get_codec(tiers.reference_clips, self.config.codecs) if tiers.reference_clips else None
        plan = plan_speakers(segments, diarization, audio, self.store, bits=g.profile_bits, edges=edges,
                             reference_codec=reference)
        if not plan.speakers:  # no words at all: keep the one-speaker shape
            plan.speakers.append(Speaker("S1"))
        timings["speakers"] = time.perf_counter() - t0
        fits: dict[str, VoiceFit] = {}
        if fit_voices:
            t0 = time.perf_counter()
            fits = self._fit_plan(plan)
            timings["voice fitting"] = time.perf_counter() - t0
        return pack(Bundle(source, plan.speakers, plan.segments), plan, fits)

    def _fit_plan(self, plan: SpeakerPlan) -> dict[str, VoiceFit]:
        """Fit a voice to every speaker the bundle carries in full without one,
        from their own phrases; the store learns it when the plan is committed."""
        fits = {}
        for i, speaker in enumerate(plan.speakers):
            if speaker.profile is None or speaker.profile.fitted is not None:
                continue
            fit = self.fitter.fit(speaker.profile, [s.text for s in plan.segments if s.speaker == i])
            fitted = speaker.profile.with_fitted(fit.voice)
            plan.speakers[i] = Speaker(speaker.label, speaker.profile_id, fitted)
            plan.remember = [p for p in plan.remember if p.profile_id != fitted.profile_id] + [fitted]
            fits[speaker.label] = fit
        return fits

    def fit_next(self) -> tuple[VoiceProfile, VoiceFit] | None:
        """Fit a voice to one stored speaker who has none (the daemon's background
        work, after their bundle went out). The profile is stored as not sent, so
        the speaker's next bundle carries it in full, fitted voice and all."""
        store = self.store
        pending = next((p for p in store if p.fitted is None), None) if store is not None else None
        if store is None or pending is None:
            return None
        fit = self.fitter.fit(pending)  # the store keeps no words: the fitter's own sentences
        store.put(pending.with_fitted(fit.voice), sent=False)
        return pending, fit

    def encode_file(self, path: str | Path, title: str | None = None,
                    speakers: DiarizationOptions | None = None, progress: Progress | None = None,
                    fit_voices: bool | None = None, edges: Sequence[str] | None = None) -> EncodeResult:
        path = Path(path)
        audio = load_audio(path)
        return self.encode(audio, title if title is not None else path.stem, path.stat().st_size, speakers, progress,
                           fit_voices, edges=edges)

    def commit(self, result: EncodeResult, sent: bool) -> list[bytes]:
        """The bundle is safely stored: remember its new speakers. ``sent``: it has
        reached the edge as far as the ground can know (written to a file the
        operator carries); otherwise (the daemon) profiles count as sent only
        when the edge acknowledges. Returns the ids of the profiles it carries in full."""
        store = self.store
        if store is None or result.plan is None:
            return []
        if sent:
            result.plan.commit(store)
        else:
            for profile in result.plan.remember:
                store.put(profile, sent=False)
        return [s.profile_id for s in result.plan.speakers if s.profile is not None]

    def enroll(self, name: str, audio: np.ndarray, source: str = "clip") -> Enrollment:
        """Enroll a named speaker from a clip, through the same pipeline (ground.enroll)."""
        diarizer = self.diarizer
        store = self.store
        if diarizer is None or store is None:
            from relay.config import ConfigError

            raise ConfigError("enrolling speakers needs diarization (ground.diarize = true)")
        return enroll(name, audio, self.transcriber, diarizer, store, source, self.config.ground.profile_bits)

"""Bundle -> speech: the edge's pipeline, built once, used by every caller.

:class:`Player` holds what the edge keeps between bundles (the voice catalog,
the voice bank, the stores of received profiles and of which voice speaks
whom) and the settings it plays with (:class:`relay.config.EdgeConfig`:
``[edge]`` voice, device and pitch matching, ``[voices]``, ``[codecs]``,
``[limits]``). The edge daemon, ``relay edge decode``, ``relay edge
play|replay`` and the system bench all go through it, so a bundle sounds
the same whichever of them speaks it.

For each bundle :meth:`Player.prepare` resolves its speakers' profiles
(learning those it carries) and chooses who speaks whom: ``voice = "auto"``
gives every speaker of a multi-speaker or profiled bundle their own voice
from the voice bank (:func:`edge.cast.cast`), else the packaged Piper
voice; a voice key or a Piper ``.onnx`` speaks everything. Then the phrases
are synthesized one by one and streamed (:mod:`edge.playback`) to the sound
card, or to a WAV file on the original timeline, so memory holds a phrase,
not the bundle.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from edge import speed
from edge.assign import AssignmentStore, Choice
from edge.cast import cast, resolve_speakers
from edge.playback import DeviceOutput, PlaybackError, PlaybackReport, WavOutput, play
from edge.rehydrate import RenderedSegment, SpeakerVoices, output_rate, rehydrate
from edge.speed import SpeedProfile
from relay.config import EdgeConfig
from relay.format.bundle import Bundle
from relay.format.wire import decode_bundle
from relay.profiles import ProfileStore
from relay.voice.catalog import Catalog, Voice
from relay.voice.prosody import Prosody
from relay.voice.voicebank import VoiceBank

log = logging.getLogger("relay.edge")
NOTHING_TO_SAY = "nothing to say"  # where a bundle without speech "played": nowhere (Player.speak)


def wav_bytes(duration: float, rate: int) -> int:
    """The size of a bundle's WAV on its timeline (16-bit mono), known before a sample is made."""
    return 44 + 2 * round(duration * rate)


@dataclass(slots=True)
class Performance:
    """Who speaks a bundle: the voices (one per speaker index, one for all, or
    None for a bundle of audio clips only), how each speaker's voice is moved
    toward their pitch, the cast's choices, and the profile ids the bundle
    refers to that this edge has never received (a stand-in voice speaks)."""

    bundle: Bundle
    voices: SpeakerVoices | None
    prosody: dict[int, Prosody] = field(default_factory=dict)
    choices: list[Choice] = field(default_factory=list)
    missing: list[bytes] = field(default_factory=list)

    @property
    def rate(self) -> int:
        return output_rate(self.voices)

    def described(self) -> str:
        if self.choices:
            return ", ".join(f"{self.bundle.speakers[c.speaker].label} -> {c.voice}"
                             + (" (as before)" if c.remembered else "")
                             + (" (fitted at the ground)" if c.fitted else "")
                             + (f" (out of pitch reach: {c.pitch_gap:g} semitones from the speaker)"
                                if c.out_of_reach else "") for c in self.choices)
        if self.voices is None:
            return f"coded audio ({', '.join(sorted({c.codec for c in self.bundle.clips}))})"
        return f"voice {getattr(self.voices, 'voice_name', '?')}"


@dataclass
class _LiveOutput:
    """A sound card kept open across a live stream's parts: ``close`` after a
    part leaves it open for the next one (:meth:`Player.end_stream` closes it)."""

    device: DeviceOutput
    stream_id: bytes
    next: int = 0
    sample_rate: int = 0

    def __post_init__(self) -> None:
        self.sample_rate = self.device.sample_rate

    def follows(self, stream_id: bytes, seq: int, rate: int) -> bool:
        return stream_id == self.stream_id and seq == self.next and rate == self.sample_rate

    def write(self, block) -> None:  # noqa: ANN001 - numpy audio, as Output.write
        self.device.write(block)

    def close(self) -> None:
        pass

    def abort(self) -> None:
        self.device.close()


class Player:
    """The edge pipeline; one per process or thread (its stores are SQLite)."""

    def __init__(self, config: EdgeConfig | None = None, *, speaker_id: int | None = None,
                 catalog: Catalog | None = None) -> None:
        self.config = config or EdgeConfig()
        self.speaker_id = speaker_id  # of a multi-speaker Piper .onnx given as the voice
        self.catalog = catalog or Catalog(self.config.voices)
        self._bank: VoiceBank | None = None
        self._profiles: ProfileStore | None = None
        self._assignments: AssignmentStore | None = None
        self._device_ok = self.config.edge.play
        self._live: _LiveOutput | None = None  # the sound card held open between a stream's parts
        self._speeds: SpeedProfile | None = None
        self._too_slow_said = False

    @property
    def voice(self) -> str:
        return self.config.edge.voice

    def check(self) -> None:
        """A voice that does not exist stops the caller now, in one line, not at every bundle later.
        A Kokoro style set that is missing or altered is one warning: the edge casts from what it has."""
        if self.voice != "auto" and not self._is_onnx(self.voice):
            self.catalog.find(self.voice)
        kokoro = self.catalog.backends.get("kokoro")
        if self.voice == "auto" and kokoro is not None and self.catalog.status("kokoro").available:
            problem = getattr(kokoro, "problem", None)  # set by the status probe
            if problem:
                log.warning("voices: Kokoro's v1.0 style set is not used: %s", problem)

    @property
    def speed_file(self) -> Path:
        return self.config.edge.state_dir / "speed.json"

    def measure_speeds(self) -> SpeedProfile:
        """Each engine's real-time factor on this device: cached, measured again when voices or CPUs change
        (the daemon does this once at start; seconds here, a minute on a Pi)."""
        self._speeds = speed.profile(self.catalog, self.speed_file)
        if not speed.fast_engines(self._speeds):
            self._say_too_slow()
        return self._speeds

    @property
    def speeds(self) -> SpeedProfile | None:
        """The measured speeds, if this edge has measured them (never measured here: that takes a while)."""
        if self._speeds is None:
            self._speeds = speed.load(self.speed_file)
        return self._speeds

    def _say_too_slow(self) -> None:
        if not self._too_slow_said:
            self._too_slow_said = True
            fastest = self._speeds.fastest() if self._speeds else None
            log.warning("speed: no voice renders faster than real time on this device (%s); live streams and flash "
                        "bundles may pause while they render; every bundle still plays",
                        f"fastest {fastest[0]} at RTF {fastest[1]:.2f}" if fastest else "none measured")

    def _fast_engines(self) -> set[str] | None:
        """Engines a live part or a flash bundle may speak with here; None: no limit (unknown, or none fast)."""
        speeds = self.speeds
        if speeds is None or not speeds.rtf:
            return None
        fast = speed.fast_engines(speeds)
        if not fast:
            self._say_too_slow()
            return None
        return fast if fast != set(speeds.rtf) else None

    def lead(self, performance: Performance) -> float:
        """Timeline seconds to render before the first sound on this device (0: keeps ahead as it plays)."""
        speeds = self.speeds
        voices = performance.voices
        if speeds is None or voices is None:
            return 0.0
        engines = voices.values() if isinstance(voices, dict) else [voices]
        rtf = max((speeds.rtf.get(getattr(e, "name", ""), 0.0) for e in engines), default=0.0)
        return speed.lead_seconds(rtf, performance.bundle.source.duration)

    @staticmethod
    def _is_onnx(voice: str) -> bool:
        return voice.endswith(".onnx") or Path(voice).is_file()

    @property
    def bank(self) -> VoiceBank:
        if self._bank is None:
            self._bank = VoiceBank(self.catalog)
        return self._bank

    @property
    def profiles(self) -> ProfileStore:
        if self._profiles is None:
            self._profiles = ProfileStore(self.config.edge.profiles_db)
        return self._profiles

    @property
    def assignments(self) -> AssignmentStore:
        if self._assignments is None:
            self._assignments = AssignmentStore(self.config.edge.profiles_db)
        return self._assignments

    def prepare(self, bundle: Bundle, on_measure: Callable[[Voice], None] | None = None,
                urgent: bool = False) -> Performance:
        """The voices for ``bundle`` (measuring voices the bank has not met yet, once). A live
        stream's part, or an ``urgent`` (flash) bundle, is cast only from voices faster than
        real time on this device, where it has measured some."""
        resolved = resolve_speakers(bundle, self.profiles)
        if not bundle.segments and bundle.clips:  # all real audio: no voice to load
            return Performance(bundle, None, missing=resolved.missing)
        if self.voice == "auto" and (len(bundle.speakers) > 1 or any(resolved.profiles)):
            chosen = cast(resolved.profiles, self.catalog, self.bank, self.assignments,
                          match_pitch=self.config.edge.match_pitch,
                          match_colour=self.config.edge.match_colour, on_measure=on_measure, codecs=self.config.codecs,
                          language=bundle.source.language,
                          engines=self._fast_engines() if urgent or bundle.source.stream else None)
            return Performance(bundle, chosen.voices, chosen.prosody, chosen.choices, resolved.missing)
        return Performance(bundle, self._single_voice(), missing=resolved.missing)

    def _single_voice(self):
        from relay.voice.engines.piper import PiperEngine

        if self.voice == "auto":
            return PiperEngine(None)  # the packaged voice
        if self._is_onnx(self.voice):
            return PiperEngine(self.voice, self.speaker_id)
        return self.catalog.load(self.voice)

    def phrases(self, performance: Performance) -> Iterator[RenderedSegment]:
        """Each phrase and clip as it is ready, in time order."""
        return rehydrate(performance.bundle, performance.voices, performance.prosody, self.config.codecs)

    def to_device(self, performance: Performance, device: str | int | None = None) -> PlaybackReport:
        """Play on the sound card while the rest is synthesized; :class:`PlaybackError` if there is none.

        A part of a live stream plays on its whole timeline (its pauses at
        either end kept) into a device held open from one part to the next, so
        consecutive parts follow each other without a gap or a click; anything
        else closes it first."""
        target = device if device is not None else self.config.edge.device
        part = performance.bundle.source.stream
        if part is None:
            self.end_stream()
            return play(self.phrases(performance), DeviceOutput(performance.rate, target), lead=self.lead(performance))
        live = self._live
        if live is None or not live.follows(part.stream_id, part.seq, performance.rate):
            self.end_stream()
            live = self._live = _LiveOutput(DeviceOutput(performance.rate, target), part.stream_id)
        live.next = part.seq + 1
        try:
            report = play(self.phrases(performance), live, from_start=True, until=performance.bundle.source.duration)
        except BaseException:
            self._live = None
            raise
        if part.last:
            self.end_stream()
        return report

    @property
    def live(self) -> bool:
        """A stream's parts are playing (the device is held for the next one)."""
        return self._live is not None

    def end_stream(self) -> None:
        """Close the device a stream held open (its last part played, or something else comes)."""
        live, self._live = self._live, None
        if live is not None:
            live.device.close()

    def to_file(self, performance: Performance, path: str | Path) -> PlaybackReport:
        """A WAV on the original timeline (silences kept, as long as the recording), written as it is spoken."""
        return play(self.phrases(performance), WavOutput(path, performance.rate), from_start=True,
                    until=performance.bundle.source.duration)

    def speak(self, data: bytes, bundle_id: bytes, received: float,
              room: Callable[[int], None] | None = None, urgent: bool = False) -> str:
        """What the edge daemon does with a bundle it accepted: speak it on the
        device (``play = true``) or into a WAV in the output folder; returns where.
        Before a WAV is written, ``room(bytes)`` may refuse it (too big ever to
        fit: the daemon quarantines it; no room now: it waits). A full output
        disk raises ``OSError`` (the daemon waits); anything the bundle itself
        causes raises, and the daemon quarantines it."""
        bundle = decode_bundle(data, f"bundle {bundle_id.hex()}", self.config.limits)
        if not bundle.segments and not bundle.clips and bundle.source.stream is None:
            # the ground found no speech: its length in silence would only look like a broken speaker
            log.warning("bundle %s (%s): the ground found no speech in its %.0f s; nothing to play",
                        bundle_id.hex(), bundle.source.title, bundle.source.duration)
            return NOTHING_TO_SAY
        if self.config.edge.low_memory:
            from relay.format.textmodel import release_text_model

            release_text_model()
        performance = self.prepare(bundle, urgent=urgent)
        if self._device_ok:
            try:
                self.to_device(performance)
                return "device"
            except PlaybackError as err:
                log.warning("%s; writing WAV files to %s instead", err,
                                                        self.config.edge.played_dir)
                self._device_ok = False
        # named by arrival, not by now: a playback interrupted by a crash and
        # redone after the restart rewrites the same file instead of adding one
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(received))
        out = self.config.edge.played_dir / f"{stamp}-{bundle_id.hex()}.wav"
        if room is not None:
            room(wav_bytes(performance.bundle.source.duration, performance.rate))
        self.to_file(performance, out)
        return str(out)

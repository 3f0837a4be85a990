"""Edge-side commands for ``relay``: ``decode`` and ``voices``."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console(stderr=True, soft_wrap=True)  # one line per note, however narrow the terminal
voices_app = typer.Typer(help="The TTS voices this edge can speak with.", no_args_is_help=True)
VOICES_DIR_HELP = "extra folder of Piper voices (NAME.onnx + NAME.onnx.json); repeatable"


def _speaker_voices(profiles, voice_dirs: list[Path], match_pitch: bool, codecs=None):
    """A voice per speaker, chosen jointly from the measured voices (edge.voices.cast)."""
    from edge.assign import AssignmentStore
    from edge.catalog import Catalog
    from edge.voicebank import VoiceBank
    from edge.voices import cast
    from relay.profiles import default_store_path

    catalog = Catalog([str(d) for d in voice_dirs])
    with console.status("measuring voices (once per voice; about a minute the first time)…"):
        return cast(profiles, catalog, VoiceBank(catalog), AssignmentStore(default_store_path("edge")),
                    match_pitch=match_pitch, codecs=codecs)


def _engine_for(voice: str | None, speaker_id: int | None, voice_dirs: list[Path]):
    """A Piper ``.onnx`` path, a voice key or name from ``relay voices ls``, or the default voice."""
    from edge.catalog import Catalog
    from edge.engines.piper import PiperEngine

    if voice is None or voice.endswith(".onnx") or Path(voice).is_file():
        return PiperEngine(voice, speaker_id)
    return Catalog([str(d) for d in voice_dirs]).load(voice)


def decode(
    bundle: Path = typer.Argument(..., help="bundle file"),
    output: Path = typer.Option(None, "-o", "--output", help="WAV to write (default: BUNDLE name + .wav)"),
    voice: str = typer.Option(
        None, "--voice", help="a voice key from 'relay voices ls' or a Piper .onnx path (default: Piper en_US joe)"
    ),
    speaker_id: int = typer.Option(None, "--speaker-id", help="speaker of a multi-speaker Piper .onnx"),
    voice_dirs: list[Path] = typer.Option([], "--voices", help=VOICES_DIR_HELP),
    store_path: Path = typer.Option(
        None, "--profiles", help="edge profile store (default: $SPEECH_RELAY_HOME/edge/profiles.db)"
    ),
    keep_pitch: bool = typer.Option(
        False, "--keep-pitch", help="speak at each voice's own pitch rather than moving it toward the speaker's"
    ),
    play_it: bool = typer.Option(
        False, "--play", help="play on the audio output while speaking (writes the WAV instead if there is none)"
    ),
    device: str = typer.Option(None, "--device", help="output device for --play (name or index; default device)"),
    lyra_models: Path = typer.Option(
        None, "--lyra-models", envvar="SPEECH_RELAY_LYRA", help="folder of Lyra v2's .tflite models, for Lyra clips"
    ),
) -> None:
    """Speak a bundle with local TTS voices, each phrase at its original time;
    play its coded-audio clips on the same timeline."""
    from edge.rehydrate import output_rate, rehydrate
    from edge.voices import resolve_speakers
    from relay.audio.codecs import CodecSettings
    from relay.errors import RelayError
    from relay.fileio import read_bytes
    from relay.format.wire import decode_bundle
    from relay.profiles import ProfileStore, default_store_path

    codecs = CodecSettings(lyra_models=str(lyra_models) if lyra_models else None)
    decoded = decode_bundle(read_bytes(bundle, "bundle"), str(bundle))
    resolved = resolve_speakers(decoded, ProfileStore(store_path or default_store_path("edge")))
    for pid in resolved.missing:
        label = next(s.label for s in decoded.speakers if s.profile_id == pid)
        console.print(f"note: speaker {label} refers to voice profile {pid.hex()}, which this edge has not received")
    output = output or Path(bundle.name).with_suffix(".wav")
    per_speaker = voice is None and (len(decoded.speakers) > 1 or any(resolved.profiles))
    with console.status("loading voices…"):
        if not decoded.segments and decoded.clips:  # all real audio: no voice to load
            voices, prosody, choices = None, {}, []
        elif per_speaker:
            chosen = _speaker_voices(resolved.profiles, voice_dirs, match_pitch=not keep_pitch, codecs=codecs)
            voices, prosody, choices = chosen.voices, chosen.prosody, chosen.choices
        else:
            voices, prosody, choices = _engine_for(voice, speaker_id, voice_dirs), {}, []
    rate = output_rate(voices)
    if choices:
        described = ", ".join(
            f"{decoded.speakers[c.speaker].label} -> {c.voice}" + (" (as before)" if c.remembered else "")
            for c in choices
        )
    elif voices is None:
        described = f"coded audio ({', '.join(sorted({c.codec for c in decoded.clips}))})"
    else:
        described = f"voice {voices.voice_name}"
    sink = _open_output(rate, device, output) if play_it else None
    started = time.perf_counter()
    if sink is not None:
        from edge.playback import play

        report = play(rehydrate(decoded, voices, prosody, codecs), sink)
        print(
            f"played {report.seconds:.1f} s, {report.phrases} phrase(s), {described}; first sound after "
            f"{report.first_sound_s or 0:.2f} s, waited on the synthesizer {report.waited_s:.2f} s"
        )
        return
    from edge.playback import WavOutput, play

    clips = f" and {len(decoded.clips)} audio clip(s)" if decoded.clips else ""
    with console.status(f"speaking {len(decoded.segments)} segment(s){clips}…"):
        # streamed to the file phrase by phrase: memory for what is spoken, not for the declared duration
        try:
            report = play(rehydrate(decoded, voices, prosody, codecs), WavOutput(output, rate), from_start=True,
                          until=decoded.source.duration)
        except OSError as e:
            raise RelayError(f"{output}: cannot write ({e.strerror or e})") from None
    parts = report.segments
    elapsed = time.perf_counter() - started
    seconds = report.seconds
    drift = seconds / decoded.source.duration - 1 if decoded.source.duration else 0.0
    print(
        f"{output}: {seconds:.1f} s of speech ({drift:+.1%} vs original), "
        f"{sum(p.clip is None for p in parts)} phrase(s), {sum(p.clip is not None for p in parts)} clip(s), "
        f"{described}, real-time factor {elapsed / max(seconds, 1e-9):.3f}"
    )


def _open_output(rate: int, device: str | None, fallback: Path):
    """The audio device for --play, or None (with a note) when there is none."""
    from edge.playback import DeviceOutput, PlaybackError

    try:
        return DeviceOutput(rate, int(device) if device and device.isdigit() else device)
    except PlaybackError as e:
        console.print(f"note: {e}; writing {fallback} instead")
        return None


def _voice_json(voice, traits) -> dict:
    doc = {"key": voice.key, "engine": voice.engine, "name": voice.name, "language": voice.language,
           "embedding": "measured" if traits else "not measured"}
    if traits:
        doc |= {"f0_median_hz": round(traits.f0_median, 1), "rate_wpm": round(traits.rate)}
    return doc


@voices_app.command("ls")
def voices_ls(
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
    voice_dirs: list[Path] = typer.Option([], "--voices", help=VOICES_DIR_HELP),
) -> None:
    """List engines (available or why not) and every voice they offer, with
    what the voice bank measured of each (pitch, rate, speaker embedding)."""
    import json

    from edge.catalog import Catalog
    from edge.voicebank import VoiceBank

    catalog = Catalog([str(d) for d in voice_dirs])
    voices = catalog.voices()
    bank = VoiceBank(catalog)
    traits = {v.key: bank.get(v) for v in voices}
    if as_json:
        doc = {
            "engines": [{"engine": s.engine, "available": s.available, "detail": s.detail}
                        for s in catalog.statuses.values()],
            "voices": [_voice_json(v, traits[v.key]) for v in voices],
        }
        print(json.dumps(doc, indent=2))
        return
    out = Console()
    engines = Table("engine", "available", "detail", box=None, header_style="bold")
    for s in catalog.statuses.values():
        engines.add_row(s.engine, "yes" if s.available else "[red]no[/]", s.detail)
    out.print(engines)
    table = Table("voice", "engine", "language", "embedding", "pitch", "rate", box=None, header_style="bold")
    for v in voices:
        t = traits[v.key]
        table.add_row(
            v.key, v.engine, v.language, "measured" if t else "[yellow]not measured[/]",
            f"{t.f0_median:.0f} Hz" if t else "", f"{t.rate:.0f} wpm" if t else "",
        )
    out.print(table)
    measured = sum(1 for t in traits.values() if t)
    out.print(f"{len(voices)} voice(s), {measured} measured (relay voices measure)")


@voices_app.command("measure")
def voices_measure(
    engine: list[str] = typer.Option([], "--engine", help="only this engine's voices; repeatable"),
    voice_dirs: list[Path] = typer.Option([], "--voices", help=VOICES_DIR_HELP),
) -> None:
    """Measure voices for the bank (speaker embedding, pitch, rate), once each."""
    from rich.progress import Progress

    from edge.catalog import Catalog
    from edge.voicebank import VoiceBank

    catalog = Catalog([str(d) for d in voice_dirs])
    unknown = set(engine) - set(catalog.backends)
    if unknown:
        raise typer.BadParameter(f"unknown engine {sorted(unknown)[0]!r}", param_hint="--engine")
    bank = VoiceBank(catalog)
    todo = [v for v in catalog.voices() if (not engine or v.engine in engine) and bank.get(v) is None]
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("measuring voices", total=len(todo))
        measured = bank.traits(todo, progress=lambda v: progress.update(task, advance=1, description=v.key))
    print(f"measured {len(measured)} voice(s); {len(todo) - len(measured)} failed; bank: {bank.path}")


def register(app: typer.Typer) -> None:
    from edge.ops import register as register_ops

    register_ops(app)
    app.command("decode")(decode)
    app.add_typer(voices_app, name="voices")

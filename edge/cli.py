"""Edge-side commands for ``relay``: ``decode`` and ``voices``."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console(stderr=True)
voices_app = typer.Typer(help="The TTS voices this edge can speak with.", no_args_is_help=True)
VOICES_DIR_HELP = "extra folder of Piper voices (NAME.onnx + NAME.onnx.json); repeatable"


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
) -> None:
    """Speak a bundle with a local TTS voice, each segment at its original time."""
    from edge.rehydrate import render
    from edge.voices import resolve_speakers
    from relay.audio import write_wav
    from relay.fileio import read_bytes
    from relay.profiles import ProfileStore, default_store_path
    from relay.wire import decode_bundle

    decoded = decode_bundle(read_bytes(bundle, "bundle"), str(bundle))
    resolved = resolve_speakers(decoded, ProfileStore(store_path or default_store_path("edge")))
    for pid in resolved.missing:
        label = next(s.label for s in decoded.speakers if s.profile_id == pid)
        console.print(f"note: speaker {label} refers to voice profile {pid.hex()}, which this edge has not received")
    output = output or Path(bundle.name).with_suffix(".wav")
    with console.status("loading voice…"):
        engine = _engine_for(voice, speaker_id, voice_dirs)
    started = time.perf_counter()
    with console.status(f"speaking {len(decoded.segments)} segment(s)…"):
        audio, parts = render(decoded, engine)
    elapsed = time.perf_counter() - started
    write_wav(output, audio, engine.sample_rate)
    seconds = len(audio) / engine.sample_rate
    drift = seconds / decoded.source.duration - 1 if decoded.source.duration else 0.0
    print(
        f"{output}: {seconds:.1f} s of speech ({drift:+.1%} vs original), {len(parts)} segment(s), "
        f"voice {engine.voice_name}, real-time factor {elapsed / max(seconds, 1e-9):.3f}"
    )


@voices_app.command("ls")
def voices_ls(
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
    voice_dirs: list[Path] = typer.Option([], "--voices", help=VOICES_DIR_HELP),
) -> None:
    """List engines (available or why not) and every voice they offer."""
    import json

    from edge.catalog import Catalog

    catalog = Catalog([str(d) for d in voice_dirs])
    voices = catalog.voices()
    if as_json:
        doc = {
            "engines": [{"engine": s.engine, "available": s.available, "detail": s.detail}
                        for s in catalog.statuses.values()],
            "voices": [{"key": v.key, "engine": v.engine, "name": v.name, "language": v.language} for v in voices],
        }
        print(json.dumps(doc, indent=2))
        return
    out = Console()
    engines = Table("engine", "available", "detail", box=None, header_style="bold")
    for s in catalog.statuses.values():
        engines.add_row(s.engine, "yes" if s.available else "[red]no[/]", s.detail)
    out.print(engines)
    table = Table("voice", "engine", "language", box=None, header_style="bold")
    for v in voices:
        table.add_row(v.key, v.engine, v.language)
    out.print(table)
    out.print(f"{len(voices)} voice(s)")


def register(app: typer.Typer) -> None:
    app.command("decode")(decode)
    app.add_typer(voices_app, name="voices")

"""Edge-side commands for ``relay``: ``decode``."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console

console = Console(stderr=True)


def decode(
    bundle: Path = typer.Argument(..., help="bundle file"),
    output: Path = typer.Option(None, "-o", "--output", help="WAV to write (default: BUNDLE name + .wav)"),
    voice: Path = typer.Option(None, "--voice", help="Piper .onnx voice (default: the packaged en_US joe voice)"),
    speaker_id: int = typer.Option(None, "--speaker-id", help="speaker of a multi-speaker Piper voice"),
    store_path: Path = typer.Option(
        None, "--profiles", help="edge profile store (default: $SPEECH_RELAY_HOME/edge/profiles.db)"
    ),
) -> None:
    """Speak a bundle with a local TTS voice, each segment at its original time."""
    from edge.rehydrate import render
    from edge.tts import PiperEngine
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
        engine = PiperEngine(voice, speaker_id)
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


def register(app: typer.Typer) -> None:
    app.command("decode")(decode)

"""Ground-side commands for ``relay``: ``encode``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from relay.fileio import write_atomic

console = Console(stderr=True)


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def encode(
    audio: Path = typer.Argument(..., help="audio file: wav, flac, mp3, ogg, m4a, …"),
    output: Path = typer.Option(None, "-o", "--output", help="bundle to write (default: AUDIO name + .bundle)"),
    model: str = typer.Option(
        "tiny.en", "--model", "-m", help="Whisper: a CTranslate2 folder, a packaged model (tiny.en, base) or a hub name"
    ),
    title: str = typer.Option(None, "--title", help="title carried in the bundle (default: the file name)"),
    language: str = typer.Option(None, "--language", help="language code; default: detect (English for .en models)"),
    beam_size: int = typer.Option(5, "--beam-size", min=1, max=10, help="Whisper beam size (1 = greedy, faster)"),
    threads: int = typer.Option(0, "--threads", min=0, help="CPU threads for Whisper (0 = all cores)"),
) -> None:
    """Transcribe an audio file into a compact bundle."""
    from ground.encode import encode_audio
    from ground.transcribe import TranscribeOptions, Transcriber
    from relay.audio import load_audio

    output = output or Path(audio.name).with_suffix(".bundle")
    samples = load_audio(audio)  # a bad file fails here, before seconds of model loading
    with console.status(f"loading Whisper {model}…"):
        transcriber = Transcriber(model, cpu_threads=threads)
    with console.status(f"transcribing {audio}…"):
        options = TranscribeOptions(beam_size=beam_size, language=language)
        result = encode_audio(samples, transcriber, title or audio.stem, audio.stat().st_size, options)
    write_atomic(output, result.data)
    t = result.transcript
    print(
        f"{audio}: {_human(result.input_bytes)} input, {result.duration:.1f} s of audio, "
        f"{len(t.segments)} segment(s), {sum(len(s.words) for s in t.segments)} words"
    )
    print(
        f"{output}: {len(result.data)} bytes, {result.bits_per_second:.1f} bits/s, "
        f"{result.ratio:,.0f}x smaller than the input; ASR real-time factor {t.rtf:.3f}"
    )


def register(app: typer.Typer) -> None:
    app.command("encode")(encode)

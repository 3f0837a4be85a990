"""Every tier on one recording, side by side (``relay bench``): the whole system measured.

It runs both sides (the ground's :class:`ground.encoder.Encoder`, the edge's
:class:`edge.player.Player`) and listens to the result with the test extras
(jiwer, Whisper's normaliser, matplotlib), so it lives here, beside them,
and not in either side: a ground-only or edge-only install does not offer
it, and one missing its other half or the extras says so in one line.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from relay.cli import plain_console

console = plain_console(stderr=True, soft_wrap=True)
EXTRAS = "the test extras (pip install .[test])"
NEEDS = {"ground": "the ground side (pip install .[ground])", "edge": "the edge side (pip install .[edge])",
         "jiwer": EXTRAS, "whisper_normalizer": EXTRAS, "matplotlib": EXTRAS}


def _require() -> None:
    from relay.errors import RelayError

    for module, what in NEEDS.items():
        if importlib.util.find_spec(module) is None:
            raise RelayError(f"relay bench needs {what}: {module} is not installed")


def bench(
    audio: Path = typer.Argument(..., help="audio file to run every tier on"),
    ref: str = typer.Option(None, "--ref", help="reference transcript (text, or a file holding it): WER"),
    rttm: Path = typer.Option(None, "--rttm", help="reference speaker turns (RTTM): DER"),
    out: Path = typer.Option(Path("out/bench"), "--out", help="folder for the JSON and the plots"),
    model: str = typer.Option("tiny.en", "--model", "-m", help="the ground's Whisper model"),
    listener: str = typer.Option("base", "--listener", help="Whisper model that listens to the results"),
    num_speakers: int = typer.Option(None, "--speakers", min=1, max=64, help="exact number of speakers, if known"),
    voice: str = typer.Option(None, "--voice", help="one edge voice for everyone (default: a voice per speaker)"),
    only: list[str] = typer.Option([], "--tier", help="run only these tiers (repeatable); default: all available"),
    lyra_models: Path = typer.Option(None, "--lyra-models", help="folder of Lyra v2's .tflite models"),
    encodec_checkpoint: Path = typer.Option(None, "--encodec-checkpoint", help="EnCodec 24 kHz checkpoint (.th)"),
    as_markdown: bool = typer.Option(False, "--markdown", help="print the table as Markdown (for the README)"),
) -> None:
    """Every tier on the same audio: bytes, bit/s, WER, dWER, DER, speaker similarity, RTF, memory."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    _require()
    from bench.system import available_tiers, markdown, plot, run_bench, table_rows, write_json
    from ground.diarize import DiarizationOptions
    from relay.audio.codecs import resolve_tier
    from relay.audio.io import load_audio
    from relay.config import Codecs
    from relay.errors import RelayError

    load_audio(audio)  # a bad file fails now, in one line
    if rttm is not None and not rttm.is_file():
        raise RelayError(f"{rttm}: no such RTTM file")
    reference = Path(ref).read_text() if ref and Path(ref).is_file() else ref
    try:
        only = [resolve_tier(t) for t in only]
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--tier") from None
    codecs = Codecs(lyra_models=lyra_models or Codecs().lyra_models, encodec_checkpoint=encodec_checkpoint)
    names, skipped = available_tiers(codecs)
    for name, why in skipped.items():
        console.print(f"note: {name} skipped: {why}", markup=False)
    steps = len([n for n in names if not only or n in only])
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} tiers"),
        TimeElapsedColumn(), console=console, transient=True,
    ) as bar:
        task = bar.add_task("starting", total=steps)
        report = run_bench(
            audio, reference, rttm, model, listener, codecs, voice,
            DiarizationOptions(num_speakers) if num_speakers else None, only or None,
            lambda text, advance=0: bar.update(task, description=text, advance=advance),
        )
    stem = audio.stem
    write_json(report, out / f"{stem}.json")
    plot(report, out / f"{stem}-rate-dwer.png", out / f"{stem}-timeline.png")
    if as_markdown:
        print(markdown(report))
    else:
        head, rows = table_rows(report)
        table = Table(*head, box=None, header_style="bold")
        for row in rows:
            table.add_row(*row)
        screen = Console()
        plain_console(width=max(screen.width, 150) if not screen.is_terminal else None).print(table)
    for figures in report.rows:
        if figures.cast:
            print(f"voices ({figures.tier}): {figures.cast}")
        if figures.likeness and figures.cast:
            print(f"likeness ({figures.tier}): " + "; ".join(
                f"{x.speaker} CAM++ {x.campplus:.2f}"
                + ("" if x.judge is None else f", judge {x.judge:.2f}")
                + ("" if x.normalised is None else f" (normalised {x.normalised:.2f})") for x in figures.likeness))
    print(
        f"{audio}: {report.duration:.1f} s; Whisper {model} at the ground, {listener} listening; "
        f"wrote {out / (stem + '.json')}, {out / (stem + '-rate-dwer.png')}, {out / (stem + '-timeline.png')}"
    )


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)

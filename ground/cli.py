"""Ground-side commands for ``relay``: ``encode`` and ``speakers``."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from relay.fileio import write_atomic

console = Console(stderr=True, soft_wrap=True)  # one line per note, however narrow the terminal
speakers_app = typer.Typer(help="Known speakers: enroll, list, remove.", no_args_is_help=True)

STORE_HELP = "ground profile store (default: $SPEECH_RELAY_HOME/ground/profiles.db)"


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def _store(path: Path | None):
    from relay.profiles import ProfileStore, default_store_path

    return ProfileStore(path or default_store_path("ground"))


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
    diarize: bool = typer.Option(True, "--diarize/--no-diarize", help="find who spoke when (pyannote)"),
    pipeline: str = typer.Option(
        "offline", "--pipeline", help="diarization: 'offline' (packaged models) or a pyannote hub pipeline name"
    ),
    hf_token: str = typer.Option(None, "--hf-token", envvar="HF_TOKEN", help="Hugging Face token for a hub pipeline"),
    num_speakers: int = typer.Option(None, "--speakers", min=1, help="exact number of speakers, if known"),
    min_speakers: int = typer.Option(None, "--min-speakers", min=1, help="at least this many speakers"),
    max_speakers: int = typer.Option(None, "--max-speakers", min=1, help="at most this many speakers"),
    profile_bits: int = typer.Option(4, "--profile-bits", help="voice embedding width on the wire: 4 or 8 bits"),
    store_path: Path = typer.Option(None, "--profiles", help=STORE_HELP),
    tier: str = typer.Option(
        "text", "--tier",
        help="text | hybrid (audio where Whisper is unsure or there is no speech) | an audio tier: codec2, lyra, opus, "
        "encodec, or exact: codec2-700C, codec2-1200, codec2-3200, lyra-3200/6000/9200, opus-6k/12k, encodec-1.5k",
    ),
    hybrid_codec: str = typer.Option("codec2-3200", "--hybrid-codec", help="the audio tier hybrid uses"),
    budget: float = typer.Option(
        None, "--budget", min=1, help="bit/s the bundle may cost: the richest tier that fits (overrides --tier)"
    ),
    lyra_models: Path = typer.Option(
        None, "--lyra-models", envvar="SPEECH_RELAY_LYRA", help="folder of Lyra v2's .tflite models"
    ),
    encodec_checkpoint: Path = typer.Option(None, "--encodec-checkpoint", help="EnCodec 24 kHz checkpoint (.th)"),
    reference_clips: str = typer.Option(
        None, "--reference-clips",
        help="an audio tier (e.g. opus-6k): <= 5 s of each new speaker's voice rides in their profile, for edges that "
        "clone voices",
    ),
) -> None:
    """Transcribe and diarize an audio file into a compact bundle."""
    from ground.diarize import DiarizationOptions, Diarizer
    from ground.encode import encode_audio
    from ground.tiers import TierPolicy
    from ground.transcribe import TranscribeOptions, Transcriber
    from relay.audio.codecs import CodecSettings, get_codec
    from relay.audio.io import load_audio

    if profile_bits not in (4, 8):
        raise typer.BadParameter("must be 4 or 8", param_hint="--profile-bits")
    codecs = CodecSettings(
        str(lyra_models) if lyra_models else None, str(encodec_checkpoint) if encodec_checkpoint else None
    )
    try:
        policy = TierPolicy(tier, hybrid_codec, budget_bps=budget, codecs=codecs, reference_clips=reference_clips)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--tier/--hybrid-codec") from None
    for name in {policy.tier, policy.codec} - {"text", "hybrid"}:
        if budget is None and (name == policy.tier or policy.tier == "hybrid"):
            get_codec(name, codecs)  # a missing model fails now, in one line, before minutes of ASR
    if policy.reference_clips:
        get_codec(policy.reference_clips, codecs)
    try:
        speakers = DiarizationOptions(num_speakers, min_speakers, max_speakers)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--min-speakers/--max-speakers") from None
    output = output or Path(audio.name).with_suffix(".bundle")
    samples = load_audio(audio)  # a bad file fails here, before seconds of model loading
    store = _store(store_path) if diarize else None
    with console.status(f"loading Whisper {model}…"):
        transcriber = Transcriber(model, cpu_threads=threads)
    diarizer = None
    if diarize:
        with console.status("loading diarization models…"):
            diarizer = Diarizer(pipeline, token=hf_token)
    with console.status(f"transcribing {'and diarizing ' if diarize else ''}{audio}…"):
        options = TranscribeOptions(beam_size=beam_size, language=language)
        result = encode_audio(
            samples, transcriber, title or audio.stem, audio.stat().st_size, options, diarizer, speakers, store,
            profile_bits, policy,
        )
    write_atomic(output, result.data)
    if store is not None and result.plan is not None:
        result.plan.commit(store)  # only now: the bundle exists, so its profiles count as sent
    t = result.transcript
    print(
        f"{audio}: {_human(result.input_bytes)} input, {result.duration:.1f} s of audio, "
        f"{len(t.segments)} segment(s), {sum(len(s.words) for s in t.segments)} words"
    )
    found = result.diarization.num_speakers if result.diarization else None
    wanted = num_speakers or min_speakers
    if found is not None and wanted and found < wanted:
        console.print(f"note: found {found} speaker(s) with enough clean speech, fewer than the {wanted} asked for")
    if result.plan is not None:
        def describe(s) -> str:
            if not s.profile_id:
                return s.label
            known = f", known voice {result.plan.matched[s.label]:.2f}" if s.label in result.plan.matched else ""
            return f"{s.label} ({s.profile_state} profile{known})"

        described = ", ".join(describe(s) for s in result.bundle.speakers)
        print(f"speakers: {described}")
        refs = [s.profile for s in result.bundle.speakers if s.profile is not None and s.profile.reference]
        if refs:
            size = sum(len(p.reference) for p in refs)
            print(f"reference clips: {len(refs)} ({policy.reference_clips}, {size} bytes)")
    clips = result.bundle.clips
    if clips or result.tier != "text":
        coded = sum(c.duration for c in clips)
        why = ", ".join(sorted({c.reason for c in clips})) or "none needed"
        chosen = f" (the richest within {budget:g} bit/s)" if budget else ""
        print(f"tier {result.tier}{chosen}: {len(clips)} audio clip(s), {coded:.1f} s coded ({why})")
    print(
        f"{output}: {len(result.data)} bytes, {result.bits_per_second:.1f} bits/s, "
        f"{result.ratio:,.0f}x smaller than the input; ground real-time factor {result.rtf:.3f}"
    )


@speakers_app.command("add")
def speakers_add(
    name: str = typer.Argument(..., help="the speaker's name, as the edge should announce it"),
    clip: Path = typer.Argument(..., help="a recording of the speaker (10 s or more is best)"),
    model: str = typer.Option("tiny.en", "--model", "-m", help="Whisper model used to measure speaking rate"),
    profile_bits: int = typer.Option(4, "--profile-bits", help="embedding width: 4 or 8 bits"),
    store_path: Path = typer.Option(None, "--profiles", help=STORE_HELP),
) -> None:
    """Enroll a named speaker: later bundles carry the name when the voice matches."""
    from ground.diarize import Diarizer
    from ground.enroll import enroll
    from ground.transcribe import Transcriber
    from relay.audio.io import load_audio

    samples = load_audio(clip)
    store = _store(store_path)
    with console.status("loading models…"):
        transcriber = Transcriber(model)
        diarizer = Diarizer()
    with console.status(f"measuring {name}'s voice…"):
        result = enroll(name, samples, transcriber, diarizer, store, str(clip), profile_bits)
    p = result.profile
    extra = f"; {result.other_speakers} other voice(s) in the clip ignored" if result.other_speakers else ""
    again = " (already heard in earlier bundles: named it)" if result.renamed_existing else ""
    print(
        f"enrolled {name}{again}: profile {p.id_hex}, {result.speech_seconds:.1f} s of speech, "
        f"pitch {p.f0_median:.0f} Hz, range {p.f0_range:.1f} st, {p.rate:.0f} wpm{extra}"
    )


@speakers_app.command("ls")
def speakers_ls(
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
    every: bool = typer.Option(False, "--all", help="include anonymous speakers met in earlier bundles"),
    store_path: Path = typer.Option(None, "--profiles", help=STORE_HELP),
) -> None:
    """List enrolled speakers (and, with --all, anonymous ones)."""
    store = _store(store_path)
    rows = [p for p in store if every or p.name]
    if as_json:
        print(json.dumps([{**p.to_dict(), "sent": store.was_sent(p.profile_id)} for p in rows], indent=2))
        return
    table = Table("name", "profile", "pitch", "range", "rate", "sent", box=None, header_style="bold")
    for p in rows:
        table.add_row(
            p.name or "(anonymous)", p.id_hex, f"{p.f0_median:.0f} Hz", f"{p.f0_range:.1f} st", f"{p.rate:.0f} wpm",
            "yes" if store.was_sent(p.profile_id) else "no",
        )
    Console().print(table if rows else f"no {'profiles' if every else 'enrolled speakers'} in {store.path}")


@speakers_app.command("rm")
def speakers_rm(
    name: str = typer.Argument(..., help="enrolled speaker to forget"),
    store_path: Path = typer.Option(None, "--profiles", help=STORE_HELP),
) -> None:
    """Forget an enrolled speaker."""
    from relay.profiles import ProfileError

    if not _store(store_path).remove(name):
        raise ProfileError(f"no speaker named {name!r} is enrolled")
    print(f"removed {name}")


def bench(
    audio: Path = typer.Argument(..., help="audio file to run every tier on"),
    ref: str = typer.Option(None, "--ref", help="reference transcript (text, or a file holding it): WER"),
    rttm: Path = typer.Option(None, "--rttm", help="reference speaker turns (RTTM): DER"),
    out: Path = typer.Option(Path("out/bench"), "--out", help="folder for the JSON and the plots"),
    model: str = typer.Option("tiny.en", "--model", "-m", help="the ground's Whisper model"),
    listener: str = typer.Option("base", "--listener", help="Whisper model that listens to the results"),
    num_speakers: int = typer.Option(None, "--speakers", min=1, help="exact number of speakers, if known"),
    voice: str = typer.Option(None, "--voice", help="one edge voice for everyone (default: a voice per speaker)"),
    only: list[str] = typer.Option([], "--tier", help="run only these tiers (repeatable); default: all available"),
    lyra_models: Path = typer.Option(None, "--lyra-models", envvar="SPEECH_RELAY_LYRA", help="Lyra v2 models"),
    encodec_checkpoint: Path = typer.Option(None, "--encodec-checkpoint", help="EnCodec 24 kHz checkpoint (.th)"),
    as_markdown: bool = typer.Option(False, "--markdown", help="print the table as Markdown (for the README)"),
) -> None:
    """Every tier on the same audio: bytes, bit/s, WER, dWER, DER, speaker similarity, RTF, memory."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from ground.bench import available_tiers, markdown, plot, run_bench, table_rows, write_json
    from ground.diarize import DiarizationOptions
    from relay.audio.codecs import CodecSettings, resolve_tier
    from relay.audio.io import load_audio
    from relay.errors import RelayError

    load_audio(audio)  # a bad file fails now, in one line
    if rttm is not None and not rttm.is_file():
        raise RelayError(f"{rttm}: no such RTTM file")
    reference = Path(ref).read_text() if ref and Path(ref).is_file() else ref
    try:
        only = [resolve_tier(t) for t in only]
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--tier") from None
    codecs = CodecSettings(
        str(lyra_models) if lyra_models else None, str(encodec_checkpoint) if encodec_checkpoint else None
    )
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
        Console(width=max(screen.width, 150) if not screen.is_terminal else None).print(table)
    print(
        f"{audio}: {report.duration:.1f} s; Whisper {model} at the ground, {listener} listening; "
        f"wrote {out / (stem + '.json')}, {out / (stem + '-rate-dwer.png')}, {out / (stem + '-timeline.png')}"
    )


def register(app: typer.Typer) -> None:
    from ground.ops import register as register_ops

    register_ops(app)
    app.command("encode")(encode)
    app.command("bench")(bench)
    app.add_typer(speakers_app, name="speakers")

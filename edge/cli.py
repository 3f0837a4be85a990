"""``relay edge``: the edge's commands, in the order an operator meets them.

``run`` the daemon; ``doctor``, is this node ready; ``decode`` a bundle by hand; the ``voices`` it can speak
with; bundles brought by hand (``import``); what it has received (``ls``),
``search`` its transcripts, take one away as ``text`` or subtitles, ``play``
or ``replay`` one; the station console in a browser (``web``); the edge's
signing ``keys``. Every command reads the same configuration as the
daemon (``-c edge.toml``, else ``$SPEECH_RELAY_EDGE_CONFIG``, else
``/etc/speech-relay/edge.toml`` if it exists, else the packaged defaults):
the same profile store, voice assignments and voices, so a bundle decoded
here sounds as the daemon would speak it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from relay.cli import keys_app, ordered, plain_console, with_flags

console = plain_console(stderr=True, soft_wrap=True)  # one line per note, however narrow the terminal
edge_app = typer.Typer(help="The edge: the daemon, decoding, voices, what was received, keys.", no_args_is_help=True,
                       cls=ordered("run", "doctor", "decode", "voices", "import", "ls", "search", "text", "play",
                                   "replay",
                                   "prune", "web", "keys"))
voices_app = typer.Typer(help="The TTS voices this edge can speak with.", no_args_is_help=True)
CONFIG_HELP = ("edge configuration (default: $SPEECH_RELAY_EDGE_CONFIG, /etc/speech-relay/edge.toml, "
               "or the packaged defaults)")
Config = typer.Option(None, "--config", "-c", help=CONFIG_HELP)
VOICES_DIR_HELP = "extra folder of Piper voices (NAME.onnx + NAME.onnx.json); repeatable"


def _config(path: Path | None, voice_dirs: list[Path] | None = None, required: bool = False):
    """The configuration; ``required`` for commands on the station's store and daemon (not the packaged defaults)."""
    from relay.config import edge_config

    cfg = edge_config(path, required)
    if voice_dirs:
        cfg = with_flags(cfg, "voices", dirs=[*cfg.voices.dirs, *voice_dirs])
    return cfg


def _inbox(cfg, profiles: bool = False):
    from edge.store import Inbox
    from relay.profiles import ProfileStore

    return Inbox.of(cfg, ProfileStore(cfg.edge.profiles_db) if profiles else None)


@edge_app.command("run")
def edge_run(config: Path = Config,
             no_play: bool = typer.Option(False, "--no-play", help="write WAV files instead of playing")) -> None:
    """Run the edge daemon (receive, verify, acknowledge, speak) until stopped."""
    from edge.daemon import EdgeDaemon
    from relay.link.service import serve

    cfg = _config(config, required=True)
    if no_play:
        cfg = with_flags(cfg, "edge", play=False)
    serve(EdgeDaemon(cfg))


@edge_app.command("doctor")
def edge_doctor(config: Path = Config,
                no_broker: bool = typer.Option(False, "--no-broker", help="do not connect to the broker"),
                remeasure: bool = typer.Option(False, "--remeasure", help="time the voices again"),
                as_json: bool = typer.Option(False, "--json")) -> None:
    """Is this node ready? Voices and their speed here, text model, sound card, disks, keys, broker, clock.
    Exits 1 when something the configuration needs is missing."""
    from edge import doctor, speed

    cfg = _config(config)
    if remeasure:
        from relay.voice.catalog import Catalog

        speed.profile(Catalog(cfg.voices), cfg.edge.state_dir / "speed.json", remeasure=True)
    findings = doctor.examine(cfg, broker=not no_broker)
    failed = any(f.level == "fail" for f in findings)
    if as_json:
        print(json.dumps({"ok": not failed, "findings": [{"what": f.what, "level": f.level, "detail": f.detail}
                                                          for f in findings]}, indent=2))
    else:
        table = Table("", "check", "found", box=None, header_style="bold")
        marks = {"ok": Text("ok", "green"), "warn": Text("warn", "yellow"), "fail": Text("FAIL", "bold red")}
        for f in findings:
            table.add_row(marks[f.level], Text(f.what), Text(f.detail))
        plain_console().print(table)
        print(f"{sum(f.level == 'fail' for f in findings)} problem(s) stop this edge, "
              f"{sum(f.level == 'warn' for f in findings)} to know about")
    if failed:
        raise typer.Exit(1)


@edge_app.command("decode")
def decode(
    bundle: Path = typer.Argument(..., help="bundle file"),
    output: Path = typer.Option(None, "-o", "--output", help="WAV to write (default: BUNDLE name + .wav)"),
    config: Path = Config,
    voice: str = typer.Option(
        None, "--voice", help="a voice key from 'relay edge voices ls' or a Piper .onnx path (default: edge.voice, "
        "'auto': a voice per speaker)"
    ),
    speaker_id: int = typer.Option(None, "--speaker-id", min=0, max=100_000,
                                   help="speaker of a multi-speaker Piper .onnx"),
    voice_dirs: list[Path] = typer.Option([], "--voices", help=VOICES_DIR_HELP),
    keep_pitch: bool = typer.Option(
        False, "--keep-pitch", help="speak at each voice's own pitch rather than moving it toward the speaker's"
    ),
    play_it: bool = typer.Option(
        False, "--play", help="play on the audio output while speaking (writes the WAV instead if there is none)"
    ),
    device: str = typer.Option(None, "--device", help="output device for --play (name or index; default device)"),
    lyra_models: Path = typer.Option(None, "--lyra-models", help="folder of Lyra v2's .tflite models, for Lyra clips"),
) -> None:
    """Speak a bundle with local TTS voices, each phrase at its original time;
    play its coded-audio clips on the same timeline."""
    from edge.playback import PlaybackError
    from edge.player import Player
    from relay.errors import RelayError
    from relay.fileio import read_bytes
    from relay.format.wire import decode_bundle

    cfg = _config(config, voice_dirs)
    cfg = with_flags(cfg, "edge", voice=voice, match_pitch=False if keep_pitch else None)
    cfg = with_flags(cfg, "codecs", lyra_models=lyra_models)
    player = Player(cfg, speaker_id=speaker_id)
    player.check()
    decoded = decode_bundle(read_bytes(bundle, "bundle", cfg.limits.max_bundle_bytes), str(bundle), cfg.limits)
    with console.status("loading voices (measuring new ones once: about a minute the first time)…"):
        performance = player.prepare(decoded)
    for pid in performance.missing:
        label = next(s.label for s in decoded.speakers if s.profile_id == pid)
        console.print(f"note: speaker {label} refers to voice profile {pid.hex()}, which this edge has not received")
    output = output or Path(bundle.name).with_suffix(".wav")
    described = performance.described()
    started = time.perf_counter()
    if play_it:
        try:
            report = player.to_device(performance, int(device) if device and device.isdigit() else device)
        except PlaybackError as e:
            console.print(f"note: {e}; writing {output} instead")
        else:
            print(
                f"played {report.seconds:.1f} s, {report.phrases} phrase(s), {described}; first sound after "
                f"{report.first_sound_s or 0:.2f} s, waited on the synthesizer {report.waited_s:.2f} s"
            )
            return
    clips = f" and {len(decoded.clips)} audio clip(s)" if decoded.clips else ""
    with console.status(f"speaking {len(decoded.segments)} segment(s){clips}…"):
        try:  # streamed to the file phrase by phrase: memory for what is spoken, not for the declared duration
            report = player.to_file(performance, output)
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
    config: Path = Config,
) -> None:
    """List engines (available or why not) and every voice they offer, with
    what the voice bank measured of each (pitch, rate, speaker embedding)."""
    import json

    from relay.voice.catalog import Catalog
    from relay.voice.voicebank import VoiceBank

    catalog = Catalog(_config(config, voice_dirs).voices)
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
    out = plain_console()
    engines = Table("engine", "available", "detail", box=None, header_style="bold")
    for s in catalog.statuses.values():
        engines.add_row(s.engine, "yes" if s.available else Text("no", "red"), s.detail)
    out.print(engines)
    table = Table("voice", "engine", "language", "embedding", "pitch", "rate", box=None, header_style="bold")
    for v in voices:
        t = traits[v.key]
        table.add_row(
            v.key, v.engine, v.language, "measured" if t else Text("not measured", "yellow"),
            f"{t.f0_median:.0f} Hz" if t else "", f"{t.rate:.0f} wpm" if t else "",
        )
    out.print(table)
    measured = sum(1 for t in traits.values() if t)
    out.print(f"{len(voices)} voice(s), {measured} measured (relay edge voices measure)")


@voices_app.command("measure")
def voices_measure(
    engine: list[str] = typer.Option([], "--engine", help="only this engine's voices; repeatable"),
    voice_dirs: list[Path] = typer.Option([], "--voices", help=VOICES_DIR_HELP),
    config: Path = Config,
) -> None:
    """Measure voices for the bank (speaker embedding, pitch, rate), once each."""
    from rich.progress import Progress

    from relay.voice.catalog import Catalog
    from relay.voice.voicebank import VoiceBank

    catalog = Catalog(_config(config, voice_dirs).voices)
    unknown = set(engine) - set(catalog.backends)
    if unknown:
        raise typer.BadParameter(f"unknown engine {sorted(unknown)[0]!r}", param_hint="--engine")
    bank = VoiceBank(catalog)
    todo = [v for v in catalog.voices() if (not engine or v.engine in engine) and bank.get(v) is None]
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("measuring voices", total=len(todo))
        measured = bank.traits(todo, progress=lambda v: progress.update(task, advance=1, description=v.key))
    print(f"measured {len(measured)} voice(s); {len(todo) - len(measured)} failed; bank: {bank.path}")


@edge_app.command("import")
def edge_import(
    files: list[Path] = typer.Argument(..., help="transfer files from relay ground export"),
    config: Path = Config,
) -> None:
    """Store bundles brought by hand, checked exactly as if received (signature, freshness, limits);
    the daemon plays them. One already held is left alone. Exit 2 if any file is refused."""
    from edge.by_hand import import_transfer
    from relay.config import ConfigError
    from relay.errors import RelayError
    from relay.fileio import read_bytes
    from relay.link import by_hand

    cfg = _config(config, required=True)
    if not cfg.edge.trusted_keys:
        raise ConfigError("edge.trusted_keys: required (the public key `relay ground keys init` printed)")
    inbox = _inbox(cfg, profiles=True)
    refused = 0
    for path in files:
        try:
            done = import_transfer(inbox, read_bytes(path, "transfer file",
                                                     by_hand.max_file_bytes(cfg.limits.max_bundle_bytes)))
        except RelayError as err:
            refused += 1
            console.print(f"error: {path}: refused: {err}", markup=False, highlight=False)
            continue
        what = {"stored": "stored, to be played", "known": "already here, left alone",
                "rejected": f"rejected ({done.reason})"}[done.outcome]
        print(f"{path}: bundle {done.bundle_id.hex()} ({done.title or 'untitled'}) {what}")
        refused += done.outcome == "rejected"
    if refused:
        raise typer.Exit(2)


@edge_app.command("ls")
def edge_ls(config: Path = Config, as_json: bool = typer.Option(False, "--json")) -> None:
    """Bundles received (accepted, rejected or quarantined; played or waiting) and those still arriving."""
    inbox = _inbox(_config(config, required=True))
    stored, partial = inbox.bundles(), inbox.partial()
    if as_json:
        doc = {"bundles": [s.to_dict() for s in stored],
               "arriving": [{"bundle_id": b.hex(), "fragments": n, "of": c} for b, n, c in partial]}
        print(json.dumps(doc, indent=2))
        return
    table = Table("bundle", "seq", "title", "priority", "state", "duration", "received", "played", box=None,
                  header_style="bold")
    for s in stored:
        state = s.state if s.state == "accepted" else f"{s.state}: {s.reason}"
        table.add_row(s.bundle_id.hex(), str(s.seq or ""), s.title or "",
                      s.priority.name.lower() if s.priority is not None else "", state,
                      f"{s.duration:.0f} s" if s.duration else "",
                      time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s.received)),
                      f"{s.plays}x" if s.played else "waiting" if s.state == "accepted" else "")
    for b, n, c in partial:
        table.add_row(b.hex(), "", "", "", f"arriving: {n}/{c} fragments", "", "", "")
    plain_console().print(table)
    if not stored and not partial:
        print("nothing received yet")


@edge_app.command("search")
def edge_search(
    query: str = typer.Argument(..., help="words to find (all of them; the last may be the start of a word)"),
    limit: int = typer.Option(20, "--limit", "-n", min=1, max=200, help="at most this many phrases"),
    config: Path = Config,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Find phrases across every transcript received: bundle, time, speaker, words."""
    from edge.search import TranscriptIndex
    from edge.subtitles import timestamp

    cfg = _config(config, required=True)
    index = TranscriptIndex(cfg.edge.transcripts_db, cfg.limits)
    index.sync(_inbox(cfg))
    hits = index.search(query, limit)
    if as_json:
        print(json.dumps([h.to_dict() for h in hits], indent=2))
        return
    table = Table("bundle", "title", "at", "speaker", "words", box=None, header_style="bold")
    for h in hits:
        table.add_row(h.bundle_id.hex(), h.title, timestamp(h.start), h.speaker, h.snippet)
    plain_console().print(table)
    if not hits:
        print(f"no phrase has {query!r} ({len(index)} transcript(s) searched)")


@edge_app.command("text")
def edge_text(
    bundle: str = typer.Argument(..., help="bundle id (a unique prefix will do)"),
    fmt: str = typer.Option("txt", "--format", "-f", help="txt (transcript), vtt (WebVTT) or srt (SubRip)"),
    output: Path = typer.Option(None, "-o", "--output", help="file to write (default: standard output)"),
    config: Path = Config,
) -> None:
    """A received bundle's words: a transcript with speakers and times, or subtitles from the word timings."""
    from edge.subtitles import FORMATS, render
    from relay.fileio import write_atomic
    from relay.format.wire import decode_bundle

    if fmt not in FORMATS:
        from relay.errors import RelayError

        raise RelayError(f"--format {fmt}: not one of {', '.join(FORMATS)}")
    cfg = _config(config, required=True)
    inbox = _inbox(cfg)
    item = inbox.find(bundle)
    text = render(decode_bundle(inbox.data(item.bundle_id), f"bundle {item.bundle_id.hex()}", cfg.limits), fmt)
    if output is None:
        print(text, end="")
    else:
        write_atomic(output, text.encode())
        print(f"{item.bundle_id.hex()} ({item.title}) -> {output}")


def _speak(config: Path | None, bundle: str, how: str, output: Path | None, again: bool) -> None:
    from edge.player import Player
    from edge.store import InboxError
    from relay.errors import RelayError

    cfg = _config(config, required=True)
    if output is not None:
        cfg = with_flags(cfg, "edge", play=False, output_dir=output)
    inbox = _inbox(cfg)
    item = inbox.find(bundle)
    if item.state == "rejected":
        raise InboxError(f"bundle {item.bundle_id.hex()} was rejected ({item.reason}); it is never played")
    if item.played and not again:
        raise InboxError(f"bundle {item.bundle_id.hex()} was already played; relay edge replay plays it again")
    try:
        where = Player(cfg).speak(inbox.data(item.bundle_id), item.bundle_id, time.time() if again else item.received)
    except (RelayError, OSError):
        raise
    except Exception as e:  # what the bundle's content causes: one line, as the daemon's quarantine says
        raise InboxError(f"bundle {item.bundle_id.hex()} cannot be played ({e.__class__.__name__}: {e})") from None
    inbox.played(item.bundle_id, how, where)
    print(f"{item.bundle_id.hex()} ({item.title}) -> {where}")


@edge_app.command("play")
def edge_play(bundle: str = typer.Argument(..., help="bundle id (a unique prefix will do)"),
              output: Path = typer.Option(None, "-o", "--output", help="write a WAV into this folder instead"),
              config: Path = Config) -> None:
    """Play a received bundle that has not been played yet (now, from this shell)."""
    _speak(config, bundle, "play", output, again=False)


@edge_app.command("replay")
def edge_replay(bundle: str = typer.Argument(..., help="bundle id (a unique prefix will do)"),
                output: Path = typer.Option(None, "-o", "--output", help="write a WAV into this folder instead"),
                config: Path = Config) -> None:
    """Play a received bundle again (a quarantined one too: it may play now)."""
    _speak(config, bundle, "replay", output, again=True)


@edge_app.command("prune")
def edge_prune(config: Path = Config,
               dry_run: bool = typer.Option(False, "--dry-run", help="say what would be removed; remove nothing"),
               as_json: bool = typer.Option(False, "--json")) -> None:
    """Remove what [retention] lets go of: old spoken WAVs and console renderings, played bundles' data,
    the oldest transcripts over the index's cap (the daemon does this every retention.every seconds).
    Nothing not yet played is removed."""
    from edge.retention import prune
    from relay.retention import show

    show(prune(_config(config, required=True), dry_run), as_json)


@edge_app.command("web")
def edge_web(
    config: Path = Config,
    listen: str = typer.Option(None, "--listen", help="HOST:PORT (default: [web] listen, 127.0.0.1:8750)"),
) -> None:
    """Serve the station console alone (the daemon serves it too with [web] enabled = true)."""
    from edge.web.app import create_app
    from relay.web.server import serve_alone

    cfg = _config(config, required=True)
    serve_alone(cfg.web, listen, lambda: create_app(cfg), "station console")


def register(app: typer.Typer) -> None:
    edge_app.add_typer(voices_app, name="voices")
    edge_app.add_typer(keys_app, name="keys", help="This edge's Ed25519 signing key (it signs acks and reports).")
    app.add_typer(edge_app, name="edge")

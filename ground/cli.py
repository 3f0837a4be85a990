"""``relay ground``: the ground station's commands, in the order an operator meets them.

``run`` the daemon; ``encode`` a recording into a bundle by hand; enroll known
``speakers``; the ``queue`` of bundles to send; ``export`` one to carry by
hand; the link's ``status``; a live input ``capture``d as a stream; the
console in a browser (``web``); the station's signing ``keys``. Every command that touches state reads the same
configuration as the daemon (``-c ground.toml``, else
``$SPEECH_RELAY_GROUND_CONFIG``, else ``/etc/speech-relay/ground.toml`` if it
exists, else the packaged defaults), so a speaker enrolled here is one the
daemon recognises, and a queued file is one the daemon sends. ``queue`` and
``status`` work on the daemon's SQLite queue directly (WAL lets them run
beside it); what goes into the queue is checked first, as an edge would
check it.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from relay.cli import keys_app, ordered, plain_console, stage_bars, with_flags

if TYPE_CHECKING:
    from relay.link.messages import Priority

console = plain_console(stderr=True, soft_wrap=True)  # one line per note, however narrow the terminal
MAX_ID = 2**63 - 1  # SQLite's largest integer: an id beyond it is a usage error, not a crash
ground_app = typer.Typer(help="The ground station: the daemon, encoding, speakers, the queue, keys.",
                         no_args_is_help=True,
                         cls=ordered("run", "encode", "speakers", "queue", "export", "status", "prune", "capture",
                                     "web", "keys"))
speakers_app = typer.Typer(help="Known speakers: enroll, list, remove.", no_args_is_help=True)
queue_app = typer.Typer(help="The queue of bundles to send.", no_args_is_help=True)
CONFIG_HELP = ("ground configuration (default: $SPEECH_RELAY_GROUND_CONFIG, /etc/speech-relay/ground.toml, "
               "or the packaged defaults)")
Config = typer.Option(None, "--config", "-c", help=CONFIG_HELP)


def _config(path: Path | None, required: bool = False):
    """The configuration; ``required`` for commands on the station's queue and daemon (not the packaged defaults)."""
    from relay.config import ground_config

    return ground_config(path, required)


def _priority(text: str, flag: str = "--priority") -> Priority:
    """A priority flag's value, or a usage error (exit 2)."""
    from relay.errors import RelayError, UsageError
    from relay.link.messages import Priority

    try:
        return Priority.parse(text)
    except RelayError as e:
        raise UsageError(f"{flag}: {e}") from None


def _outbox(cfg):
    from ground.queue import Outbox

    return Outbox(cfg.ground.queue_db, cfg.limits)


def _store(cfg):
    from relay.profiles import ProfileStore

    return ProfileStore(cfg.ground.profiles_db)


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def _age(t: float | None) -> str:
    if t is None:
        return ""
    s = max(0, int(time.time() - t))
    return f"{s}s" if s < 120 else f"{s // 60}m" if s < 7200 else f"{s // 3600}h"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    return f"{s}s" if s < 120 else f"{s // 60}m{s % 60:02d}s" if s < 7200 else f"{s // 3600}h{s % 3600 // 60:02d}m"


@ground_app.command("run")
def ground_run(config: Path = Config) -> None:
    """Run the ground daemon (spool, encoder, sender) until stopped."""
    from ground.daemon import GroundDaemon
    from relay.link.service import serve

    serve(GroundDaemon(_config(config, required=True)))


@ground_app.command("encode")
def encode(
    audio: Path = typer.Argument(..., help="audio file: wav, flac, mp3, ogg, m4a, …"),
    output: Path = typer.Option(None, "-o", "--output", help="bundle to write (default: AUDIO name + .bundle)"),
    title: str = typer.Option(None, "--title", help="title carried in the bundle (default: the file name)"),
    config: Path = Config,
    model: str = typer.Option(
        None, "--model", "-m", help="Whisper: a CTranslate2 folder, a packaged model (tiny.en, base) or a hub name"
    ),
    language: str = typer.Option(None, "--language", help="language code; default: detect (English for .en models)"),
    beam_size: int = typer.Option(None, "--beam-size", min=1, max=10, help="Whisper beam size (1 = greedy, faster)"),
    threads: int = typer.Option(None, "--threads", min=0, max=256, help="CPU threads for Whisper (0 = all cores)"),
    diarize: bool = typer.Option(None, "--diarize/--no-diarize", help="find who spoke when (pyannote)"),
    pipeline: str = typer.Option(
        None, "--pipeline", help="diarization: 'offline' (packaged models) or a pyannote hub pipeline name"
    ),
    hf_token: str = typer.Option(None, "--hf-token", help="Hugging Face token for a hub pipeline (or $HF_TOKEN)"),
    num_speakers: int = typer.Option(None, "--speakers", min=1, max=64, help="exact number of speakers, if known"),
    min_speakers: int = typer.Option(None, "--min-speakers", min=1, max=64, help="at least this many speakers"),
    max_speakers: int = typer.Option(None, "--max-speakers", min=1, max=64, help="at most this many speakers"),
    profile_bits: int = typer.Option(None, "--profile-bits", help="voice embedding width on the wire: 4 or 8 bits"),
    fit_voices: bool = typer.Option(
        None, "--fit-voices/--no-fit-voices", help="fit a Kokoro voice to each new speaker (up to 2 minutes each)"
    ),
    tier: str = typer.Option(
        None, "--tier",
        help="text | hybrid (audio where Whisper is unsure or there is no speech) | an audio tier: codec2, lyra, opus, "
        "encodec, or exact: codec2-700C, codec2-1200, codec2-3200, lyra-3200/6000/9200, opus-6k/12k, encodec-1.5k",
    ),
    hybrid_codec: str = typer.Option(None, "--hybrid-codec", help="the audio tier hybrid uses"),
    budget: float = typer.Option(
        None, "--budget", min=1, max=1e7,
        help="bit/s the bundle may cost: the richest tier that fits (overrides --tier)"
    ),
    reference_clips: str = typer.Option(
        None, "--reference-clips",
        help="an audio tier (e.g. opus-6k): <= 5 s of each new speaker's voice rides in their profile, for edges that "
        "clone voices",
    ),
    lyra_models: Path = typer.Option(None, "--lyra-models", help="folder of Lyra v2's .tflite models"),
    encodec_checkpoint: Path = typer.Option(None, "--encodec-checkpoint", help="EnCodec 24 kHz checkpoint (.th)"),
) -> None:
    """Transcribe and diarize an audio file into a compact bundle (flags override the configuration)."""
    from ground.diarize import DiarizationOptions
    from ground.encoder import Encoder
    from relay.audio.io import load_audio
    from relay.fileio import write_atomic

    cfg = with_flags(_config(config), "ground", model=model, language=language, beam_size=beam_size, threads=threads,
                   diarize=diarize, pipeline=pipeline, profile_bits=profile_bits, fit_voices=fit_voices)
    cfg = with_flags(cfg, "tiers", tier=tier, codec=hybrid_codec, budget=budget, reference_clips=reference_clips)
    cfg = with_flags(cfg, "codecs", lyra_models=lyra_models, encodec_checkpoint=encodec_checkpoint)
    try:
        speakers = DiarizationOptions(num_speakers, min_speakers, max_speakers)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--min-speakers/--max-speakers") from None
    encoder = Encoder(cfg, hf_token=hf_token)
    encoder.check()  # a missing codec model fails now, in one line, before minutes of ASR
    output = output or Path(audio.name).with_suffix(".bundle")
    samples = load_audio(audio)  # a bad file fails here, before seconds of model loading
    g = cfg.ground
    with console.status(f"loading Whisper {g.model}…"):
        encoder.transcriber  # noqa: B018 (loads it)
    if g.diarize:
        with console.status("loading diarization models…"):
            encoder.diarizer  # noqa: B018
    with stage_bars(console) as progress:
        result = encoder.encode(samples, title or audio.stem, audio.stat().st_size, speakers, progress)
    write_atomic(output, result.data)
    encoder.commit(result, sent=True)  # only now: the bundle exists, so its profiles count as sent
    t = result.transcript
    print(
        f"{audio}: {_human(result.input_bytes)} input, {result.duration:.1f} s of audio, "
        f"{len(t.segments)} segment(s), {sum(len(s.words) for s in t.segments)} words"
    )
    if not result.bundle.segments and not result.bundle.clips:
        console.print(f"note: no speech was found in its {result.duration:.0f} s: the bundle carries only its length, "
                      "and an edge has nothing to play")
    found = result.diarization.num_speakers if result.diarization else None
    wanted = num_speakers or min_speakers
    if found is not None and wanted and found < wanted:
        console.print(f"note: found {found} speaker(s) with enough clean speech, fewer than the {wanted} asked for")
    if result.plan is not None:
        plan = result.plan

        def describe(s) -> str:
            if not s.profile_id:
                return s.label
            known = f", known voice {plan.matched[s.label]:.2f}" if s.label in plan.matched else ""
            return f"{s.label} ({s.profile_state} profile{known})"

        print(f"speakers: {', '.join(describe(s) for s in result.bundle.speakers)}")
        for label, fit in result.fits.items():
            print(f"fitted voice for {label}: {fit.voice.describe()} (CAM++ on a held-out sentence "
                  f"{fit.held_out:.2f}, best single style {fit.stock} {fit.stock_held_out:.2f}; "
                  f"{fit.candidates} tried in {fit.seconds:.0f} s)")
        refs = [s.profile for s in result.bundle.speakers if s.profile is not None and s.profile.reference]
        if refs:
            size = sum(len(p.reference) for p in refs)
            print(f"reference clips: {len(refs)} ({cfg.tiers.reference_clips}, {size} bytes)")
    clips = result.bundle.clips
    if clips or result.tier != "text":
        coded = sum(c.duration for c in clips)
        why = ", ".join(sorted({c.reason for c in clips})) or "none needed"
        chosen = f" (the richest within {cfg.tiers.budget:g} bit/s)" if cfg.tiers.budget else ""
        print(f"tier {result.tier}{chosen}: {len(clips)} audio clip(s), {coded:.1f} s coded ({why})")
    print(
        f"{output}: {len(result.data)} bytes, {result.bits_per_second:.1f} bits/s, "
        f"{result.ratio:,.0f}x smaller than the input; ground real-time factor {result.rtf:.3f}"
    )


@speakers_app.command("add")
def speakers_add(
    name: str = typer.Argument(..., help="the speaker's name, as the edge should announce it"),
    clip: Path = typer.Argument(..., help="a recording of the speaker (10 s or more is best)"),
    config: Path = Config,
    model: str = typer.Option(None, "--model", "-m", help="Whisper model used to measure speaking rate"),
    profile_bits: int = typer.Option(None, "--profile-bits", help="embedding width: 4 or 8 bits"),
) -> None:
    """Enroll a named speaker into the ground's profile store: later bundles carry
    the name when the voice matches."""
    from ground.encoder import Encoder
    from relay.audio.io import load_audio

    cfg = with_flags(_config(config), "ground", model=model, profile_bits=profile_bits, diarize=True)
    samples = load_audio(clip)
    encoder = Encoder(cfg)
    with console.status("loading models…"):
        encoder.transcriber, encoder.diarizer  # noqa: B018
    with console.status(f"measuring {name}'s voice…"):
        result = encoder.enroll(name, samples, str(clip))
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
    config: Path = Config,
) -> None:
    """List enrolled speakers (and, with --all, anonymous ones)."""
    store = _store(_config(config))
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
    plain_console().print(table if rows else f"no {'profiles' if every else 'enrolled speakers'} in {store.path}")


@speakers_app.command("rm")
def speakers_rm(
    name: str = typer.Argument(..., help="enrolled speaker to forget"),
    config: Path = Config,
) -> None:
    """Forget an enrolled speaker."""
    from relay.profiles import ProfileError

    if not _store(_config(config)).remove(name):
        raise ProfileError(f"no speaker named {name!r} is enrolled")
    print(f"removed {name}")


@queue_app.command("add")
def queue_add(
    file: Path = typer.Argument(..., help="audio to encode, or an encoded .bundle"),
    priority: str = typer.Option("normal", "--priority", "-p", help="flash, priority, normal or bulk"),
    to: str = typer.Option(None, "--to", help="edges: ship1,ship2, @group, all, or a mix (default: default_edge)"),
    title: str = typer.Option(None, "--title", help="title (default: the file name)"),
    config: Path = Config,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Queue a file for one edge or a fleet: encoded once, one signed transfer per edge (checked first:
    audio must decode, a bundle must be one an edge accepts, every edge named must be served)."""
    from ground.intake import destination, queue_file

    cfg = _config(config, required=True)
    prio = _priority(priority)
    edges = destination(cfg, to)
    outbox = _outbox(cfg)
    entry = outbox.entry(queue_file(outbox, cfg, file, edges, prio, title or ""))
    if as_json:
        print(json.dumps({**entry.to_dict(), "rows": [i.to_dict() for i in entry.edges]}))
    else:
        where = edges[0] if len(edges) == 1 else f"{len(edges)} edges ({_names(edges)})"
        print(f"queued entry {entry.id}: {entry.title} -> {where} ({prio.name.lower()}, {entry.state})")


def _names(edges: list[str], most: int = 6) -> str:
    return ", ".join(edges) if len(edges) <= most else f"{', '.join(edges[:most])} and {len(edges) - most} more"


def _progress(i) -> str:
    """One edge's row, in words: fragments sent, delivered, or why it ended."""
    if i.reason and i.state in ("failed", "cancelled"):
        return i.reason
    if i.count and i.state == "sending":
        return f"{i.count - i.pending}/{i.count} fragments" + (f", {i.polls} poll(s)" if i.polls else "")
    if i.state == "delivered":
        return f"delivered {_age(i.delivered)} ago"
    return ""


def _played(i) -> str:
    if i.play_state is not None:
        return f"{i.play_state} {_age(i.played)} ago" + (f": {i.play_reason}" if i.play_reason else "")
    return "not yet" if i.state == "delivered" else ""


@queue_app.command("ls")
def queue_ls(
    all_: bool = typer.Option(False, "--all", "-a", help="include entries finished for every edge"),
    edges: bool = typer.Option(False, "--edges", "-e", help="a line per edge under each entry"),
    edge: str = typer.Option(None, "--edge", help="only entries for this edge"),
    config: Path = Config,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List the queue, most urgent first: an entry per recording, with how many of its edges have it."""
    from ground.queue import ACTIVE, State
    from ground.status import entries

    cfg = _config(config, required=True)
    if edge is not None and edge not in cfg.edges:
        from relay.errors import UsageError

        raise UsageError(f"--edge {edge}: not an edge this ground serves")
    rows = entries(_outbox(cfg), cfg, active_only=not all_, edge=edge)
    if as_json:  # a row per edge (its "entry" says which entry): what a script filters with jq
        print(json.dumps([q.to_dict() for r in rows for q in r.edges], indent=2))
        return
    table = Table("id", "to", "priority", "state", "title", "bytes", "progress", "played", "ETA", "age",
                  box=None, header_style="bold")
    for r in rows:
        e = r.entry
        n = len(e.edges)
        if n == 1:
            i = e.edges[0]
            table.add_row(str(e.id), i.edge, i.priority.name.lower(), str(i.state), e.title, str(e.bundle_size or ""),
                          _progress(i), _played(i), _duration(r.eta_s) if e.active else "", _age(e.created))
            continue
        table.add_row(str(e.id), f"{n} edges", e.priority.name.lower(), e.state, e.title, str(e.bundle_size or ""),
                      f"{e.count(State.DELIVERED)}/{n} delivered", f"{e.played}/{n} played",
                      _duration(r.eta_s) if e.active else "", _age(e.created))
        if edges:
            for q in r.edges:
                i = q.item
                table.add_row("", f"  {i.edge}", i.priority.name.lower(), str(i.state), "", "", _progress(i),
                              _played(i), _duration(q.eta_s) if i.state in ACTIVE else "", "")
    plain_console().print(table)
    if not rows:
        print("queue empty" + ("" if all_ else " (--all shows finished entries)"))


@queue_app.command("cancel")
def queue_cancel(
    entry: int = typer.Argument(..., min=1, max=MAX_ID, help="entry id from relay ground queue ls"),
    edge: str = typer.Option(None, "--edge", help="only for this edge (default: every edge still waiting)"),
    config: Path = Config,
) -> None:
    """Stop sending an entry, to every edge or one (fragments already sent stay sent)."""
    rows = _outbox(_config(config, required=True)).cancel_entry(entry, edge)
    print(f"entry {entry} ({rows[0].title}) cancelled for {_names([i.edge for i in rows])}")


@queue_app.command("bump")
def queue_bump(
    entry: int = typer.Argument(..., min=1, max=MAX_ID, help="entry id from relay ground queue ls"),
    priority: str = typer.Option(None, "--priority", "-p", help="also move it to this priority"),
    edge: str = typer.Option(None, "--edge", help="only for this edge (default: every edge still waiting)"),
    config: Path = Config,
) -> None:
    """Move an entry to the front of its priority (or of another), for every edge or one."""
    prio = _priority(priority) if priority else None
    rows = _outbox(_config(config, required=True)).bump_entry(entry, edge, prio)
    print(f"entry {entry} ({rows[0].title}) is now first among {rows[0].priority.name.lower()} for "
          f"{_names([i.edge for i in rows])}")


@ground_app.command("prune")
def prune_cmd(config: Path = Config,
              dry_run: bool = typer.Option(False, "--dry-run", help="say what would be removed; remove nothing"),
              as_json: bool = typer.Option(False, "--json")) -> None:
    """Remove what [retention] lets go of: taken and uploaded recordings once their entry is finished,
    refused spool files, finished queue entries (the daemon does this every retention.every seconds)."""
    from ground.retention import prune
    from relay.retention import show

    show(prune(_config(config, required=True), dry_run), as_json)


@ground_app.command("export")
def export(
    entry: int = typer.Argument(..., min=1, max=MAX_ID, help="entry id from relay ground queue ls"),
    output: Path = typer.Option(..., "-o", "--output", help="file to write (relay edge import reads it)"),
    edge: str = typer.Option(None, "--edge", help="the edge it is for (needed when the entry goes to several)"),
    config: Path = Config,
) -> None:
    """Write an entry's signed transfer for one edge to a file, to carry to it by hand (a USB stick)."""
    from relay.errors import UsageError
    from relay.fileio import write_atomic
    from relay.link import by_hand
    from relay.link.signing import SigningKey

    cfg = _config(config, required=True)
    outbox = _outbox(cfg)
    rows = outbox.entry(entry).edges
    chosen = [i for i in rows if edge is None or i.edge == edge]
    if len(chosen) != 1:
        names = ", ".join(i.edge for i in rows)
        raise UsageError(f"--edge {edge}: entry {entry} goes to {names}" if edge else
                         f"entry {entry} goes to {len(rows)} edges ({names}): --edge names the one to carry it to")
    item = chosen[0]
    transfer = outbox.export(item.id, SigningKey.load(cfg.ground.signing_key), cfg.link_for(item.edge).fragment_size)
    data = by_hand.pack(transfer, item.edge)
    write_atomic(output, data)
    print(f"entry {entry} ({item.title}) for {item.edge}: bundle {transfer.bundle_id.hex()}, "
          f"{transfer.count} fragments, {len(data)} bytes -> {output}")


@ground_app.command("status")
def status(
    config: Path = Config,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The daemon's broker link; per edge: last ack, backlog, delivered and played, bytes sent, rate and
    the backlog's ETA; then the recent fleet entries and the ships that have not yet heard them."""
    from ground.status import edges, fleet

    cfg = _config(config, required=True)
    outbox = _outbox(cfg)
    link = outbox.link()
    rows = [e.to_dict() for e in edges(outbox, cfg)]
    sent_to_many = fleet(outbox, cfg, recent=10)
    if as_json:
        print(json.dumps({"daemon": None if link is None else {**asdict(link), "alive": link.alive(),
                                                               "line": link.describe()},
                          "edges": rows, "fleet": sent_to_many}, indent=2))
        return
    print(link.describe() if link is not None else "no ground daemon has run on this queue")
    table = Table("edge", "last ack", "backlog", "delivered", "played", "quarantined", "failed", "link bytes sent",
                  "rate", "ETA", box=None, header_style="bold")
    for r in rows:
        backlog = f"{r['backlog_entries']} ({r['backlog_bytes']} B)"
        if r["to_encode"]:
            backlog += f", {r['to_encode']} to encode"
        eta = "" if not r["backlog_entries"] else _duration(r["eta_s"]) if r["eta_s"] is not None else (
            "after encoding" if r["to_encode"] == r["backlog_entries"] else "-")
        table.add_row(r["edge"], f"{_age(r['last_ack'])} ago" if r["last_ack"] else "never", backlog,
                      str(r["delivered"]), str(r["played"]), str(r["quarantined"]), str(r["failed"]),
                      str(r["link_bytes_sent"]), f"{r['rate_bytes_per_s']:.1f} B/s", eta)
    plain_console().print(table)
    if not rows:
        print("no edges yet")
    for f in sent_to_many:
        missing = f["not_yet"]
        print(f"entry {f['id']} ({f['title']}): played on {f['played']}/{f['edges']} edges"
              + (f"; not yet: {_names(missing)}" if missing else ""))


@ground_app.command("capture")
def capture_cmd(
    device: str = typer.Option(None, "--device", help="the input device: a number or a name (default: the system's)"),
    input_file: Path = typer.Option(None, "--input", help="a recording played in as if live, instead of a device"),
    fast: bool = typer.Option(False, "--fast", help="with --input: as fast as it encodes, not in real time"),
    chunk: float = typer.Option(10.0, "--chunk", min=1, max=600,
                                help="seconds a bundle covers at most (cut at pauses)"),
    to: str = typer.Option(None, "--to", help="edges: ship1,ship2, @group, all, or a mix (default: default_edge)"),
    priority: str = typer.Option("priority", "--priority", "-p", help="flash, priority, normal or bulk"),
    title: str = typer.Option(None, "--title", help="the stream's title (default: live and the time)"),
    config: Path = Config,
) -> None:
    """Capture a sound card's input (a radio receiver's line out) live: bundles
    cut at pauses, one stream, queued for the edge as they are made (the daemon
    sends them). Ctrl-C (or SIGTERM) ends the stream."""
    import signal
    import threading

    from ground.capture import Cutter, capture, device_blocks, file_blocks, parts_in_background
    from ground.encoder import Encoder
    from ground.intake import destination

    cfg = _config(config, required=True)
    edges = destination(cfg, to)
    prio = _priority(priority)
    cutter = Cutter(chunk)
    encoder = Encoder(cfg)
    with console.status("loading the models…"):
        encoder.transcriber  # noqa: B018 (loads it before the first part waits for it)
        if cfg.ground.diarize:
            encoder.diarizer  # noqa: B018
    dev = int(device) if device is not None and device.isdigit() else device
    blocks = file_blocks(input_file, realtime=not fast) if input_file else device_blocks(dev)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())  # systemctl stop: the stream ends with its last part
    name = title or time.strftime("live %Y-%m-%d %H:%M UTC", time.gmtime())
    parts = capture(encoder, _outbox(cfg), parts_in_background(blocks, cutter, stop), edges, prio, name)
    print(f"capturing {'from ' + str(input_file) if input_file else 'the input'} for {_names(edges)} "
          f"({prio.name.lower()}): "
          f"parts of at most {chunk:g} s, cut at pauses; Ctrl-C ends the stream", flush=True)
    while True:
        try:
            q = next(parts, None)
        except KeyboardInterrupt:
            if stop.is_set():
                raise
            stop.set()
            print("ending the stream (Ctrl-C again stops at once)", flush=True)
            continue
        if q is None:
            break
        p = q.part
        lag = time.time() - p.heard_at
        print(f"part {p.seq}{' (last)' if p.last else ''}: {p.start:.1f}-{p.start + p.duration:.1f} s, "
              f"{q.words} words, {q.bytes} bytes, entry {q.entry}; queued {lag:.1f} s after it was heard", flush=True)


@ground_app.command("web")
def ground_web(
    config: Path = Config,
    listen: str = typer.Option(None, "--listen", help="HOST:PORT (default: [web] listen, 127.0.0.1:8751)"),
) -> None:
    """Serve the ground's console alone (the daemon serves it too with [web] enabled = true)."""
    from ground.web.app import create_app
    from relay.web.server import serve_alone

    cfg = _config(config)
    serve_alone(cfg.web, listen, lambda: create_app(cfg), "ground console")


def register(app: typer.Typer) -> None:
    ground_app.add_typer(speakers_app, name="speakers")
    ground_app.add_typer(queue_app, name="queue")
    ground_app.add_typer(keys_app, name="keys", help="The ground's Ed25519 signing key.")
    app.add_typer(ground_app, name="ground")

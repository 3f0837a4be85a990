"""The ``relay`` command, grouped by where each part runs.

``relay ground …`` (run, encode, speakers, queue, status, keys) and ``relay
edge …`` (run, decode, voices, ls, play, replay, keys) come from the
``ground`` and ``edge`` packages, and ``relay bench`` from ``bench``, through
the ``speech_relay.commands`` entry point group, so ``relay`` never imports
them and a machine with only one side installed gets only that side's
commands. The core itself offers what needs only the bundle format and the
link: ``inspect``, ``link-sim`` and ``broker-check``, and the ``keys``
commands both sides use.

Errors a user can cause print one line, ``error: …``, and exit 1; usage
mistakes exit 2 (click's convention).
"""

from __future__ import annotations

import json
import sqlite3
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, TypeVar

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from relay.errors import RelayError, UsageError
from relay.fileio import read_bytes
from relay.format.wire import decode_bundle, field_costs, version_of


def ordered(*order: str) -> type[TyperGroup]:
    """A command group that lists its commands in ``order`` (the order an
    operator meets them), not alphabetically or as plugins happened to load."""

    class Ordered(TyperGroup):
        def list_commands(self, ctx: Any) -> list[str]:  # a click Context (typer vendors its own)
            names = super().list_commands(ctx)
            return sorted(names, key=lambda n: order.index(n) if n in order else len(order))

    return Ordered


app = typer.Typer(rich_markup_mode=None,
    name="relay",
    help="speech-relay: speech to a few hundred bytes and back, over thin links.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=ordered("ground", "edge", "inspect", "bench", "web", "link-sim", "broker-check"),
)
def plain_console(**options: Any) -> Console:
    """A console that prints what it is given: titles, transcripts and names are
    the content of bundles anyone may have made, so ``[/`` or ``:x:`` in them is
    text, never rich markup or an emoji code (styles come as ``Text`` objects)."""
    if "width" not in options and not (sys.stderr if options.get("stderr") else sys.stdout).isatty():
        options["width"] = PIPE_WIDTH  # a pipe or a file gets whole tables, not headers cut to 80 columns
    return Console(markup=False, highlight=False, emoji=False, **options)


PIPE_WIDTH = 200
console = plain_console()


M = TypeVar("M", bound=BaseModel)


def with_flags(settings: M, section: str, /, **flags: object) -> M:
    """``settings`` with command-line flags applied to ``section`` (None: not given), each
    checked exactly as the configuration's key; a bad value is a usage error (exit 2)."""
    from relay.config import ConfigError, override

    try:
        return override(settings, section, **flags)
    except ConfigError as e:
        raise typer.BadParameter(str(e)) from None


keys_app = typer.Typer(help="Ed25519 signing keys: the ground's and each edge's.", no_args_is_help=True)


@keys_app.command("init")
def keys_init(
    key: Path = typer.Argument(..., help="where to write the private key (PEM, mode 0600)"),
) -> None:
    """Create this station's signing key; prints its public key for the other end."""
    from relay.link.signing import SigningKey, SigningKeyError

    if key.exists():
        raise SigningKeyError(f"{key}: already exists; not overwriting a signing key")
    try:
        key.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SigningKeyError(f"{key.parent}: cannot create the folder ({e.strerror})") from None
    k = SigningKey.generate()
    k.save(key)
    pub = key.with_suffix(".pub")
    try:
        pub.write_text(k.public.text() + "\n")
    except OSError as e:
        raise SigningKeyError(f"{pub}: cannot write the public key ({e.strerror})") from None
    print(f"{key}: new signing key. Its public key, also in {pub}, goes to the other end "
          "(a ground's into each edge's trusted_keys; an edge's into the ground's [edges.<name>] key):")
    print(k.public.text())


@keys_app.command("show")
def keys_show(key: Path = typer.Argument(..., help="the private key file")) -> None:
    """Print the public key of a signing key."""
    from relay.link.signing import SigningKey

    print(SigningKey.load(key).public.text())


web_app = typer.Typer(help="The station consoles' login (relay ground web, relay edge web serve them).",
                      no_args_is_help=True)
app.add_typer(web_app, name="web")


@web_app.command("password")
def web_password(
    stdin: bool = typer.Option(False, "--stdin", help="read the password from standard input (one line) and print "
                               "the hash alone, for a script"),
) -> None:
    """Hash a console password for [web] password_hash (asked twice, not echoed; prints the TOML line)."""
    from relay.web.auth import PasswordHashError, hash_password

    if stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("console password", hide_input=True, confirmation_prompt=True)
    try:
        hashed = hash_password(password)
    except PasswordHashError as exc:
        raise RelayError(str(exc)) from None
    if stdin:  # a script: `hash=$(echo "$pw" | relay web password --stdin)`
        print(hashed)
        return
    print("# in ground.toml or edge.toml:\n[web]")
    print(f'password_hash = "{hashed}"')


@app.command()
def inspect(
    bundle: Path = typer.Argument(..., help="bundle file"),
    as_json: bool = typer.Option(False, "--json", help="print the decoded bundle as JSON"),
) -> None:
    """Show a bundle: speakers, segments, bytes per field, bits per second."""
    from relay.format.limits import DEFAULT_LIMITS

    data = read_bytes(bundle, "bundle", DEFAULT_LIMITS.max_bundle_bytes)
    decoded = decode_bundle(data, str(bundle))
    if as_json:
        out = decoded.to_dict()
        out["bytes"] = len(data)
        print(json.dumps(out, indent=2, ensure_ascii=False))
        return
    duration = decoded.source.duration
    created = datetime.fromtimestamp(decoded.created, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    console.print(Text.assemble((str(bundle), "bold"), f"  id {decoded.id_hex}  created {created}"))
    console.print(
        f"title {decoded.source.title!r}  language {decoded.source.language}  "
        f"duration {duration:.2f} s  {len(decoded.speakers)} speaker(s)  {len(decoded.segments)} segment(s)"
    )
    if any(s.profile_id for s in decoded.speakers):
        fitted = any(s.profile is not None and s.profile.fitted for s in decoded.speakers)
        columns = ["speaker", "profile", "sent as", "pitch", "range", "rate"] + (["fitted voice"] if fitted else [])
        speakers = Table(*columns, box=None, header_style="bold")
        for spk in decoded.speakers:
            p = spk.profile
            row = [
                spk.label,
                spk.profile_id.hex() or "-",
                spk.profile_state,
                f"{p.f0_median:.0f} Hz" if p else "",
                f"{p.f0_range:.1f} st" if p else "",
                f"{p.rate:.0f} wpm" if p else "",
            ]
            speakers.add_row(*row, *([p.fitted.describe() if p and p.fitted else ""] if fitted else []))
        console.print(speakers)
    segs = Table("start", "end", "speaker", "text", box=None, header_style="bold")
    for seg in decoded.segments:
        segs.add_row(f"{seg.start:7.2f}", f"{seg.end:7.2f}", decoded.speakers[seg.speaker].label, seg.text)
    console.print(segs)
    if decoded.clips:
        clips = Table("start", "end", "speaker", "audio", "bytes", "why", box=None, header_style="bold")
        for c in decoded.clips:
            who = decoded.speakers[c.speaker].label if c.speaker is not None else "(not speech)"
            clips.add_row(f"{c.start:7.2f}", f"{c.end:7.2f}", who, c.codec, str(len(c.data)), c.reason)
        console.print(clips)
    version = version_of(data)
    costs = field_costs(decoded, version)
    total = len(data)
    sizes = Table("field", "bytes", "share", box=None, header_style="bold")
    for name, size in costs.items():
        sizes.add_row(name, f"{size:.1f}" if version == 2 else f"{size:.0f}", f"{size / total:.0%}")
    sizes.add_row(Text("total", "bold"), Text(str(total), "bold"), "")
    console.print(sizes)
    n_words = sum(len(seg.text.split()) for seg in decoded.segments)
    if n_words:
        console.print(f"format v{version}: text {costs.get('text', 0) * 8 / n_words:.1f} bits a word, "
                      f"timings {costs.get('timings', 0) * 8 / n_words:.1f} bits a word ({n_words} words)")
    if "profiles" in costs:
        full = sum(1 for s in decoded.speakers if s.profile)
        refs = sum(1 for s in decoded.speakers if s.profile_id and not s.profile)
        console.print(f"voice profiles: {costs['profiles']:.1f} bytes ({full} sent in full, {refs} by reference)")
    if duration:
        console.print(f"{total * 8 / duration:.1f} bits per second over {duration:.2f} s of audio")


@app.command("link-sim")
def link_sim(
    to: str = typer.Option("127.0.0.1:1883", "--to", help="the broker, HOST:PORT"),
    listen: int = typer.Option(1884, "--listen", min=1, max=65535, help="port to listen on (127.0.0.1)"),
    rate: float = typer.Option(300.0, "--rate", min=0, max=1e9, help="bytes per second each way (0: unthrottled)"),
    latency: float = typer.Option(0.6, "--latency", min=0, max=3600, help="one-way delay in seconds"),
    outage_every: float = typer.Option(0.0, "--outage-every", min=0, max=1e6,
                                       help="mean seconds between random cuts (0: none)"),
    outage: float = typer.Option(30.0, "--outage", min=0, max=1e6, help="seconds each cut lasts"),
) -> None:
    """Simulate a thin link on loopback: point a daemon's broker.port here."""
    import asyncio

    from relay.link.linksim import LinkSim

    host, _, port = to.rpartition(":")
    if not host or not port.isdigit():
        raise RelayError(f"--to {to!r}: expected HOST:PORT")

    async def serve() -> None:
        outages = (outage_every, outage) if outage_every > 0 else None
        async with LinkSim(int(port), host, rate, latency, listen, outages=outages) as sim:
            console.print(f"link 127.0.0.1:{sim.port} -> {to}: {rate:g} B/s each way, {latency:g} s delay"
                          + (f", a {outage:g} s cut every ~{outage_every:g} s" if outages else ""))
            while True:
                await asyncio.sleep(10)
                st = sim.stats
                console.print(f"{'up  ' if sim.is_up else 'DOWN'} sent {st.up} B up, {st.down} B down, "
                              f"{st.connections} connection(s), {st.cuts} cut(s)")

    try:
        asyncio.run(serve())
    except OSError as e:
        raise RelayError(f"link-sim: cannot listen on 127.0.0.1:{listen} ({e.strerror})") from None


@app.command("broker-check")
def broker_check(
    broker: str = typer.Argument("127.0.0.1:1883", help="the broker, HOST:PORT"),
    timeout: float = typer.Option(20.0, "--timeout", min=0.1, max=3600, help="seconds to wait for its answer"),
) -> None:
    """Is the broker answering? Exit 0 if it answers an MQTT CONNECT in time, 1 if
    not (the watchdog, systemd/relay-broker-watchdog.*, then restarts it)."""
    from relay.link.mqtt import probe

    host, _, port = broker.rpartition(":")
    if not host or not port.isdigit():
        raise typer.BadParameter(f"{broker!r}: expected HOST:PORT", param_hint="BROKER")
    took = probe(host, int(port), timeout)
    if took is None:
        raise RelayError(f"broker {broker} did not answer an MQTT CONNECT within {timeout:g} s")
    print(f"broker {broker} answered in {took * 1000:.0f} ms")


def _load_plugins() -> None:
    for ep in entry_points(group="speech_relay.commands"):
        try:
            ep.load()(app)
        except ImportError as exc:  # that side is not installed here: its commands are absent
            print(f"note: '{ep.name}' commands unavailable ({exc})", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return the exit status; usage errors are typer's (exit 2)."""
    _load_plugins()
    try:
        app(args=argv, prog_name="relay")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except RelayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 1
    except (sqlite3.Error, OSError) as exc:  # a full disk, a read-only or vanished folder: the user's to fix
        from relay.storage import describe, is_full

        what = "disk full: " if is_full(exc) else ""
        print(f"error: {what}{describe(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()


@contextmanager
def stage_bars(console: Console) -> Iterator[Callable[[str, float, float], None]]:
    """A progress bar per stage of a long job: yields ``progress(stage, done, total)``
    (the ground Encoder's callback). Bars vanish when done (``transient``)."""
    from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
               TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bars:
        tasks: dict[str, TaskID] = {}

        def progress(stage: str, done: float, total: float) -> None:
            if stage not in tasks:
                tasks[stage] = bars.add_task(stage, total=total)
            bars.update(tasks[stage], completed=done, total=total)

        yield progress

"""Operator commands on the ground: the daemon, its queue, its status.

``relay queue ...`` and ``relay status`` work on the daemon's SQLite queue
directly (WAL lets them run beside it); the daemon notices new entries
within a second or two. What goes into the queue is checked first, as an
edge would check it: audio must decode, a bundle must decode within the
configured limits, the edge must be one the ground serves.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console(stderr=True, soft_wrap=True)
queue_app = typer.Typer(help="The ground's queue of bundles to send.", no_args_is_help=True)
ground_app = typer.Typer(help="The ground daemon.", no_args_is_help=True)
CONFIG_HELP = "ground configuration (default: $SPEECH_RELAY_GROUND_CONFIG or /etc/speech-relay/ground.toml)"


def _config(path: Path | None):
    from relay.config import load_ground

    return load_ground(path or os.environ.get("SPEECH_RELAY_GROUND_CONFIG", "/etc/speech-relay/ground.toml"))


def _outbox(path: Path | None):
    from relay.link.outbox import Outbox

    cfg = _config(path)
    return Outbox(cfg.ground.state_dir / "queue.db", cfg.limits)


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
def ground_run(config: Path = typer.Option(None, "--config", "-c", help=CONFIG_HELP)) -> None:
    """Run the ground daemon (spool, encoder, sender) until stopped."""
    from ground.daemon import GroundDaemon
    from relay.link.service import serve

    serve(GroundDaemon(_config(config)))


@queue_app.command("add")
def queue_add(
    file: Path = typer.Argument(..., help="audio to encode, or an encoded .bundle"),
    priority: str = typer.Option("normal", "--priority", "-p", help="flash, priority, normal or bulk"),
    to: str = typer.Option(None, "--to", help="edge name (default: the configuration's default_edge)"),
    title: str = typer.Option(None, "--title", help="title (default: the file name)"),
    config: Path = typer.Option(None, "--config", "-c", help=CONFIG_HELP),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Queue a file for an edge (checked first: audio must decode, a bundle must be one an edge accepts)."""
    from relay.audio.io import probe_audio
    from relay.errors import RelayError
    from relay.fileio import read_bytes
    from relay.link.messages import Priority
    from relay.link.outbox import Outbox

    cfg = _config(config)
    edge = to or cfg.ground.default_edge
    if not edge:
        raise typer.BadParameter("no --to and no default_edge in the configuration", param_hint="--to")
    if edge not in cfg.edges:
        known = ", ".join(sorted(cfg.edges)) or "none"
        raise RelayError(f"--to {edge}: not an edge this ground serves (configured: {known})")
    prio = Priority.parse(priority)
    if file.suffix == ".bundle":
        data = read_bytes(file, "bundle")
        outbox = Outbox(cfg.ground.state_dir / "queue.db", cfg.limits)
        row = outbox.add_bundle(data, edge, prio, title or "", str(file.resolve()))
    else:
        probe_audio(file)
        outbox = Outbox(cfg.ground.state_dir / "queue.db", cfg.limits)
        row = outbox.add_audio(file, edge, prio, title or "")
    item = outbox.get(row)
    if as_json:
        print(json.dumps(item.to_dict()))
    else:
        print(f"queued entry {row}: {item.title} -> {edge} ({prio.name.lower()}, {item.state})")


@queue_app.command("ls")
def queue_ls(
    all_: bool = typer.Option(False, "--all", "-a", help="include acknowledged, failed and cancelled entries"),
    config: Path = typer.Option(None, "--config", "-c", help=CONFIG_HELP),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List the queue, most urgent first."""
    from relay.link.outbox import ACTIVE

    items = _outbox(config).items(None if all_ else ACTIVE)
    if as_json:
        print(json.dumps([i.to_dict() for i in items], indent=2))
        return
    table = Table("id", "edge", "priority", "state", "title", "bytes", "progress", "played", "age", box=None,
                  header_style="bold")
    for i in items:
        progress = ""
        if i.count and i.state == "sending":
            progress = f"{i.count - i.pending}/{i.count} fragments" + (f", {i.polls} poll(s)" if i.polls else "")
        elif i.state == "delivered":
            progress = f"delivered {_age(i.delivered)} ago"
        if i.reason and i.state in ("failed", "cancelled"):
            progress = i.reason
        played = ""
        if i.play_state is not None:
            played = f"{i.play_state} {_age(i.played)} ago" + (f": {i.play_reason}" if i.play_reason else "")
        elif i.state == "delivered":
            played = "not yet"
        table.add_row(str(i.id), i.edge, i.priority.name.lower(), str(i.state), i.title,
                      str(i.bundle_size or ""), progress, played, _age(i.created))
    Console().print(table)
    if not items:
        print("queue empty" + ("" if all_ else " (--all shows finished entries)"))


@queue_app.command("cancel")
def queue_cancel(
    entry: int = typer.Argument(..., help="entry id from relay queue ls"),
    config: Path = typer.Option(None, "--config", "-c", help=CONFIG_HELP),
) -> None:
    """Stop sending an entry (fragments already sent stay sent)."""
    item = _outbox(config).cancel(entry)
    print(f"entry {item.id} ({item.title}) cancelled")


@queue_app.command("bump")
def queue_bump(
    entry: int = typer.Argument(..., help="entry id from relay queue ls"),
    priority: str = typer.Option(None, "--priority", "-p", help="also move it to this priority"),
    config: Path = typer.Option(None, "--config", "-c", help=CONFIG_HELP),
) -> None:
    """Move an entry to the front of its priority (or of another)."""
    from relay.link.messages import Priority

    item = _outbox(config).bump(entry, Priority.parse(priority) if priority else None)
    print(f"entry {item.id} ({item.title}) is now first among {item.priority.name.lower()}")


def status(
    config: Path = typer.Option(None, "--config", "-c", help=CONFIG_HELP),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Per edge: backlog, delivered and played, bytes sent, current rate and the backlog's ETA."""
    from relay.link.budget import eta

    cfg = _config(config)
    from relay.link.outbox import Outbox

    outbox = Outbox(cfg.ground.state_dir / "queue.db", cfg.limits)
    edges = sorted(set(outbox.edges()) | set(cfg.edges))
    rows = []
    for edge in edges:
        n, backlog = outbox.backlog(edge)
        rate = outbox.rate(edge)
        budget_rate = cfg.link.rate or rate
        rows.append({"edge": edge, "backlog_entries": n, "backlog_bytes": backlog,
                     "rate_bytes_per_s": round(rate, 2), "budget_bytes_per_s": cfg.link.rate or None,
                     "eta_s": eta(backlog, budget_rate, cfg.link.parsed_windows(), datetime.now(UTC)) if n else 0,
                     **outbox.totals(edge)})
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("edge", "backlog", "delivered", "played", "quarantined", "failed", "link bytes sent", "rate", "ETA",
                  box=None, header_style="bold")
    for r in rows:
        table.add_row(r["edge"], f"{r['backlog_entries']} ({r['backlog_bytes']} B)", str(r["delivered"]),
                      str(r["played"]), str(r["quarantined"]), str(r["failed"]), str(r["link_bytes_sent"]),
                      f"{r['rate_bytes_per_s']:.1f} B/s", _duration(r["eta_s"]))
    Console().print(table)
    if not rows:
        print("no edges yet")


def register(app: typer.Typer) -> None:
    app.add_typer(queue_app, name="queue")
    app.add_typer(ground_app, name="ground")
    app.command("status")(status)

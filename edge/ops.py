"""Operator commands on the edge: the daemon and what it has received."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

edge_app = typer.Typer(help="The edge daemon and the bundles it received.", no_args_is_help=True)
CONFIG_HELP = "edge configuration (default: $SPEECH_RELAY_EDGE_CONFIG or /etc/speech-relay/edge.toml)"


def _config(path: Path | None):
    from relay.config import load_edge

    return load_edge(path or os.environ.get("SPEECH_RELAY_EDGE_CONFIG", "/etc/speech-relay/edge.toml"))


def _inbox(cfg):
    from relay.link.inbox import Inbox
    from relay.link.signing import Keyring, VerifyKey

    keys = [VerifyKey.parse(k, f"edge.trusted_keys[{i}]") for i, k in enumerate(cfg.edge.trusted_keys)]
    return Inbox(cfg.edge.state_dir / "inbox.db", cfg.edge.name, Keyring(keys), link=cfg.link, limits=cfg.limits)


@edge_app.command("run")
def edge_run(config: Path = typer.Option(None, "--config", "-c", help=CONFIG_HELP),
             no_play: bool = typer.Option(False, "--no-play", help="write WAV files instead of playing")) -> None:
    """Run the edge daemon (receive, verify, acknowledge, speak) until stopped."""
    from edge.daemon import EdgeDaemon
    from relay.link.service import serve

    cfg = _config(config)
    if no_play:
        cfg = cfg.model_copy(update={"edge": cfg.edge.model_copy(update={"play": False})})
    serve(EdgeDaemon(cfg))


@edge_app.command("ls")
def edge_ls(config: Path = typer.Option(None, "--config", "-c", help=CONFIG_HELP),
            as_json: bool = typer.Option(False, "--json")) -> None:
    """Bundles received (accepted, rejected or quarantined; played or waiting) and those still arriving."""
    inbox = _inbox(_config(config))
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
    Console().print(table)
    if not stored and not partial:
        print("nothing received yet")


def _speak(config: Path | None, bundle: str, how: str, output: Path | None, again: bool) -> None:
    from edge.daemon import Speaker

    cfg = _config(config)
    if output is not None:
        cfg = cfg.model_copy(update={"edge": cfg.edge.model_copy(update={"play": False, "output_dir": output})})
    from relay.errors import RelayError
    from relay.link.inbox import InboxError

    inbox = _inbox(cfg)
    item = inbox.find(bundle)
    if item.state == "rejected":
        raise InboxError(f"bundle {item.bundle_id.hex()} was rejected ({item.reason}); it is never played")
    if item.played and not again:
        raise InboxError(f"bundle {item.bundle_id.hex()} was already played; relay edge replay plays it again")
    try:
        where = Speaker(cfg)(inbox.data(item.bundle_id), item.bundle_id, time.time() if again else item.received)
    except (RelayError, OSError):
        raise
    except Exception as e:  # what the bundle's content causes: one line, as the daemon's quarantine says
        raise InboxError(f"bundle {item.bundle_id.hex()} cannot be played ({e.__class__.__name__}: {e})") from None
    inbox.played(item.bundle_id, how, where)
    print(f"{item.bundle_id.hex()} ({item.title}) -> {where}")


@edge_app.command("play")
def edge_play(bundle: str = typer.Argument(..., help="bundle id (a unique prefix will do)"),
              output: Path = typer.Option(None, "-o", "--output", help="write a WAV into this folder instead"),
              config: Path = typer.Option(None, "--config", "-c", help=CONFIG_HELP)) -> None:
    """Play a received bundle that has not been played yet (now, from this shell)."""
    _speak(config, bundle, "play", output, again=False)


@edge_app.command("replay")
def edge_replay(bundle: str = typer.Argument(..., help="bundle id (a unique prefix will do)"),
                output: Path = typer.Option(None, "-o", "--output", help="write a WAV into this folder instead"),
                config: Path = typer.Option(None, "--config", "-c", help=CONFIG_HELP)) -> None:
    """Play a received bundle again."""
    _speak(config, bundle, "replay", output, again=True)


def register(app: typer.Typer) -> None:
    app.add_typer(edge_app, name="edge")

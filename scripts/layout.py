#!/usr/bin/env python3
"""Write docs/layout.md: every module of the project, one line each (the first
sentence of its docstring), room by room, so the map cannot drift from the code.

    .venv/bin/python scripts/layout.py [--check]

``--check`` exits 1 if docs/layout.md is not what this would write (the tests run it).
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROOMS = [
    ("relay/format", "the bundle and its bytes"),
    ("relay/link", "the link protocol: what carries a bundle, and proves it arrived"),
    ("relay/audio", "audio both sides need"),
    ("relay/audio/codecs", "the codec tiers"),
    ("relay/voice", "the voices both sides speak with"),
    ("relay/voice/engines", "one TTS engine each"),
    ("relay/web", "what the two consoles share"),
    ("relay", "settings, storage and the `relay` command, shared by both sides"),
    ("relay/testing", "what the tests and benchmarks share"),
    ("ground", "the ground station"),
    ("ground/web", "the ground's console"),
    ("edge", "the edge station"),
    ("edge/web", "the edge's console"),
    ("bench", "`relay bench`"),
    ("benchmarks", "the scripts that print the figures in docs/results.md"),
    ("scripts", "setting up, the demo, the tests, and the files the project builds"),
]
HEAD = """# Layout: what each part does

The flow is ground → link → edge: the ground's `Encoder` (`ground/encoder.py`)
turns audio into a bundle, the link carries it, the edge's `Player`
(`edge/player.py`) speaks it. `relay/` is what both sides share and never
imports `ground/`, `edge/` or `bench/`; `ground`, `edge` and `bench` add their
commands to `relay` through the `speech_relay.commands` entry point, so a
machine with one side installed (`pip install .[edge]` on a Pi) gets only
that side's commands. Besides the code: `config/` (the daemons' documented
TOML files, mosquitto's configuration, ACL, TLS listener and bridge),
`systemd/` (the hardened units and the broker watchdog), `tests/` (pytest on
real audio with the real models), `docs/`, `requirements/` (the weight
packages, hash-pinned).

Written by `scripts/layout.py` from each module's docstring.
"""


def summary(path: Path) -> str:
    """The first sentence of a file's docstring (a script's comment header for shell)."""
    text = path.read_text()
    if path.suffix == ".sh":
        lines = [ln[1:].strip() for ln in text.splitlines()[1:] if ln.startswith("#")]
        doc = " ".join(lines[:3])
    else:
        doc = ast.get_docstring(ast.parse(text)) or ""
    doc = " ".join(doc.split())
    depth, end = 0, len(doc)
    for i, ch in enumerate(doc):  # the first sentence: up to ". ", ": " or "; " outside parentheses
        depth += (ch == "(") - (ch == ")")
        if depth == 0 and ch in ".:;" and (i + 1 == len(doc) or doc[i + 1] == " "):
            end = i
            break
    return doc[:end].replace("|", "\\|") or "(no docstring)"


def render() -> str:
    out = [HEAD]
    for room, what in ROOMS:
        folder = ROOT / room
        files = sorted(p for p in folder.iterdir() if p.suffix in (".py", ".sh") and p.name != "__init__.py")
        if not files:
            continue
        out.append(f"\n## `{room}/`: {what}\n\n| file | what it is |\n|---|---|")
        out += [f"| `{p.name}` | {summary(p)} |" for p in files]
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="fail if docs/layout.md is out of date")
    args = ap.parse_args()
    target = ROOT / "docs" / "layout.md"
    text = render()
    if args.check:
        if not target.exists() or target.read_text() != text:
            print("docs/layout.md is out of date: run scripts/layout.py", file=sys.stderr)
            return 1
        return 0
    target.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""What decoding a format v2 bundle costs, worst case first.

Every text token costs the reader one step of Whisper tiny.en's decoder
(integer arithmetic), so what a bundle costs to read is how many tokens it
makes the reader decode. Measured here, each in this process on this
machine's cores, CPU seconds by ``time.process_time`` (the BLAS threads
included) and wall seconds:

* hostile streams: zeros after a valid header (the decoder used to read
  zeros past the end: 25 CPU-s for 30 bytes), random bytes after a valid
  start;
* the densest valid text: one word said over and over, which the model
  predicts so well that a token costs a fraction of a bit (the fixtures in
  tests/data, and ``--make`` more);
* ordinary speech: the 16 LJSpeech transcripts joined (when ../shared is here);
* the bounds: tokens a bundle of N bytes may hold (relay.format.v2), and the
  CPU budget ``[limits]`` gives it.

    .venv/bin/python benchmarks/decode_cost.py [--json out/bench/decode_cost.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.table import Table  # noqa: E402

from relay.cli import plain_console  # noqa: E402
from relay.errors import BundleError  # noqa: E402
from relay.format import v2  # noqa: E402
from relay.format.limits import DEFAULT_LIMITS, DecodeBudget  # noqa: E402
from relay.format.wire import decode_bundle  # noqa: E402

console = plain_console()


class Counting(DecodeBudget):
    steps = 0

    def check(self) -> None:
        self.steps += 1
        super().check()


def measure(name: str, data: bytes) -> dict:
    budget = Counting(10**6)
    cpu, wall = time.process_time(), time.perf_counter()
    try:
        decode_bundle(data, budget=budget)
        outcome = "decoded"
    except BundleError as exc:
        outcome = f"refused ({exc.reason})"
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {"what": name, "bytes": len(data), "tokens": budget.steps, "cpu_s": round(cpu, 2),
            "wall_s": round(wall, 2), "cpu_s_per_byte": round(cpu / len(data), 3),
            "tokens_per_byte": round(budget.steps / len(data), 1), "outcome": outcome}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, default=ROOT / "out" / "bench" / "decode_cost.json")
    args = ap.parse_args()
    from relay.format.textmodel import text_model
    from relay.testing.bundles import garbage_text

    text_model()
    head = v2.MAGIC + os.urandom(8) + bytes(4)
    rows = [measure(f"zeros, {n} bytes", head + bytes(n)) for n in (30, 78, 300, 1000)]
    rows += [measure(f"random bytes after a valid start, {n} bytes", garbage_text(n, seed=n)) for n in (100, 1000)]
    for fixture in ("la-1500", "thanks-10000"):
        data = (ROOT / "tests" / "data" / f"{fixture}.bundle").read_bytes()
        rows.append(measure(f"valid, dense: {fixture}", data))
    shared = ROOT.parent / "shared" / "data" / "ljspeech" / "transcripts.psv"
    if shared.exists():
        from relay.format.bundle import Bundle, Segment, SourceInfo, Speaker
        from relay.format.wire import encode_bundle

        text = " ".join(line.split("|", 1)[1] for line in shared.read_text().splitlines() if "|" in line)
        speech = encode_bundle(Bundle(SourceInfo("", 120.0, "en"), [Speaker("S1")], [Segment(0, 0.0, 120.0, text)]))
        rows.append(measure("ordinary speech: 16 LJSpeech sentences", speech))
    per_token = max(r["cpu_s"] / r["tokens"] for r in rows if r["tokens"] > 100)
    table = Table("stream", "bytes", "tokens", "tokens/byte", "CPU s", "wall s", "CPU s/byte", "outcome",
                  box=None, header_style="bold")
    for r in rows:
        table.add_row(r["what"], str(r["bytes"]), str(r["tokens"]), f"{r['tokens_per_byte']:g}", f"{r['cpu_s']:g}",
                      f"{r['wall_s']:g}", f"{r['cpu_s_per_byte']:g}", r["outcome"])
    console.print(table)
    bounds = []
    for size in (50, 300, 1000, 10_000):
        tokens = v2.TOKENS_BASE + v2.TOKENS_PER_BYTE * (size - v2.HEADER_SIZE)
        bounds.append({"bytes": size, "max_tokens": tokens, "cpu_s_at_most": round(tokens * per_token, 1),
                       "budget_cpu_s": DEFAULT_LIMITS.decode_seconds(size)})
    console.print(f"the dearest token measured: {per_token * 1000:.1f} ms of CPU; worst case per byte "
                  f"{v2.TOKENS_PER_BYTE * per_token:.2f} CPU-s ({v2.TOKENS_PER_BYTE} tokens a byte)")
    for b in bounds:
        console.print(f"a bundle of {b['bytes']} bytes: at most {b['max_tokens']} tokens, {b['cpu_s_at_most']} "
                      f"CPU-s here; budget {b['budget_cpu_s']:.0f} s")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"rows": rows, "cpu_s_per_token": per_token, "bounds": bounds}, indent=2))
    console.print(f"json: {args.json}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Attacks on the running daemons, each tried ``--tries`` times, with the outcome.

One mosquitto *without* the shipped ACL, as if the attacker held the ground's
broker password (with the ACL, a stranger cannot publish on an edge's topics
at all: tests/test_deployment.py), the ground and edge daemons as real
processes. Each attack is made, then a real flash bundle is sent; a try
counts as survived when both daemons are still up, the attack achieved
nothing (see each row), and the real bundle was delivered and played. The
flood row also gives how much later the real bundle arrived than without a
flood, and how much the edge's store grew.

    .venv/bin/python benchmarks/attacks.py [--tries 10] [--flood-seconds 10] [--json out/bench/attacks.json]

Timings are of this machine; tests assert behaviour, never speed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import msgpack  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from relay.format.bundle import AudioClip, Bundle, Segment, SourceInfo, Speaker, Word  # noqa: E402
from relay.format.wire import decode_bundle, encode_bundle  # noqa: E402
from relay.link.messages import Ack, AckState, Fragment, Priority  # noqa: E402
from relay.link.signing import SigningKey  # noqa: E402
from relay.link.transfer import OutgoingTransfer  # noqa: E402
from relay.testing.broker import LocalBroker  # noqa: E402
from relay.testing.bundles import real_bundle  # noqa: E402
from relay.testing.hostile import Hostile  # noqa: E402
from relay.testing.pair import Pair, publisher, wait_for  # noqa: E402

console = Console()


class Bench:
    def __init__(self, tmp: Path, broker: LocalBroker) -> None:
        self.pair = Pair(tmp, broker, ground_limits="[limits]\nmax_duration = 600000.0\n")
        self.raw = publisher(broker.port)
        self.n = 0
        self.rows: dict[str, dict] = {}

    def entry(self, title: str) -> dict:
        return next(e for e in self.pair.entries() if e["title"] == title)

    def real(self, title: str, priority: str = "flash") -> bytes:
        self.n += 1
        data = real_bundle(60, title, seed=self.n)
        self.pair.queue(data, f"{title}-{self.n}", priority)
        return decode_bundle(data).bundle_id

    def delivered_and_played(self, title: str, timeout: float = 120.0) -> float:
        """Seconds until the bundle was played (0 if it never was)."""
        t = time.monotonic()
        try:
            wait_for(lambda: self.entry(title)["play_state"] == "played", timeout, title)
        except AssertionError:
            return 0.0
        return time.monotonic() - t

    def up(self) -> bool:
        return self.pair.alive("ground") and self.pair.alive("edge")

    def record(self, name: str, ok: bool, note: str = "", **figures: float) -> None:
        row = self.rows.setdefault(name, {"tries": 0, "survived": 0, "notes": set(), "figures": {}})
        row["tries"] += 1
        row["survived"] += int(ok and self.up())
        if note:
            row["notes"].add(note)
        for k, v in figures.items():
            row["figures"].setdefault(k, []).append(v)

    def publish(self, topic: str, payload: bytes) -> None:
        self.raw.publish(topic, payload, qos=1).wait_for_publish(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tries", type=int, default=10)
    ap.add_argument("--flood-seconds", type=float, default=10.0)
    ap.add_argument("--flood-rate", type=float, default=2000.0, help="flood messages per second (the attempt)")
    ap.add_argument("--json", type=Path, default=ROOT / "out" / "bench" / "attacks.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="attacks-") as td, LocalBroker(Path(td) / "broker") as broker:
        b = Bench(Path(td), broker)
        p = b.pair
        p.start("edge")
        wait_for(lambda: "connected" in p.log("edge"), 60, "the edge")
        p.start("ground")
        base = []
        for i in range(3):
            b.real(f"baseline{i}")
            base.append(b.delivered_and_played(f"baseline{i}"))
        baseline = sorted(base)[1]
        stranger = SigningKey.generate()
        for t in range(args.tries):
            with console.status(f"try {t + 1} of {args.tries}"):
                # 1. "delivered!" from a stranger, for a bundle still in flight (the edge is away)
                p.procs["edge"].terminate()
                p.procs["edge"].wait(30)
                bid = b.real(f"forged{t}")
                for state in (AckState.ACCEPTED, AckState.PLAYED):
                    b.publish("relay/ship1/a", Ack(bid, state).pack(stranger, "ship1"))
                    b.publish("relay/ship1/a", Ack(bid, state).body())
                time.sleep(1.5)
                fooled = b.entry(f"forged{t}")["state"] == "delivered"
                p.start("edge")
                played = b.delivered_and_played(f"forged{t}")
                b.record("forged or unsigned 'delivered'/'played' acks", not fooled and played > 0,
                         "entry stays 'sending' until the edge's own signed ack")
                # 2. acks the edge really signed, but for a bundle this ground never sent, and a 2**40 profile id
                huge = msgpack.packb([2, os.urandom(8), 1, [], "", [2**40], 0])
                b.publish("relay/ship1/a", Ack(os.urandom(8), AckState.ACCEPTED).pack(p.edge_key, "ship1"))
                b.publish("relay/ship1/a", huge + p.edge_key.sign(b"speech-relay ack v2\0", b"ship1\0" + huge)[1])
                b.publish("relay/nobody/a", os.urandom(300))
                b.real(f"acks{t}")
                b.record("acks for unknown bundles, a 2**40 profile id, unknown edges", b.delivered_and_played(
                    f"acks{t}") > 0, "dropped with a log line; the ground goes on")
                # 3. forged parts for a transfer before its manifest: another count, a stranger's manifest,
                #    30 MiB; then the real transfer
                p.procs["ground"].terminate()
                p.procs["ground"].wait(30)
                data = real_bundle(200, f"inject{t}", seed=900 + t)
                real_id = decode_bundle(data).bundle_id
                forged = OutgoingTransfer.create(real_id, os.urandom(len(data)), "ship1", Priority.FLASH, 340,
                                                 stranger, 1, int(time.time()))
                for payload in (forged.fragment(0).pack(), Fragment(real_id, 1, 999, os.urandom(327)).pack(),
                                Fragment(real_id, 2, 8, os.urandom(327)).pack(),
                                Fragment(real_id, 3, 8, os.urandom(30 * 1024 * 1024)).pack()):
                    b.publish("relay/ship1/d", payload)
                p.queue(data, f"inject{t}", "flash")
                p.start("ground")
                b.record("forged manifest and parts, wrong count, 30 MiB part, before the real transfer",
                         b.delivered_and_played(f"inject{t}") > 0, "dropped before storing; the real one completes")
                # 4. a signed 55-hour bundle and one no codec can play, then a real one
                word = (Word("hello", 0.5, 0.9),)
                long = Bundle(SourceInfo(f"long{t}", 55 * 3600.0, "en"), [Speaker("S1")],
                              [Segment(0, 0.5, 0.9, "hello", word)])
                broken = Bundle(SourceInfo(f"broken{t}", 3.0, "en"), [Speaker("S1")], [],
                                [AudioClip(0.0, 2.0, "opus-6k", b"\x05not opus", 0)])
                p.queue(encode_bundle(long), f"long{t}", "flash")
                p.queue(encode_bundle(broken), f"broken{t}", "flash")
                b.real(f"after{t}", "priority")
                played = b.delivered_and_played(f"after{t}")
                wait_for(lambda tt=t: b.entry(f"broken{tt}")["play_state"] is not None, 60, "the report")
                ok = (b.entry(f"long{t}")["state"] == "failed" and b.entry(f"broken{t}")["play_state"] ==
                      "quarantined" and played > 0)
                b.record("signed 55-hour bundle; signed bundle that cannot play", ok,
                         "rejected over the limits / quarantined and reported; the next one plays")
        # 5. a flood on the edge's topic, with a real flash bundle in the middle of it
        db = p.tmp / "edge"
        before = sum(f.stat().st_size for f in db.glob("inbox.db*"))
        with Hostile(broker.port, None, None, ["relay/ship1/d"], [], rate=args.flood_rate, seed=5) as flood:
            time.sleep(args.flood_seconds / 2)
            b.real("flooded")
            t0 = time.monotonic()
            time.sleep(args.flood_seconds / 2)
        played = b.delivered_and_played("flooded", 300)
        delay = (time.monotonic() - t0) if played else 0.0
        grown = sum(f.stat().st_size for f in db.glob("inbox.db*")) - before
        b.record(f"{args.flood_seconds:.0f} s flood on the edge's topic", played > 0,
                 f"{flood.sent} messages ({flood.sent / args.flood_seconds:.0f}/s)", delay_s=delay,
                 store_growth_kb=grown / 1024)
        alive = b.up()
        edge_lines = len(p.log("edge").splitlines())
        p.stop()
    table = Table("attack", "tries", "survived", "outcome", box=None, header_style="bold")
    out = {"baseline_delivery_s": round(baseline, 2), "attacks": {}, "daemons_up_at_end": alive,
           "edge_log_lines": edge_lines}
    for name, row in b.rows.items():
        figures = {k: round(sum(v) / len(v), 2) for k, v in row["figures"].items()}
        note = "; ".join(sorted(row["notes"]))
        if figures:
            note += "; " + ", ".join(f"{k} {v}" for k, v in figures.items())
        table.add_row(name, str(row["tries"]), str(row["survived"]), note)
        out["attacks"][name] = {"tries": row["tries"], "survived": row["survived"], "notes": sorted(row["notes"]),
                                **figures}
    console.print(table)
    console.print(f"a flash bundle without attack: played {baseline:.1f} s after queueing (median of 3); "
                  f"daemons up at the end: {alive}; edge log {edge_lines} lines")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2))
    console.print(f"json: {args.json}")


if __name__ == "__main__":
    main()

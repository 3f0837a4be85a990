#!/usr/bin/env python3
"""Attacks on the running daemons, each tried ``--tries`` times, with the outcome.

One mosquitto *without* the shipped ACL, as if the attacker held the ground's
broker password (with the ACL, a stranger cannot publish on an edge's topics
at all: tests/test_deployment.py), the ground and edge daemons as real
processes. Each attack is made, then a real flash bundle is sent; a try
counts as survived when both daemons are still up, the attack achieved
nothing (see each row), and the real bundle was delivered and played. The
flood row also gives how much later the real bundle arrived than without a
flood, and how much the edge's store grew. Issue 24's rows: a genuine
"incomplete" ack replayed while a flash transfer is in flight (fragments
sent against parts), forged parts naming decided bundles (acks drawn up the
link), empty fragments with random ids (the edge's memory), manifests and
polls dated ten years ahead, a transfer replayed after the edge lost its
store, bundles that take minutes to decode at the edge and in the ground's
spool (a flash bundle's delay meanwhile), and the console under another
name (DNS rebinding).

    .venv/bin/python benchmarks/attacks.py [--tries 10] [--flood-seconds 10] [--json out/bench/attacks.json]

Timings are of this machine; tests assert behaviour, never speed.
"""

from __future__ import annotations

import argparse
import atexit
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
from relay.testing.broker import LocalBroker, free_port  # noqa: E402
from relay.testing.bundles import real_bundle  # noqa: E402
from relay.testing.hostile import Hostile  # noqa: E402
from relay.testing.pair import Pair, publisher, wait_for  # noqa: E402

console = Console()


DENSE = (ROOT / "tests" / "data" / "thanks-3000.bundle").read_bytes()  # 9,000 tokens in 216 bytes: ~100 s to decode


class Bench:
    def __init__(self, tmp: Path, broker: LocalBroker) -> None:
        self.spool = tmp / "spool"
        self.spool.mkdir()
        self.console_port = free_port()
        self.pair = Pair(tmp, broker, ground={
            "limits": {"max_duration": 600000.0}, "web": {"enabled": True, "listen": f"127.0.0.1:{self.console_port}"},
            "ground": {"spool_dir": str(self.spool), "spool_settle": 0.5}})
        self.raw = publisher(broker.port)
        self.heard: list[bytes] = []  # what the edge says up the link
        self.raw.on_message = lambda c, u, m: self.heard.append(bytes(m.payload))
        self.raw.subscribe("relay/ship1/a", 1)
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

    def dense(self) -> bytes:
        """The dense bundle under a new id (the id is in the plain header, outside the coded stream)."""
        return DENSE[:2] + os.urandom(8) + DENSE[10:]

    def edge_rss_mb(self) -> float:
        import psutil

        return psutil.Process(self.pair.procs["edge"].pid).memory_info().rss / 1e6


def acks(heard: list[bytes]) -> list[Ack]:
    """What was heard on the ack topic that parses as an ack (signatures not checked: ours are there too)."""
    out = []
    for h in heard:
        try:
            out.append(Ack.parse(h[:-64]))
        except Exception:  # noqa: BLE001 - anything else on the topic
            continue
    return out


def issue24(b: Bench, t: int, stranger: SigningKey) -> None:
    """One try of each of issue 24's attacks."""
    from relay.link.messages import Poll
    from relay.testing.web import call

    p = b.pair
    # 6. a genuine "incomplete" ack, captured, replayed every half second while a flash transfer is in flight
    data = real_bundle(600, f"replayed{t}", seed=2000 + t)
    rid = decode_bundle(data).bundle_id
    p.procs["ground"].terminate()
    p.procs["ground"].wait(30)
    probe = OutgoingTransfer.create(rid, data, "ship1", Priority.FLASH, 340, p.ground_key, 1, int(time.time()))
    b.heard.clear()
    b.publish("relay/ship1/d", probe.fragment(0).pack())
    b.publish("relay/ship1/d", probe.fragment(probe.count - 1).pack())  # the last part: the edge lists the holes
    wait_for(lambda: any(a.state == AckState.INCOMPLETE for a in acks(b.heard)), 60, "an incomplete ack")
    captured = next(h for h in b.heard if acks([h]) and acks([h])[0].state == AckState.INCOMPLETE)
    p.queue(data, f"replayed{t}", "flash")
    p.start("ground")
    t0 = time.monotonic()
    while time.monotonic() - t0 < 120 and b.entry(f"replayed{t}")["play_state"] != "played":
        b.publish("relay/ship1/a", captured)
        time.sleep(0.5)
    e = b.entry(f"replayed{t}")
    b.record("a genuine 'incomplete' ack replayed every 0.5 s during a flash transfer",
             e["play_state"] == "played" and e["fragments_sent"] <= 2 * e["fragments"],
             "ignored: older than the last ack applied, or about another transfer",
             fragments_sent=e["fragments_sent"], parts=e["fragments"])
    # 7. forged parts naming bundles already decided: no answer up the thin link
    b.heard.clear()
    for i in range(120):
        b.publish("relay/ship1/d", Fragment(rid, 1 + i % 3, 5, os.urandom(14)).pack())
    b.real(f"quiet{t}")
    played = b.delivered_and_played(f"quiet{t}")
    drawn = sum(1 for a in acks(b.heard) if a.bundle_id == rid)
    b.record("120 forged parts naming a decided bundle", played > 0 and drawn == 0,
             "dropped unanswered", acks_drawn=drawn)
    # 8. empty fragments with random ids: the reorder buffer is bounded in parts as well as bytes
    rss0 = b.edge_rss_mb()
    for _ in range(20_000):
        b.raw.publish("relay/ship1/d", bytes([0x20]) + os.urandom(8) + (1).to_bytes(2, "big") + (2).to_bytes(2, "big"))
    b.publish("relay/ship1/d", b"\x20")
    b.real(f"empty{t}")
    played = b.delivered_and_played(f"empty{t}")
    grown = b.edge_rss_mb() - rss0
    b.record("20,000 empty fragments with random ids", played > 0 and grown < 20, "held within buffer_parts",
             edge_rss_growth_mb=grown)
    # 9. a manifest and a poll dated ten years ahead, signed by the real ground
    ahead = int(time.time()) + 10 * 365 * 86400
    far = OutgoingTransfer.create(os.urandom(8), real_bundle(20, seed=t), "ship1", Priority.FLASH, 340, p.ground_key,
                                  7, ahead)
    for i in range(far.count):
        b.publish("relay/ship1/d", far.fragment(i).pack())
    b.publish("relay/ship1/d", Poll.create(rid, "ship1", p.ground_key, ahead, 1).pack())
    b.real(f"future{t}")
    played = b.delivered_and_played(f"future{t}")
    stored = p.relay("edge", "ls", "--json", "-c", str(p.edge_config)).stdout
    b.record("a manifest and a poll dated 10 years ahead", played > 0 and far.bundle_id.hex() not in stored,
             "refused (the manifest answered as signed in the future)")
    # 10. bundles that take minutes to decode, at the edge (raw, signed by the real ground) and in the
    #     ground's spool; a flash bundle meanwhile
    slow = b.dense()
    sid = slow[2:10]
    transfer = OutgoingTransfer.create(sid, slow, "ship1", Priority.BULK, 340, p.ground_key, 9, int(time.time()))
    for i in range(transfer.count):
        b.publish("relay/ship1/d", transfer.fragment(i).pack())
    (b.spool / f"dense{t}.bundle").write_bytes(b.dense())
    wait_for(lambda: f"bundle {sid.hex()} complete" in p.log("edge"), 120, "the edge decoding it")
    b.real(f"dense{t}")
    played = b.delivered_and_played(f"dense{t}", 300)
    b.record("bundles that take minutes to decode, at the edge and in the ground's spool", played > 0,
             "decoded beside the link; a flash bundle decoded beside them", flash_played_s=played)
    # 11. the console by another name (a page elsewhere pointing its own name at this console)
    port = b.console_port
    evil = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}
    pages = [call(f"http://127.0.0.1:{port}{path}", headers=evil).status for path in ("/", "/api/queue")]
    token = call(f"http://127.0.0.1:{port}/", headers=evil).body
    b.record("the ground's console reached under another name (DNS rebinding)",
             pages == [421, 421] and b"X-Relay-Token" not in token, "refused (421): Host not one of its names")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tries", type=int, default=10)
    ap.add_argument("--flood-seconds", type=float, default=10.0)
    ap.add_argument("--flood-rate", type=float, default=2000.0, help="flood messages per second (the attempt)")
    ap.add_argument("--json", type=Path, default=ROOT / "out" / "bench" / "attacks.json")
    ap.add_argument("--keep", type=Path, help="run in this folder and keep it (logs)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="attacks-") as td, \
            LocalBroker((args.keep or Path(td)) / "broker") as broker:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
        b = Bench(args.keep or Path(td), broker)
        atexit.register(b.pair.stop)  # a failed run leaves no daemon behind
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
                huge = msgpack.packb([3, os.urandom(8), 1, [], "", [2**40], 0, 1, 0, 1, 0])
                b.publish("relay/ship1/a", Ack(os.urandom(8), AckState.ACCEPTED).pack(p.edge_key, "ship1"))
                b.publish("relay/ship1/a", huge + p.edge_key.sign(b"speech-relay ack v3\0", b"ship1\0" + huge)[1])
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
                issue24(b, t, stranger)
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

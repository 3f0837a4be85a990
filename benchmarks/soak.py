#!/usr/bin/env python3
"""Soak: hundreds of bundles through the real deployment shape, with faults and an attacker.

The shape is :class:`relay.testing.deployment.Deployment`: a ground mosquitto
and a ship mosquitto with the shipped configuration (passwords, ACL), the
ship's broker bridged to the ground's TLS listener through the thin-link
simulator (``--rate`` bytes per second each way, ``--latency`` one way, and
random cuts), the ground and edge daemons as real processes. The bundles
are real transcripts (LJSpeech's words with speech-like timings), queued at
once with mixed priorities; the edge speaks each one (espeak-ng into WAV
files, which are counted and deleted as they come).

While they cross, unless ``--calm``: a hostile broker user on each broker
publishes garbage, forged parts, manifests, polls and acks at ``--attack-rate``
messages a second; every ``--fault-every`` seconds, in turn, the ground
daemon is killed with SIGKILL (and restarted two seconds later, as systemd
would), the edge daemon likewise, the ground's broker restarted, the ship's
broker restarted; the link is cut at random (``--outage-every``).

Reported: bundles delivered, stored and played exactly once (duplicates
counted), fragments resent and polls, latency from queueing to delivery and
to the play report per priority, the protocol's overhead (relay payloads,
and everything on the link including TLS and MQTT), faults done, attack
messages sent and what they achieved, peak RSS.

    .venv/bin/python benchmarks/soak.py [--bundles 300] [--rate 4000] [--json out/bench/soak.json]
                                        [--plot docs/figures/soak.png] [--calm]

Timings are of this machine; tests assert behaviour, never speed.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402
from rich.table import Table  # noqa: E402

from ground.queue import Outbox, State  # noqa: E402
from relay.link.messages import Priority  # noqa: E402
from relay.testing.bundles import real_bundle  # noqa: E402
from relay.testing.deployment import Deployment  # noqa: E402
from relay.testing.hostile import Hostile  # noqa: E402

console = Console()
MIX = [Priority.FLASH] * 5 + [Priority.PRIORITY] * 15 + [Priority.NORMAL] * 50 + [Priority.BULK] * 30


def peak_rss_mb(pid: int | None) -> float:
    """VmHWM of a live process (ru_maxrss would carry across exec)."""
    if pid is None:
        return 0.0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def plot(entries: list, start: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    for prio in Priority:
        times = sorted(e.delivered - start for e in entries if e.priority == prio and e.delivered)
        if times:
            ax.step(times, range(1, len(times) + 1), where="post", label=f"{prio.name.lower()} ({len(times)})")
    ax.set_xlabel("seconds since the daemons started")
    ax.set_ylabel("bundles delivered")
    ax.set_title("Soak: bridged brokers, faults and an attacker, by priority")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundles", type=int, default=300)
    ap.add_argument("--words", type=int, nargs=2, default=(40, 250), help="words per bundle, min and max")
    ap.add_argument("--fragment-size", type=int, default=340)
    ap.add_argument("--rate", type=float, default=4000.0, help="link bytes per second each way")
    ap.add_argument("--latency", type=float, default=0.3, help="one-way delay, seconds")
    ap.add_argument("--budget", type=float, default=0.85, help="ground's rate as a share of the link's")
    ap.add_argument("--fault-every", type=float, default=30.0, help="seconds between daemon kills / broker restarts")
    ap.add_argument("--outage-every", type=float, default=60.0, help="mean seconds between link cuts")
    ap.add_argument("--outage", type=float, default=5.0, help="seconds a cut lasts")
    ap.add_argument("--attack-rate", type=float, default=50.0, help="attack messages per second per broker")
    ap.add_argument("--calm", action="store_true", help="no faults, no attacker: the protocol's own overhead")
    ap.add_argument("--json", type=Path, default=ROOT / "out" / "bench" / "soak.json")
    ap.add_argument("--plot", type=Path)
    ap.add_argument("--keep", type=Path, help="run in this folder and keep it (logs)")
    args = ap.parse_args()

    rng = random.Random(7)
    with tempfile.TemporaryDirectory(prefix="soak-") as td:
        tmp = args.keep or Path(td)
        tmp.mkdir(parents=True, exist_ok=True)
        d = Deployment(tmp, link_rate=args.rate, latency=args.latency, ground_rate=args.rate * args.budget,
                       fragment_size=args.fragment_size, ack_timeout=20.0, max_poll_interval=60.0,
                       outages=None if args.calm else (args.outage_every, args.outage))
        with d:
            (tmp / "ground").mkdir(exist_ok=True)
            outbox = Outbox(tmp / "ground" / "queue.db")
            bundle_bytes = 0
            with console.status(f"queueing {args.bundles} bundles"):
                for i in range(args.bundles):
                    data = real_bundle(rng.randint(*args.words), f"soak{i}", seed=rng.randrange(10_000))
                    outbox.add_bundle(data, d.edge, rng.choice(MIX))
                    bundle_bytes += len(data)
            ids = [e.bundle_id for e in outbox.items()]
            targets = [f"relay/{d.edge}/d", f"relay/{d.edge}/a", "relay/mallory/a", "relay/ground/d"]
            attackers = [] if args.calm else [
                Hostile(d.ground_broker.port, "mallory", d.passwords["mallory"], targets, ids, args.attack_rate, 1),
                Hostile(d.ship_broker.port, "mallory", d.passwords["mallory"], targets, ids, args.attack_rate, 2)]
            for a in attackers:
                a.__enter__()
            d.start("edge")
            d.wait_for(lambda: b"connected" in (d.logs / "edge.log").read_bytes(), 60, "the edge to connect")
            d.start("ground")
            start = time.time()
            rss = {"ground": 0.0, "edge": 0.0, "ground broker": 0.0, "ship broker": 0.0}
            faults: list[tuple[float, str]] = []
            wavs: dict[str, int] = {}
            played_dir = tmp / "played"
            next_fault, turn = start + args.fault_every, 0
            try:
                with Progress(TextColumn("[bold]soak"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                              TextColumn("{task.fields[note]}"), console=console) as bar:
                    task = bar.add_task("played", total=args.bundles, note="")
                    while True:
                        items = outbox.items()
                        delivered = sum(1 for e in items if e.state == State.DELIVERED)
                        reported = sum(1 for e in items if e.play_state is not None)
                        for w in played_dir.glob("*.wav") if played_dir.exists() else []:
                            wavs[w.stem] = wavs.get(w.stem, 0) + 1
                            w.unlink()
                        bar.update(task, completed=reported, note=f"{delivered} delivered, {len(faults)} faults, "
                                                                  f"{d.link.stats.cuts} cuts")
                        for name in ("ground", "edge"):
                            rss[name] = max(rss[name], peak_rss_mb(d.procs[name].pid))
                            if not d.alive(name):
                                raise SystemExit(f"the {name} daemon stopped on its own; see {d.logs / name}.log")
                        rss["ground broker"] = max(rss["ground broker"], peak_rss_mb(d.ground_broker.pid))
                        rss["ship broker"] = max(rss["ship broker"], peak_rss_mb(d.ship_broker.pid))
                        if reported == args.bundles:
                            break
                        if not args.calm and time.time() >= next_fault and delivered < args.bundles:
                            what = ["kill -9 ground", "kill -9 edge", "restart ground broker",
                                    "restart ship broker"][turn % 4]
                            if what.startswith("kill"):
                                name = what.split()[-1]
                                d.kill(name)
                                time.sleep(2.0)  # systemd's RestartSec
                                d.start(name)
                            elif what == "restart ground broker":
                                d.restart_broker("ground")
                            else:
                                d.restart_broker("ship")
                            faults.append((time.time() - start, what))
                            turn += 1
                            next_fault = time.time() + args.fault_every
                        time.sleep(1.0)
                elapsed = time.time() - start
            finally:
                for a in attackers:
                    a.__exit__()
            stored = json.loads(d.relay("edge", "ls", "--json", "-c", str(d.edge_config)).stdout)["bundles"]
            for w in played_dir.glob("*.wav"):
                wavs[w.stem] = wavs.get(w.stem, 0) + 1
            entries = outbox.items()
            wire = d.link.stats
            edge_drops = (d.logs / "edge.log").read_text().count("dropped")
            ground_drops = (d.logs / "ground.log").read_text().count("dropped")
        payload_down = sum(e.sent_bytes for e in entries)
        fragments = sum(e.fragments_sent for e in entries)
        polls = sum(e.polls for e in entries)
        classes = {}
        for prio in Priority:
            sel = [e for e in entries if e.priority == prio]
            if sel:
                to_delivery = [e.delivered - e.created for e in sel if e.delivered]
                to_play = [e.played - e.created for e in sel if e.played]
                classes[prio.name.lower()] = {
                    "bundles": len(sel), "delivery_median_s": round(percentile(to_delivery, 0.5), 1),
                    "delivery_max_s": round(max(to_delivery), 1), "played_max_s": round(max(to_play), 1)}
        plays_per_bundle = [b["plays"] for b in stored]
        result = {
            "bundles": args.bundles, "fragment_size": args.fragment_size, "link_rate": args.rate,
            "latency_s": args.latency, "ground_rate": args.rate * args.budget, "bundle_bytes": bundle_bytes,
            "mean_bundle_bytes": round(bundle_bytes / args.bundles), "elapsed_s": round(elapsed, 1),
            "delivered": sum(1 for e in entries if e.state == State.DELIVERED),
            "failed": sum(1 for e in entries if e.state == State.FAILED),
            "stored_at_edge": len(stored), "played_once": sum(1 for p in plays_per_bundle if p == 1),
            "played_twice_or_more": sum(1 for p in plays_per_bundle if p > 1),
            "wav_files": len(wavs), "wav_duplicates": sum(n - 1 for n in wavs.values()),
            "reported_played": sum(1 for e in entries if e.play_state == "played"),
            "fragments": fragments, "resent_fragments": fragments - sum(e.count or 0 for e in entries),
            "polls": polls, "faults": [f"{t:.0f}s {w}" for t, w in faults], "link_cuts": wire.cuts,
            "daemon_starts": dict(d.starts), "broker_hangs_restarted": dict(d.broker_hangs),
            "attack_messages": sum(a.sent for a in attackers), "attacker_heard": sum(len(a.heard) for a in attackers),
            "dropped_log_lines": {"ground": ground_drops, "edge": edge_drops},
            "overhead_down": round(payload_down / bundle_bytes, 4),
            "overhead_wire": round((wire.down + wire.up) / bundle_bytes, 4),
            "wire_down_bytes": wire.down, "wire_up_bytes": wire.up, "priority_classes": classes,
            "peak_rss_mb": {k: round(v) for k, v in rss.items()},
        }
    table = Table("figure", "value", box=None, header_style="bold")
    table.add_row("bundles", f"{args.bundles} ({result['mean_bundle_bytes']} B mean, {bundle_bytes} B in all)")
    table.add_row("link", f"{args.rate:.0f} B/s each way, {args.latency} s delay, TLS bridge; ground budget "
                          f"{result['ground_rate']:.0f} B/s; {args.fragment_size} B fragments")
    table.add_row("delivered / stored / played once", f"{result['delivered']} / {result['stored_at_edge']} / "
                  f"{result['played_once']} (failed {result['failed']}, played twice {result['played_twice_or_more']},"
                  f" duplicate WAVs {result['wav_duplicates']})")
    table.add_row("play reports at the ground", str(result["reported_played"]))
    table.add_row("elapsed", f"{elapsed:.0f} s")
    table.add_row("faults", f"{len(faults)} ({', '.join(w for _, w in faults[:4])}...), {wire.cuts} link cuts; "
                            f"daemon starts {result['daemon_starts']}; hung brokers restarted by the watchdog "
                            f"{result['broker_hangs_restarted'] or 0}")
    table.add_row("attack", f"{result['attack_messages']} messages; heard {result['attacker_heard']}; "
                            f"log lines about drops: ground {ground_drops}, edge {edge_drops}")
    table.add_row("fragments", f"{fragments} ({result['resent_fragments']} resent), {polls} polls")
    table.add_row("overhead, relay payloads down", f"{result['overhead_down']:.3f} link B per bundle B")
    table.add_row("overhead, on the link (TLS, MQTT, both ways)", f"{result['overhead_wire']:.3f}")
    for name, c in classes.items():
        table.add_row(f"{name}: queued -> delivered", f"median {c['delivery_median_s']} s, max {c['delivery_max_s']} s;"
                      f" played by {c['played_max_s']} s ({c['bundles']} bundles)")
    table.add_row("peak RSS", ", ".join(f"{k} {v} MB" for k, v in result["peak_rss_mb"].items()))
    console.print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    console.print(f"json: {args.json}")
    if args.plot:
        plot(entries, start, args.plot)
        console.print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()

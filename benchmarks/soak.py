#!/usr/bin/env python3
"""Soak: a thousand queued bundles through a throttled link, end to end.

A private mosquitto (persistence on), the ground daemon on the broker's
side and the edge daemon behind the link simulator (:mod:`relay.linksim`:
``--rate`` bytes per second each way, ``--latency`` one way), both as real
``relay ... run`` processes with their SQLite queues. The bundles are real
transcripts (LJSpeech's words with speech-like timings, 100 to 1000 words:
40 s to 6 min of speech each), queued at once with mixed priorities. The
edge stores and acknowledges (``speak = false``): this measures the link,
not the TTS (benchmarks/rehydration.py does that).

Reported:

* throughput: bundle bytes per second from the daemons' start to the last
  acknowledgement, and the link's use (wire bytes down / rate x time);
* protocol overhead, link bytes per bundle byte: the relay's own payloads
  (fragments with their headers, signed envelopes, polls, acks) and on the
  wire (MQTT framing and its PUBACKs and pings included, counted by the
  link simulator in both directions);
* when each priority class was through (flash first);
* peak RSS of the ground, the edge and mosquitto (VmHWM).

    .venv/bin/python benchmarks/soak.py [--bundles 1000] [--fragment-size 340] [--rate 12000]
                                        [--json out/bench/soak.json] [--plot docs/figures/soak.png]

Timings are of this machine; tests assert behaviour, never speed.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402
from rich.table import Table  # noqa: E402

from relay.broker import LocalBroker  # noqa: E402
from relay.link import Ack, AckState, Priority  # noqa: E402
from relay.linksim import LinkSimThread  # noqa: E402
from relay.outbox import Outbox, State  # noqa: E402
from relay.signing import SigningKey  # noqa: E402

console = Console()
RELAY = str(Path(sys.executable).with_name("relay"))
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


def configs(tmp: Path, broker_port: int, edge_port: int, key: SigningKey, frag: int, rate: float) -> tuple[Path, Path]:
    key.save(tmp / "ground.key")
    ground, edge = tmp / "ground.toml", tmp / "edge.toml"
    ground.write_text(f"""
[ground]
name = "soak"
state_dir = "{tmp}/ground"
signing_key = "{tmp}/ground.key"
default_edge = "ship"
edges = ["ship"]
diarize = false
[broker]
host = "127.0.0.1"
port = {broker_port}
topic_prefix = "r"
[link]
fragment_size = {frag}
rate = {rate}
ack_timeout = 30
max_poll_interval = 120
""")
    edge.write_text(f"""
[edge]
name = "ship"
state_dir = "{tmp}/edge"
output_dir = "{tmp}/played"
speak = false
trusted_keys = ["{key.public.text()}"]
[broker]
host = "127.0.0.1"
port = {edge_port}
topic_prefix = "r"
""")
    return ground, edge


def plot(entries: list, start: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    for prio in Priority:
        times = sorted(e.acked - start for e in entries if e.priority == prio and e.acked)
        if times:
            ax.step(times, range(1, len(times) + 1), where="post", label=f"{prio.name.lower()} ({len(times)})")
    ax.set_xlabel("seconds since the daemons started")
    ax.set_ylabel("bundles acknowledged")
    ax.set_title("Soak: queued bundles through a throttled link, by priority")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundles", type=int, default=1000)
    ap.add_argument("--fragment-size", type=int, default=340)
    ap.add_argument("--rate", type=float, default=12000.0, help="link bytes per second each way")
    ap.add_argument("--latency", type=float, default=0.3, help="one-way delay, seconds")
    ap.add_argument("--budget", type=float, default=0.92, help="ground's rate as a share of the link's")
    ap.add_argument("--json", type=Path, default=ROOT / "out" / "bench" / "soak.json")
    ap.add_argument("--plot", type=Path)
    args = ap.parse_args()

    from relay.testing.bundles import real_bundle

    rng = random.Random(7)
    with tempfile.TemporaryDirectory(prefix="soak-") as td:
        tmp = Path(td)
        key = SigningKey.generate()
        with LocalBroker(tmp / "broker") as broker, \
                LinkSimThread(broker.port, rate=args.rate, latency=args.latency) as link:
            ground_cfg, edge_cfg = configs(tmp, broker.port, link.port, key, args.fragment_size,
                                           args.rate * args.budget)
            (tmp / "ground").mkdir()
            outbox = Outbox(tmp / "ground" / "queue.db")
            bundle_bytes = 0
            with console.status(f"queueing {args.bundles} bundles"):
                for i in range(args.bundles):
                    data = real_bundle(rng.randint(100, 1000), f"soak{i}", seed=rng.randrange(10_000))
                    outbox.add_bundle(data, "ship", rng.choice(MIX))
                    bundle_bytes += len(data)
            logs = tmp / "logs"
            logs.mkdir()
            procs = {}
            for name, cfg in (("edge", edge_cfg), ("ground", ground_cfg)):
                # the edge first: until it has subscribed once, the broker keeps nothing for it
                procs[name] = subprocess.Popen([RELAY, name, "run", "-c", str(cfg)], stdout=(logs / name).open("wb"),
                                               stderr=subprocess.STDOUT)
                if name == "edge":
                    end = time.time() + 60
                    while b"connected" not in (logs / name).read_bytes() and time.time() < end:
                        time.sleep(0.2)
            start = time.time()
            rss = {"ground": 0.0, "edge": 0.0, "mosquitto": 0.0}
            try:
                with Progress(TextColumn("[bold]soak"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                              TextColumn("{task.fields[rate]}"), console=console) as bar:
                    task = bar.add_task("acknowledged", total=args.bundles, rate="")
                    while True:
                        done = len(outbox.items([State.ACKNOWLEDGED]))
                        st = link.stats
                        bar.update(task, completed=done,
                                   rate=f"{st.down / max(time.time() - start, 1):.0f} B/s down")
                        for name, p in procs.items():
                            rss[name] = max(rss[name], peak_rss_mb(p.pid))
                            if p.poll() is not None:
                                raise SystemExit(f"the {name} daemon exited ({p.returncode}); see {logs / name}")
                        rss["mosquitto"] = max(rss["mosquitto"], peak_rss_mb(broker.pid))
                        if done == args.bundles:
                            break
                        time.sleep(2.0)
                elapsed = time.time() - start
            finally:
                for p in procs.values():
                    p.send_signal(signal.SIGTERM)
                    p.wait(30)
            entries = outbox.items()
            wire = link.stats
            payload_down = sum(e.sent_bytes for e in entries)
            fragments = sum(e.fragments_sent for e in entries)
            polls = sum(e.polls for e in entries)
            # the edge answers each bundle at least once (accepted); each poll and each
            # incomplete transfer gets one more answer, so count the accepted ones as a floor
            ack_bytes = len(Ack(bytes(8), AckState.ACCEPTED).pack()) * len(entries)
            by_size = {}  # downlink payload per bundle byte, by bundle size: what the fixed costs weigh
            for lo, hi in ((0, 1000), (1000, 2000), (2000, 3000), (3000, 10**9)):
                sel = [e for e in entries if lo <= (e.bundle_size or 0) < hi]
                if sel:
                    name = f"{lo // 1000}-{hi // 1000} KB" if hi < 10**9 else f">= {lo // 1000} KB"
                    by_size[name] = {"bundles": len(sel), "overhead_down": round(
                        sum(e.sent_bytes for e in sel) / sum(e.bundle_size for e in sel), 4)}
            classes = {}
            for prio in Priority:
                acked = [e.acked - start for e in entries if e.priority == prio and e.acked]
                if acked:
                    classes[prio.name.lower()] = {"bundles": len(acked), "all_through_s": round(max(acked), 1)}
    result = {
        "bundles": args.bundles, "fragment_size": args.fragment_size, "link_rate": args.rate,
        "latency_s": args.latency, "ground_rate": args.rate * args.budget, "bundle_bytes": bundle_bytes,
        "mean_bundle_bytes": round(bundle_bytes / args.bundles), "elapsed_s": round(elapsed, 1),
        "throughput_Bps": round(bundle_bytes / elapsed, 1),
        "bundles_per_min": round(args.bundles / elapsed * 60, 1),
        "link_use": round(wire.down / (args.rate * elapsed), 3),
        "fragments": fragments, "fragments_per_bundle": round(fragments / args.bundles, 2),
        "resent_fragments": fragments - sum(e.count or 0 for e in entries), "polls": polls,
        "overhead_down": round(payload_down / bundle_bytes, 4),
        "overhead_payload": round((payload_down + ack_bytes) / bundle_bytes, 4),
        "overhead_down_by_size": by_size,
        "overhead_wire": round((wire.down + wire.up) / bundle_bytes, 4),
        "wire_down_bytes": wire.down, "wire_up_bytes": wire.up, "priority_classes": classes,
        "peak_rss_mb": {k: round(v) for k, v in rss.items()},
    }
    table = Table("figure", "value", box=None, header_style="bold")
    table.add_row("bundles", f"{args.bundles} ({result['mean_bundle_bytes']} B mean, {bundle_bytes} B in all)")
    table.add_row("link", f"{args.rate:.0f} B/s each way, {args.latency} s delay; ground budget "
                          f"{result['ground_rate']:.0f} B/s; {args.fragment_size} B fragments")
    table.add_row("elapsed", f"{elapsed:.0f} s ({result['bundles_per_min']} bundles/min)")
    table.add_row("throughput", f"{result['throughput_Bps']:.0f} bundle B/s (link use {result['link_use']:.0%})")
    table.add_row("fragments", f"{fragments} ({result['resent_fragments']} resent), {polls} polls")
    table.add_row("overhead, relay payloads", f"{result['overhead_payload']:.3f} link B per bundle B "
                  f"({result['overhead_down']:.3f} down + acks up)")
    for name, b in by_size.items():
        table.add_row(f"  down, bundles of {name}", f"{b['overhead_down']:.3f} ({b['bundles']} bundles)")
    table.add_row("overhead, on the wire (MQTT)", f"{result['overhead_wire']:.3f}")
    for name, c in classes.items():
        table.add_row(f"{name} through", f"{c['all_through_s']} s ({c['bundles']} bundles)")
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

#!/usr/bin/env python3
"""A month unattended in about an hour: is disk use flat, memory flat, every bundle played once?

One broker, the ground and edge daemons as real processes (``relay.testing.pair``),
every setting of the shipped configuration but for time: traffic and
``[retention]`` are scaled by ``--scale`` (720: a day is two minutes), so a
month of briefings passes in ``--days`` x 2 minutes. Bundles arrive as an
operator's would, dropped in the ground's spool folder (``--per-day`` a day,
mixed priorities, real transcripts of 40-250 words); the edge speaks each
into a WAV (espeak-ng: the disk, not the voice, is under test here). Retention,
in scaled days: spoken WAVs 2 days, the console's cache 2, a played bundle's
data 7, the ground's taken files 1 and finished entries 7; the edge's
``link.max_age`` 7 (``--max-age``: a bundle's record is forgotten after twice
that); the daemons prune every 6 scaled hours.

Every scaled 6 hours it samples the disk each side uses (the edge's store,
search index, output folder; the ground's queue and spool) and each daemon's
RSS. Reported: bundles queued, delivered, played, played more than once;
disk and memory at the end of the first and last quarter, and their slope
over the second half (per scaled day); the figure with ``--plot``.

    .venv/bin/python benchmarks/month.py [--days 30] [--per-day 48] [--scale 720] [--json out/bench/month.json]
                                         [--plot docs/figures/month.png]
"""

from __future__ import annotations

import argparse
import atexit
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from relay.cli import plain_console  # noqa: E402
from relay.testing.broker import LocalBroker  # noqa: E402
from relay.testing.bundles import real_bundle  # noqa: E402
from relay.testing.pair import Pair, wait_for  # noqa: E402

console = plain_console()
PRIORITIES = ["flash"] * 2 + ["priority"] * 8 + ["normal"] * 60 + ["bulk"] * 30
DAY = 86400.0


def size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (x, y)."""
    n = len(points)
    if n < 2:
        return 0.0
    mx, my = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    den = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / den if den else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=float, default=30.0)
    ap.add_argument("--per-day", type=float, default=48.0, help="bundles a (scaled) day")
    ap.add_argument("--scale", type=float, default=720.0, help="how much faster than real time")
    ap.add_argument("--max-age", type=float, default=7.0,
                    help="the edge's link.max_age, scaled days: a record is forgotten after twice this")
    ap.add_argument("--json", type=Path, default=ROOT / "out" / "bench" / "month.json")
    ap.add_argument("--plot", type=Path)
    ap.add_argument("--keep", type=Path, help="run in this folder and keep it (logs)")
    args = ap.parse_args()
    day = DAY / args.scale  # real seconds in a scaled day
    d = 1 / args.scale  # a scaled day in the configuration's days
    rng = random.Random(11)
    with tempfile.TemporaryDirectory(prefix="month-") as td:
        tmp = args.keep or Path(td)
        tmp.mkdir(parents=True, exist_ok=True)
        spool = tmp / "spool"
        spool.mkdir(exist_ok=True)
        with LocalBroker(tmp / "broker") as broker:
            pair = Pair(tmp, broker, ground={
                "retention": {"files_days": d, "rejected_days": 2 * d, "queue_days": 7 * d, "every": day / 4},
                "ground": {"spool_dir": str(spool), "spool_settle": 0.2},
            }, edges={
                "link": {"max_age": args.max_age * day},
                "retention": {"played_days": 2 * d, "cache_days": 2 * d, "bundles_days": 7 * d, "every": day / 4},
            })
            atexit.register(pair.stop)  # a failed run leaves no daemon behind
            pair.start("edge")
            wait_for(lambda: "connected" in pair.log("edge"), 120, "the edge")
            pair.start("ground")
            wait_for(lambda: "connected" in pair.log("ground"), 120, "the ground")
            start = time.monotonic()
            end = start + args.days * day
            gap = day / args.per_day
            queued: dict[str, str] = {}  # title -> priority
            seen: dict[str, dict] = {}  # title -> the last state the queue showed
            samples: list[dict] = []
            next_drop, next_sample, n = start, start, 0
            while True:
                now = time.monotonic()
                played_now = sum(1 for t in queued if seen.get(t, {}).get("play_state") == "played")
                if now >= end and (played_now == len(queued) or now > end + 20 * day):
                    break  # everything played, or (reported) what is still unplayed
                if now >= next_drop and now < end:
                    title, prio = f"m{n:05d}", rng.choice(PRIORITIES)
                    (spool / f"{title}.bundle").write_bytes(real_bundle(rng.randint(40, 250), title, seed=n))
                    queued[title] = prio
                    n += 1
                    next_drop += gap
                if now >= next_sample:
                    next_sample += day / 4
                    for e in pair.entries():
                        seen[e["title"]] = e
                    state = tmp / "edge"
                    samples.append({
                        "day": (now - start) / day,
                        "edge_store_mb": size(state / "inbox.db") / 1e6 + size(state / "inbox.db-wal") / 1e6,
                        "edge_index_mb": size(state / "transcripts.db") / 1e6,
                        "edge_output_mb": size(tmp / "played") / 1e6, "edge_cache_mb": size(state / "web") / 1e6,
                        "ground_queue_mb": (size(tmp / "ground" / "queue.db") + size(tmp / "ground" / "queue.db-wal"))
                        / 1e6,
                        "ground_spool_mb": size(spool) / 1e6,
                        "edge_rss_mb": rss_mb(pair.procs["edge"].pid),
                        "ground_rss_mb": rss_mb(pair.procs["ground"].pid),
                        "queued": n, "played": sum(1 for s in seen.values() if s.get("play_state") == "played"),
                    })
                    s = samples[-1]
                    console.print(f"day {s['day']:5.1f}: {n} queued, {s['played']} played; edge store "
                                  f"{s['edge_store_mb']:.1f} MB, output {s['edge_output_mb']:.1f} MB, index "
                                  f"{s['edge_index_mb']:.2f} MB; ground queue {s['ground_queue_mb']:.1f} MB, spool "
                                  f"{s['ground_spool_mb']:.1f} MB; RSS edge {s['edge_rss_mb']:.0f} MB, ground "
                                  f"{s['ground_rss_mb']:.0f} MB")
                    for name in ("edge", "ground"):
                        if not pair.alive(name):
                            raise SystemExit(f"the {name} daemon stopped; see {tmp}/{name}.log")
                time.sleep(min(0.5, gap / 2))
            for e in pair.entries():
                seen[e["title"]] = e
            listed = json.loads(pair.relay("edge", "ls", "--json", "-c", str(pair.edge_config)).stdout)["bundles"]
            plays = [b["plays"] for b in listed]
            pair.stop()
            logs = pair.log("edge") + pair.log("ground")
    played = sum(1 for t in queued if seen.get(t, {}).get("play_state") == "played")
    half = [s for s in samples if s["day"] >= args.days / 2 and s["day"] <= args.days]
    keys = [k for k in samples[0] if k.endswith("_mb")]
    result = {
        "days": args.days, "scale": args.scale, "queued": len(queued), "delivered_and_played": played,
        "played_more_than_once": sum(1 for p in plays if p > 1), "edge_records": len(listed),
        "tracebacks": logs.count("Traceback"), "retention_lines": logs.count("retention: removed"),
        "second_half_slope_per_day": {k: round(slope([(s["day"], s[k]) for s in half]), 4) for k in keys},
        "first_quarter": {k: round(max(s[k] for s in samples if s["day"] <= args.days / 4), 2) for k in keys},
        "last_quarter": {k: round(max(s[k] for s in samples if s["day"] >= 3 * args.days / 4), 2) for k in keys},
        "samples": samples,
    }
    console.print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (disk, mem) = plt.subplots(1, 2, figsize=(10, 3.6))
        for k in keys:
            if "rss" not in k:
                disk.plot([s["day"] for s in samples], [s[k] for s in samples], label=k.removesuffix("_mb"))
        for k in ("edge_rss_mb", "ground_rss_mb"):
            mem.plot([s["day"] for s in samples], [s[k] for s in samples], label=k.removesuffix("_mb"))
        disk.set_title(f"disk, MB ({len(queued)} bundles in {args.days:g} scaled days)")
        mem.set_title("resident memory, MB")
        for ax in (disk, mem):
            ax.set_xlabel("day")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=120)
    console.print(f"json: {args.json}")


if __name__ == "__main__":
    main()

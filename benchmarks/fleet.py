#!/usr/bin/env python3
"""A fleet on one ground: many edges on one broker, each bundle delivered and
played exactly once, what the ground spends per edge and per fragment, no
ship starving behind another's backlog, and the operator's commands over a
queue of 10^5 rows.

The ground daemon is the real one (`relay ground run`), on a private
mosquitto. Most edges are :class:`edge.light.LightEdge`s, hundreds
in one process: the real edge store and the real signed acks and play
reports, no voices. ``--real`` of them are real edge daemons
(`relay edge run`, espeak-ng into WAV files). The queue holds ``--bundles``
entries for the whole fleet (``--to all``: encoded once, one signed transfer
per edge) after a backlog of ``--backlog`` bundles for one edge alone, at the
same priority, queued first. Reported: time until every row was played,
rows delivered and played, bundles played twice (must be 0), fragments,
resends and polls, the ground's CPU seconds per edge and per fragment and its
peak memory, the broker's peak memory, when each edge had its first fleet
bundle (fairness: the backlogged edge's queue must not hold up the others),
and the latency of `relay ground queue ls`, `queue ls --all`, `status` and
the console's `/api/queue` and `/api/status` over ``--rows`` queue rows, and
of the sender choosing its next message there.

    .venv/bin/python benchmarks/fleet.py [--edges 200] [--bundles 20] [--real 2] [--backlog 100]
                                         [--rows 100000] [--json docs/figures/fleet.json]

Timings are of this machine; tests assert behaviour, never speed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import tomli_w  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from benchmarks.soak import peak_rss_mb  # noqa: E402
from ground.queue import Outbox, PlayState, State  # noqa: E402
from relay.link.messages import Priority  # noqa: E402
from relay.link.signing import SigningKey  # noqa: E402
from relay.testing.broker import LocalBroker, free_port  # noqa: E402
from relay.testing.bundles import real_bundle  # noqa: E402

console = Console()
RELAY = str(Path(sys.executable).with_name("relay"))
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def ground_config(tmp: Path, port: int, keys: dict[str, SigningKey]) -> Path:
    cfg = {
        "ground": {"state_dir": str(tmp / "ground"), "signing_key": str(tmp / "ground.key"),
                   "default_edge": next(iter(keys)), "diarize": False, "fit_voices": False},
        "edges": {name: {"key": k.public.text()} for name, k in keys.items()},
        "groups": {"fleet": list(keys)},
        "broker": {"host": "127.0.0.1", "port": port},
        "link": {"fragment_size": 340, "rate": 0.0, "ack_timeout": 60.0, "max_poll_interval": 600.0},
        "retention": {"every": 3600.0},
    }
    path = tmp / "ground.toml"
    path.write_text(tomli_w.dumps(cfg))
    return path


def edge_config(tmp: Path, name: str, port: int, ground: SigningKey) -> Path:
    cfg = {
        "edge": {"name": name, "state_dir": str(tmp / name), "output_dir": str(tmp / f"{name}-played"),
                 "play": False, "voice": "espeak:en-us+m3", "signing_key": str(tmp / "keys" / f"{name}.key"),
                 "trusted_keys": [ground.public.text()]},
        "broker": {"host": "127.0.0.1", "port": port},
        "link": {"max_clock_skew": 0},
    }
    path = tmp / f"{name}.toml"
    path.write_text(tomli_w.dumps(cfg))
    return path


def deliver(args: argparse.Namespace, tmp: Path) -> dict:
    """The fleet run: everything queued, then the daemons started, until every row is played."""
    rng = random.Random(11)
    names = [f"real{i}" for i in range(args.real)] + [f"e{i:03d}" for i in range(args.edges - args.real)]
    ground_key = SigningKey.generate()
    ground_key.save(tmp / "ground.key")
    (tmp / "keys").mkdir()
    keys = {}
    for name in names:
        keys[name] = SigningKey.generate()
        keys[name].save(tmp / "keys" / f"{name}.key")
    out: dict = {"edges": args.edges, "real_edges": args.real, "fleet_bundles": args.bundles,
                 "backlog": args.backlog}
    with LocalBroker(tmp / "broker") as broker:
        gcfg = ground_config(tmp, broker.port, keys)
        (tmp / "ground").mkdir()
        outbox = Outbox(tmp / "ground" / "queue.db")
        busy = names[-1]  # a light edge with a backlog of its own, queued first
        for i in range(args.backlog):
            outbox.add_bundle(real_bundle(rng.randint(40, 200), f"backlog{i}", seed=10_000 + i), busy,
                              Priority.NORMAL)
        fleet_bytes = 0
        for i in range(args.bundles):
            data = real_bundle(rng.randint(40, 200), f"brief{i}", seed=i)
            fleet_bytes += len(data)
            outbox.add_bundle(data, names, Priority.NORMAL)
        out["fleet_bundle_bytes_mean"] = round(fleet_bytes / max(args.bundles, 1))
        rows = len(outbox.items())
        spec = tmp / "fleet.json"
        spec.write_text(json.dumps({"folder": str(tmp / "light"), "port": broker.port,
                                    "ground_key": ground_key.public.text(),
                                    "edges": {n: str(tmp / "keys" / f"{n}.key") for n in names[args.real:]}}))
        (tmp / "light").mkdir()
        logs = {}
        procs: dict[str, subprocess.Popen] = {}

        def start(name: str, cmd: list[str]) -> None:
            logs[name] = (tmp / f"{name}.log").open("wb")
            procs[name] = subprocess.Popen(cmd, stdout=logs[name], stderr=subprocess.STDOUT,
                                           env={**os.environ, "HF_HUB_OFFLINE": "1", "SPEECH_RELAY_FIT_VOICES": "0"})

        start("light", [sys.executable, "-m", "edge.light", str(spec)])
        for name in names[:args.real]:
            start(name, [RELAY, "edge", "run", "-c", str(edge_config(tmp, name, broker.port, ground_key))])
        end = time.monotonic() + 300
        while time.monotonic() < end and not all((tmp / n / "inbox.db").exists() for n in names[:args.real]):
            time.sleep(0.5)
        time.sleep(3)  # the light edges' sessions are made (their stores begin before anything is signed)
        t0 = time.time()
        start("ground", [RELAY, "ground", "run", "-c", str(gcfg)])
        ground_pid, broker_pid = procs["ground"].pid, broker.pid or 0
        deadline = time.monotonic() + args.timeout
        played = delivered = 0
        first: dict[str, float] = {}
        with console.status("delivering") as status:
            while time.monotonic() < deadline:
                items = outbox.items()
                delivered = sum(i.state == State.DELIVERED for i in items)
                played = sum(i.play_state == PlayState.PLAYED for i in items)
                for i in items:
                    if i.delivered and i.title.startswith("brief") and i.edge not in first:
                        first[i.edge] = i.delivered - t0
                status.update(f"delivered {delivered}/{rows}, played {played}/{rows}, "
                              f"ground CPU {cpu_seconds(ground_pid):.0f} s")
                if played == rows or procs["ground"].poll() is not None:
                    break
                time.sleep(2)
        elapsed = time.time() - t0
        ground_cpu, ground_mb, broker_mb = cpu_seconds(ground_pid), peak_rss_mb(ground_pid), peak_rss_mb(broker_pid)
        for name in ["ground", *names[:args.real], "light"]:
            p = procs[name]
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(120)
                except subprocess.TimeoutExpired:
                    p.kill()
        counts = json.loads(spec.with_suffix(".counts.json").read_text()) if spec.with_suffix(
            ".counts.json").exists() else {}
        items = outbox.items()
        frags = sum(i.fragments_sent for i in items)
        needed = sum(i.count or 0 for i in items)
        wavs = {n: len(list((tmp / f"{n}-played").glob("*.wav"))) for n in names[:args.real]}
        others = [t for e, t in first.items() if e != busy]
        out.update({
            "rows": rows, "delivered": delivered, "played": played, "seconds": round(elapsed, 1),
            "played_twice": sum(c["played_twice"] for c in counts.values())
            + sum(max(0, n - args.bundles) for n in wavs.values()),
            "real_edge_wavs": wavs, "fragments_sent": frags, "fragments_needed": needed,
            "fragments_resent": frags - needed, "polls": sum(i.polls for i in items),
            "ground_cpu_s": round(ground_cpu, 1), "ground_cpu_ms_per_edge": round(1000 * ground_cpu / args.edges, 1),
            "ground_cpu_ms_per_fragment": round(1000 * ground_cpu / max(frags, 1), 2),
            "ground_peak_mb": round(ground_mb), "broker_peak_mb": round(broker_mb),
            "first_fleet_bundle_s": {"others_median": round(statistics.median(others), 1) if others else None,
                                     "others_max": round(max(others), 1) if others else None,
                                     "backlogged_edge": round(first[busy], 1) if busy in first else None},
            "errors_in_logs": sum("Traceback" in (tmp / f"{n}.log").read_text(errors="replace")
                                  for n in ["ground", "light", *names[:args.real]]),
        })
        for f in logs.values():
            f.close()
    return out


def big_queue(args: argparse.Namespace, tmp: Path) -> dict:
    """A queue of ``--rows`` rows (entries for 200 edges, most finished): how long an operator waits."""
    edges = [f"e{i:03d}" for i in range(200)]
    keys = {e: SigningKey.generate() for e in edges}
    SigningKey.generate().save(tmp / "ground.key")
    gcfg = ground_config(tmp, free_port(), keys)
    (tmp / "ground").mkdir()
    outbox = Outbox(tmp / "ground" / "queue.db")
    entries = args.rows // len(edges)
    with console.status(f"filling a queue of {entries * len(edges)} rows"):
        for i in range(entries):
            outbox.add_bundle(real_bundle(60, f"brief{i}", seed=i), edges, Priority.NORMAL)
        finished = int(entries * 0.95)
        now = time.time()
        outbox._db.execute("UPDATE outbox SET state = 'delivered', delivered = ?, played = ?, play_state = 'played', "
                           "size = coalesce(size, 200) WHERE batch <= (SELECT min(batch) FROM outbox) + ?",
                           (now, now, (finished - 1) * len(edges)))
    out: dict = {"rows": entries * len(edges), "entries": entries, "active_entries": entries - finished}

    def timed(*cmd: str, repeat: int = 3) -> float:
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            proc = subprocess.run([RELAY, *cmd, "-c", str(gcfg)], capture_output=True, text=True)
            times.append(time.perf_counter() - t)
            if proc.returncode != 0:
                raise SystemExit(f"relay {' '.join(cmd)}: {proc.stderr.strip()}")
        return round(statistics.median(times), 2)

    out["queue_ls_s"] = timed("ground", "queue", "ls")
    out["queue_ls_all_s"] = timed("ground", "queue", "ls", "--all")
    out["status_s"] = timed("ground", "status")
    port = free_port()
    web = subprocess.Popen([RELAY, "ground", "web", "-c", str(gcfg), "--listen", f"127.0.0.1:{port}"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=60).read()
                break
            except OSError:
                time.sleep(0.3)
        for path in ("queue", "status"):
            times = []
            for _ in range(3):
                t = time.perf_counter()
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/{path}", timeout=120).read()
                times.append(time.perf_counter() - t)
            out[f"console_api_{path}_s"] = round(statistics.median(times), 2)
    finally:
        web.terminate()
        web.wait(30)
    key = SigningKey.generate()
    t = time.perf_counter()
    n = 0
    for _ in range(300):
        msg = outbox.next_out(340, key, edges)
        if msg is None:
            break
        outbox.sent(msg, 60)
        n += 1
    out["sender_ms_per_message"] = round(1000 * (time.perf_counter() - t) / max(n, 1), 1)
    out["queue_db_mb"] = round((tmp / "ground" / "queue.db").stat().st_size / 2**20, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--edges", type=int, default=200)
    ap.add_argument("--bundles", type=int, default=20, help="entries queued for the whole fleet")
    ap.add_argument("--real", type=int, default=2, help="how many of the edges are real edge daemons")
    ap.add_argument("--backlog", type=int, default=100, help="bundles for one edge alone, queued first")
    ap.add_argument("--rows", type=int, default=100_000, help="queue rows for the latency part (0: skip)")
    ap.add_argument("--timeout", type=float, default=3600.0)
    ap.add_argument("--json", type=Path, default=ROOT / "out" / "bench" / "fleet.json")
    ap.add_argument("--keep", type=Path, help="run in this folder and keep it (logs)")
    args = ap.parse_args()
    result: dict = {"machine": f"{os.cpu_count()} CPUs"}
    with tempfile.TemporaryDirectory(prefix="fleet-") as td:
        tmp = args.keep or Path(td)
        tmp.mkdir(parents=True, exist_ok=True)
        if args.edges:
            (tmp / "run").mkdir(exist_ok=True)
            result["delivery"] = deliver(args, tmp / "run")
        if args.rows:
            (tmp / "big").mkdir(exist_ok=True)
            result["big_queue"] = big_queue(args, tmp / "big")
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)
    table = Table("part", "figure", "value", box=None, header_style="bold")
    for part, figures in result.items():
        if isinstance(figures, dict):
            for k, v in figures.items():
                table.add_row(part, k, json.dumps(v))
    console.print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"-> {args.json}")


if __name__ == "__main__":
    main()

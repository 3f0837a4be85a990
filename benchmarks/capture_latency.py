"""Live capture's delay: from speech said at the ground to the
edge speaking it, over the thin-link simulator.

A recording is played in as if from a line-in, in real time (the sound card
is the one piece of absent hardware: ``ground.capture.file_blocks`` stands
in for it), through the ground's capture (cut at pauses, Whisper,
diarization), into the queue; the ground daemon sends it through
``relay link-sim`` (a few hundred bytes a second, 0.6 s each way) to a
mosquitto and the edge daemon, which verifies, renders and plays each part
(into WAV files: there is no sound card here).

For each part, the delay is the time from when its first word was said to
when the edge starts speaking it. A sound card plays a stream's parts
back to back, so part n starts at ``max(ready_n, end of part n-1)``. ready_n is
when the edge began rendering the part (``started``; its first phrase
follows after one phrase's synthesis) or, pessimistically, when the whole
part was rendered (``played``). A part that is not ready when the one before
it ends leaves a gap; the gaps are counted.

    .venv/bin/python benchmarks/capture_latency.py [--audio FILE ...] [--chunk S] [--rate B/S] [--voice KEY]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def sample_call() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("pyannote.audio")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).parent / "sample" / "sample.wav"


def configs(tmp: Path, ground_port: int, edge_port: int, rate: float, voice: str) -> tuple[Path, Path]:
    from relay.testing.configs import write_station

    station = write_station(tmp, ground_port, edge_port, edge="ship", voice=voice,
                            ground={"link": {"rate": rate, "ack_timeout": 20, "max_poll_interval": 3600.0}},
                            edges={"link": {"max_clock_skew": 600}})
    return station.ground, station.edge


def run_one(audio: Path, args: argparse.Namespace, loaded, relay: str) -> dict:  # noqa: ANN001
    import sqlite3

    from ground.capture import Cutter, capture, file_blocks, parts_in_background
    from ground.encoder import Encoder
    from ground.queue import Outbox
    from relay.config import load_ground
    from relay.link.linksim import LinkSimThread
    from relay.link.messages import Priority
    from relay.testing.broker import LocalBroker

    tmp = Path(tempfile.mkdtemp(prefix="capture-bench-"))
    with LocalBroker(tmp / "broker") as broker, \
            LinkSimThread(broker.port, rate=args.rate, latency=args.latency) as sim:
        ground_cfg, edge_cfg = configs(tmp, sim.sim.port, broker.port, args.rate, args.voice)
        cfg = load_ground(ground_cfg)
        encoder = Encoder(cfg, transcriber=loaded.transcriber, diarizer=loaded.diarizer)  # this run's stores
        procs = [subprocess.Popen([relay, side, "run", "-c", str(c)], stdout=(tmp / f"{side}.log").open("wb"),
                                  stderr=subprocess.STDOUT) for side, c in (("ground", ground_cfg), ("edge", edge_cfg))]
        try:
            if args.voice == "auto":  # the edge measures its voice bank once, on its first bundle: not on the clock
                warm = subprocess.run([relay, "edge", "voices", "measure", "-c", str(edge_cfg)], capture_output=True,
                                      timeout=1800)
                assert warm.returncode == 0, warm.stderr
            outbox = Outbox(cfg.ground.queue_db, cfg.limits)
            t0 = time.time()
            parts = parts_in_background(file_blocks(audio, realtime=True), Cutter(args.chunk))
            made = []
            for q in capture(encoder, outbox, parts, "ship", Priority.PRIORITY, "live"):
                made.append((q, outbox.get(q.entry).bundle_id))
                print(f"  part {q.part.seq}: {q.part.start:.1f}-{q.part.start + q.part.duration:.1f} s, "
                      f"{q.bytes} B, encoded in {q.encode_seconds:.1f} s", flush=True)
            inbox = sqlite3.connect(tmp / "edge" / "inbox.db")
            end = time.time() + 600
            while time.time() < end:
                done = inbox.execute("SELECT count(*) FROM bundles WHERE played IS NOT NULL").fetchone()[0]
                if done == len(made):
                    break
                time.sleep(0.5)
            rows = {bytes(r[0]): r[1:] for r in inbox.execute(
                "SELECT bundle_id, received, started, played, duration FROM bundles")}
        finally:
            for p in procs:
                p.terminate()
                p.wait(30)
    said_delays, ready_delays, gaps, link, cut_waits, encode = [], [], 0, [], [], []
    end_prev = end_prev_ready = 0.0
    for q, bid in made:
        received, started, played, duration = rows[bid]
        said = t0 + q.part.start  # the stream clock runs with the line-in from t0
        begin = max(started, end_prev)
        begin_ready = max(played, end_prev_ready)
        if q.part.seq and started > end_prev:
            gaps += 1
        end_prev, end_prev_ready = begin + duration, begin_ready + duration
        said_delays.append(begin - said)
        ready_delays.append(begin_ready - said)
        cut_waits.append(q.part.heard_at - (t0 + q.part.start + q.part.duration))
        encode.append(q.encode_seconds)
        link.append(received - (q.part.heard_at + q.encode_seconds))
    return {
        "audio": audio.name, "seconds": round(made[-1][0].part.start + made[-1][0].part.duration, 1),
        "parts": len(made), "bytes": sum(q.bytes for q, _ in made),
        "delay_to_start_s": {"median": round(statistics.median(said_delays), 1), "max": round(max(said_delays), 1)},
        "delay_rendered_s": {"median": round(statistics.median(ready_delays), 1), "max": round(max(ready_delays), 1)},
        "part_seconds_median": round(statistics.median(q.part.duration for q, _ in made), 1),
        "cut_wait_s_median": round(statistics.median(cut_waits), 1),
        "encode_s_median": round(statistics.median(encode), 1),
        "queue_to_edge_s_median": round(statistics.median(link), 1),
        "gaps": gaps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--audio", type=Path, nargs="*", help="recordings (default: the packaged call)")
    parser.add_argument("--chunk", type=float, default=10.0, help="seconds a part covers at most")
    parser.add_argument("--rate", type=float, default=300.0, help="link bytes per second each way")
    parser.add_argument("--latency", type=float, default=0.6, help="link delay each way, seconds")
    parser.add_argument("--voice", default="auto", help="the edge's voice (default: auto, a voice per speaker)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from ground.encoder import Encoder
    from relay.config import GroundConfig

    relay = str(Path(sys.executable).with_name("relay"))
    encoder = Encoder(GroundConfig())
    encoder.transcriber  # noqa: B018 (loaded before the clock starts, as `relay ground capture` does)
    encoder.diarizer  # noqa: B018
    results = []
    for audio in args.audio or [sample_call()]:
        print(f"{audio.name}: played in as if live, {args.chunk:g}-s parts, link {args.rate:g} B/s and "
              f"{args.latency:g} s each way, edge voice {args.voice}", flush=True)
        results.append(run_one(audio, args, encoder, relay))
        if not args.json:
            r = results[-1]
            print(f"  {r['parts']} parts ({r['part_seconds_median']} s median), {r['bytes']} B; delay from speech to "
                  f"the edge speaking it: median {r['delay_to_start_s']['median']} s, max "
                  f"{r['delay_to_start_s']['max']} s (pessimistic, each part whole before it plays: median "
                  f"{r['delay_rendered_s']['median']} s); of which waiting for the cut "
                  f"{r['cut_wait_s_median']} s, encoding {r['encode_s_median']} s, queue to edge "
                  f"{r['queue_to_edge_s_median']} s; gaps between parts: {r['gaps']}", flush=True)
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Benchmark the ground station with diarization: DER, speed, memory, bytes.

For each file of ../shared/data/pyannote (sample, dev00, dev01, trn01-04,
30 s each, RTTM references): the whole ground path (Whisper, pyannote
diarization with CAM++ embeddings, word attribution, voice profiles,
packing) runs once. Reported per file and pooled:

* DER at collar 0 and 0.5 s (pyannote.metrics, overlap scored), with
  missed speech, false alarm and confusion in seconds;
* speakers found vs in the reference;
* ground real-time factor (ASR + diarization + profiles + packing) and
  diarization's share; peak RSS of the process;
* bundle bytes and what the voice profiles cost.

    .venv/bin/python benchmarks/diarization.py [--model base] [--json out.json] [--plot der.png]
                                               [--long-minutes 10]

``--long-minutes N`` also encodes one N-minute recording made by cycling
the seven files, for the speed, memory and size of a long broadcast.

Timings are of this machine (2 cores here); tests assert DER, never speed.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import track
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ground.diarize import Diarizer  # noqa: E402
from ground.encoder import Encoder  # noqa: E402
from ground.evaluate import load_rttm, score, word_attribution  # noqa: E402
from ground.transcribe import Transcriber  # noqa: E402
from relay.audio.io import load_audio  # noqa: E402
from relay.config import GroundConfig, GroundSection  # noqa: E402
from relay.format.wire import field_costs  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "pyannote"
FILES = ["sample", "dev00", "dev01", "trn01", "trn02", "trn03", "trn04"]
RTTMS = ["sample.rttm", "debug.development.rttm", "debug.train.rttm"]


def plot(rows0, rows5, pooled0: float, pooled5: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = [r.uri for r in rows0] + ["pooled"]
    x = np.arange(len(names))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
    ax1.bar(x - 0.2, [r.der * 100 for r in rows0] + [pooled0 * 100], 0.4, label="collar 0")
    ax1.bar(x + 0.2, [r.der * 100 for r in rows5] + [pooled5 * 100], 0.4, label="collar 0.5 s")
    ax1.axhline(25, color="grey", ls="--", lw=1, label="pooled target (25 %)")
    ax1.set_xticks(x, names, rotation=30)
    ax1.set_ylabel("DER (%)")
    ax1.set_ylim(0, 105)
    ax1.set_title("Diarization error rate per file")
    ax1.legend()
    parts = {"missed": [r.missed for r in rows0], "false alarm": [r.false_alarm for r in rows0],
             "confusion": [r.confusion for r in rows0]}
    bottom = np.zeros(len(rows0))
    for label, values in parts.items():
        ax2.bar(x[:-1], values, 0.6, bottom=bottom, label=label)
        bottom += values
    ax2.set_xticks(x[:-1], names[:-1], rotation=30)
    ax2.set_ylabel("seconds (collar 0)")
    ax2.set_title("Where the errors are")
    ax2.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="base", help="Whisper model for the RTF figure (default: base)")
    ap.add_argument("--beam-size", type=int, default=5)
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--plot", type=Path, help="write a PNG of DER per file here")
    ap.add_argument("--long-minutes", type=float, default=0, help="also encode a recording this long")
    args = ap.parse_args()
    console = Console(width=max(Console().width, 150))

    t0 = time.perf_counter()
    transcriber = Transcriber(args.model, cpu_threads=0)
    diarizer = Diarizer()
    load_s = time.perf_counter() - t0
    references = load_rttm(DATA / name for name in RTTMS)
    ground = Encoder(GroundConfig(ground=GroundSection(model=args.model, beam_size=args.beam_size)),
                     transcriber=transcriber, diarizer=diarizer, store=None)

    hypotheses, per_file = {}, {}
    for uri in track(FILES, description="diarizing", console=console):
        audio = load_audio(DATA / f"{uri}.wav")
        result = ground.encode(audio, uri)
        hypotheses[uri] = result.diarization
        costs = field_costs(result.bundle)
        accuracy, scored = word_attribution(result.bundle.segments, references[uri])
        per_file[uri] = {
            "word_accuracy": accuracy,
            "words_scored": scored,
            "duration": result.duration,
            "timings": result.timings,
            "rtf": result.rtf,
            "bytes": len(result.data),
            "profile_bytes": costs.get("profiles", 0),
        }
    rows0, pooled0 = score(references, hypotheses, collar=0.0)
    rows5, pooled5 = score(references, hypotheses, collar=0.5)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    table = Table(
        "file", "DER c=0", "DER c=0.5", "missed s", "FA s", "conf. s", "spk (ref)", "words ok", "RTF", "diar. RTF",
        "bytes", "profiles B", title=f"Ground station with diarization, Whisper {args.model} beam {args.beam_size}",
    )
    for r0, r5 in zip(rows0, rows5):
        f = per_file[r0.uri]
        table.add_row(
            r0.uri, f"{r0.der:.1%}", f"{r5.der:.1%}", f"{r0.missed:.2f}", f"{r0.false_alarm:.2f}",
            f"{r0.confusion:.2f}", f"{r0.speakers} ({r0.reference_speakers})",
            f"{f['word_accuracy']:.0%} of {f['words_scored']}" if f["words_scored"] else "-", f"{f['rtf']:.3f}",
            f"{f['timings']['diarization'] / f['duration']:.3f}", str(f["bytes"]), str(f["profile_bytes"]),
        )
    duration = sum(f["duration"] for f in per_file.values())
    total_s = sum(sum(f["timings"].values()) for f in per_file.values())
    diar_s = sum(f["timings"]["diarization"] for f in per_file.values())
    scored = sum(f["words_scored"] for f in per_file.values())
    right = sum(f["word_accuracy"] * f["words_scored"] for f in per_file.values() if f["words_scored"])
    table.add_row(
        "[bold]pooled", f"[bold]{pooled0:.1%}", f"[bold]{pooled5:.1%}", "", "", "", "",
        f"{right / scored:.0%} of {scored}" if scored else "-",
        f"[bold]{total_s / duration:.3f}", f"{diar_s / duration:.3f}", "", "",
    )
    console.print(table)
    console.print(
        f"{duration:.0f} s of audio; models loaded in {load_s:.1f} s; peak RSS {peak_mb:.0f} MB "
        f"(Whisper {args.model}, segmentation-3.0, CAM++)"
    )
    summary = {
        "model": args.model,
        "der_pooled_collar0": pooled0,
        "der_pooled_collar05": pooled5,
        "word_attribution_accuracy": right / scored if scored else None,
        "rtf_ground": total_s / duration,
        "rtf_diarization": diar_s / duration,
        "peak_rss_mb": peak_mb,
    }
    if args.long_minutes:
        import numpy as np

        clips = [load_audio(DATA / f"{uri}.wav") for uri in FILES]
        need = int(args.long_minutes * 60 * 16000)
        long_audio = np.concatenate([clips[i % len(clips)] for i in range(need // len(clips[0]) + 1)])[:need]
        result = ground.encode(long_audio, "long")
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        summary["long"] = {
            "minutes": args.long_minutes, "bytes": len(result.data), "bits_per_second": result.bits_per_second,
            "rtf_ground": result.rtf, "rtf_diarization": result.timings["diarization"] / result.duration,
            "speakers": len(result.bundle.speakers), "peak_rss_mb": peak_mb,
        }
        console.print(
            f"{args.long_minutes:g}-minute recording: {len(result.data):,} bytes ({result.bits_per_second:.0f} bit/s), "
            f"{len(result.bundle.speakers)} speakers, ground RTF {result.rtf:.3f} "
            f"(diarization {summary['long']['rtf_diarization']:.3f}), peak RSS {peak_mb:.0f} MB"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        files = {r.uri: {**per_file[r.uri], "der_collar0": r.der, "der_collar05": r5.der, "missed": r.missed,
                         "false_alarm": r.false_alarm, "confusion": r.confusion, "speakers": r.speakers,
                         "reference_speakers": r.reference_speakers} for r, r5 in zip(rows0, rows5)}
        args.json.write_text(json.dumps({"summary": summary, "files": files}, indent=2))
    if args.plot:
        plot(rows0, rows5, pooled0, pooled5, args.plot)
        console.print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()

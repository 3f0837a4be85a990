#!/usr/bin/env python3
"""Benchmark the transcript tier on real speech: size, quality, speed, memory.

For each clip: input file bytes, bundle bytes, bits per second (whole bundle
and content only: text + word timings), ratio to the input file and to AAC at
64 kbit/s and Opus at 6 kbit/s of the same duration, WER against the reference
(where there is one), dWER of the rehydrated speech, encode (ASR) and decode
(TTS) real-time factors. Peak RSS of the process at the end.

    .venv/bin/python benchmarks/transcript_tier.py [--model tiny.en] [--beam-size 5] [--json out.json]

Reads ../shared/data (LJSpeech clips, JFK, pyannote sample). Timings are of
this machine; the tests assert quality, never speed.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import jiwer
from rich.console import Console
from rich.progress import track
from rich.table import Table
from whisper_normalizer.english import EnglishTextNormalizer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.rehydrate import render  # noqa: E402
from ground.encoder import Encoder  # noqa: E402
from ground.transcribe import TranscribeOptions, Transcriber  # noqa: E402
from relay.audio.io import SAMPLE_RATE, resample  # noqa: E402
from relay.config import GroundConfig, GroundSection  # noqa: E402
from relay.format.wire import decode_bundle, encode_bundle, field_costs  # noqa: E402
from relay.voice.engines.piper import PiperEngine  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
AAC_BPS, OPUS_BPS = 64_000, 6_000


def clips() -> list[tuple[Path, str | None]]:
    refs = dict(
        line.split("|", 1) for line in (SHARED / "ljspeech" / "transcripts.psv").read_text().splitlines() if line
    )
    out: list[tuple[Path, str | None]] = [
        (SHARED / "ljspeech" / f"{k}.flac", v) for k, v in sorted(refs.items())
    ]
    out.append(
        (
            SHARED / "whisper" / "jfk.flac",
            "And so, my fellow Americans, ask not what your country can do for you, "
            "ask what you can do for your country.",
        )
    )
    out.append((SHARED / "pyannote" / "sample.wav", None))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny.en")
    ap.add_argument("--beam-size", type=int, default=5)
    ap.add_argument("--listener", default="base", help="Whisper model that transcribes the rehydrated speech")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="write the per-clip figures here")
    ap.add_argument("--format", type=int, default=2, choices=(1, 2), help="bundle format the edge receives")
    args = ap.parse_args()
    console = Console(width=170)
    norm = EnglishTextNormalizer()

    t0 = time.perf_counter()
    transcriber = Transcriber(args.model, cpu_threads=args.threads)
    engine = PiperEngine()
    listener = transcriber if args.listener == args.model else Transcriber(args.listener, cpu_threads=args.threads)
    load_s = time.perf_counter() - t0
    options = TranscribeOptions(beam_size=args.beam_size)
    ground = Encoder(GroundConfig(ground=GroundSection(model=args.model, beam_size=args.beam_size, diarize=False)),
                     transcriber=transcriber, store=None)

    rows = []
    for path, ref in track(clips(), description="encode → decode → re-transcribe", console=console):
        res = ground.encode_file(path, title="")
        t = time.perf_counter()
        received = decode_bundle(encode_bundle(res.bundle, args.format))  # what the edge gets, as the wire rounds it
        audio, _ = render(received, engine)
        tts_s = time.perf_counter() - t
        speech_s = len(audio) / engine.sample_rate
        back = listener.transcribe(resample(audio, engine.sample_rate, SAMPLE_RATE), options)  # listen back
        hyp, back_text = norm(res.bundle.text()), norm(" ".join(s.text for s in back.segments))
        costs = field_costs(res.bundle, args.format)
        size = len(encode_bundle(res.bundle, args.format))
        dur = res.duration
        rows.append(
            {
                "clip": path.name,
                "duration_s": round(dur, 2),
                "input_bytes": res.input_bytes,
                "bundle_bytes": size,
                "bps": round(size * 8 / dur, 1),
                "content_bytes": costs["text"] + costs["timings"],
                "content_bps": round((costs["text"] + costs["timings"]) * 8 / dur, 1),
                "ratio_input": round(res.input_bytes / size),
                "ratio_aac64": round(AAC_BPS / 8 * dur / size),
                "ratio_opus6": round(OPUS_BPS / 8 * dur / size, 1),
                "wer": round(jiwer.wer(norm(ref), hyp), 4) if ref else None,
                "wer_back": round(jiwer.wer(hyp, back_text), 4) if hyp else None,
                "asr_rtf": round(res.transcript.rtf, 3),
                "tts_rtf": round(tts_s / speech_s, 3),
                "duration_error": round(speech_s / dur - 1, 4),
                "ref": norm(ref) if ref else None,
                "hyp": hyp,
                "back": back_text,
            }
        )

    table = Table(
        title=f"transcript tier, Whisper {args.model} beam {args.beam_size}, Piper joe-medium, "
        f"listener {args.listener}"
    )
    for col in ("clip", "s", "bytes", "bps", "content bps", "× input", "× AAC64", "× Opus6", "WER", "WER back",
                "ASR RTF", "TTS RTF"):
        table.add_column(col, justify="right" if col != "clip" else "left")
    for r in rows:
        table.add_row(
            r["clip"], f"{r['duration_s']:.1f}", str(r["bundle_bytes"]), f"{r['bps']:.0f}", f"{r['content_bps']:.0f}",
            f"{r['ratio_input']:,}", f"{r['ratio_aac64']:,}", f"{r['ratio_opus6']:.1f}",
            "-" if r["wer"] is None else f"{r['wer']:.1%}", f"{r['wer_back']:.1%}",
            f"{r['asr_rtf']:.3f}", f"{r['tts_rtf']:.3f}",
        )
    console.print(table)

    lj = [r for r in rows if r["clip"].startswith("LJ")]
    total_s = sum(r["duration_s"] for r in lj)
    pooled_wer = jiwer.wer([r["ref"] for r in lj], [r["hyp"] for r in lj])
    summary = {
        "model": args.model,
        "beam_size": args.beam_size,
        "listener": args.listener,
        "lj_clips": len(lj),
        "lj_seconds": round(total_s, 1),
        "lj_bundle_bps": round(sum(r["bundle_bytes"] for r in lj) * 8 / total_s, 1),
        "lj_content_bps": round(sum(r["content_bytes"] for r in lj) * 8 / total_s, 1),
        "lj_wer": round(pooled_wer, 4),
        "lj_wer_back": round(jiwer.wer([r["hyp"] for r in lj], [r["back"] for r in lj]), 4),
        "asr_rtf": round(sum(r["asr_rtf"] * r["duration_s"] for r in rows) / sum(r["duration_s"] for r in rows), 3),
        "tts_rtf": round(sum(r["tts_rtf"] * r["duration_s"] for r in rows) / sum(r["duration_s"] for r in rows), 3),
        "max_duration_error": max(abs(r["duration_error"]) for r in rows),
        "model_load_s": round(load_s, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    for k, v in summary.items():
        console.print(f"{k:>20}: {v}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"summary": summary, "clips": rows}, indent=2))


if __name__ == "__main__":
    main()

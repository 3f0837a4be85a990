#!/usr/bin/env python3
"""Benchmark rehydration per TTS engine: speed, memory, intelligibility, timing.

The 16 LJSpeech clips and the pyannote sample call are encoded once (Whisper
tiny.en; the call with diarization). Then, for each voice, a separate process
(so its peak RSS is its own) speaks every bundle with that one voice and
reports its real-time factor and peak RSS. Back here Whisper base listens to
the result: dWER against the bundle's own text, and the rehydrated duration
against the original.

    .venv/bin/python benchmarks/rehydration.py [--voice piper:en_US-joe-medium --voice kokoro:jm_kumo ...]
                                               [--json out.json]

Timings are of this machine; tests assert quality, never speed.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = ROOT.parent / "shared" / "data"
DEFAULT_VOICES = ["piper:en_US-joe-medium", "kokoro:jm_kumo", "espeak:en-us+m3"]


def peak_rss_mb() -> float:
    """This process's peak RSS. /proc's VmHWM, not getrusage: Linux carries
    ru_maxrss across exec, so a child started from a 1 GB parent would
    report the parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(voice: str, folder: Path) -> None:
    """Speak every bundle in ``folder`` with ``voice``; print figures as JSON."""
    from edge.catalog import Catalog
    from edge.rehydrate import output_rate, render
    from relay.audio import write_wav
    from relay.wire import decode_bundle

    t0 = time.perf_counter()
    engine = Catalog().load(voice)
    load_s = time.perf_counter() - t0
    tts_s = speech_s = 0.0
    for path in sorted(folder.glob("*.bundle")):
        bundle = decode_bundle(path.read_bytes(), str(path))
        t = time.perf_counter()
        audio, _ = render(bundle, engine)
        tts_s += time.perf_counter() - t
        rate = output_rate(engine)
        speech_s += len(audio) / rate
        write_wav(folder / f"{path.stem}.{voice.replace(':', '_')}.wav", audio, rate)
    print(json.dumps({
        "voice": voice, "load_s": load_s, "rtf": tts_s / speech_s,
        "peak_rss_mb": peak_rss_mb(),
    }))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--voice", action="append", help="voice key (repeatable); default: one per engine")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--worker", nargs=2, metavar=("VOICE", "FOLDER"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker[0], Path(args.worker[1]))
        return

    import jiwer
    from rich.console import Console
    from rich.progress import track
    from rich.table import Table
    from whisper_normalizer.english import EnglishTextNormalizer

    from ground.diarize import Diarizer
    from ground.encode import encode_file
    from ground.transcribe import Transcriber
    from relay.audio import SAMPLE_RATE, load_audio
    from relay.wire import decode_bundle

    console = Console(width=150)
    norm = EnglishTextNormalizer()
    voices = args.voice or DEFAULT_VOICES
    clips = sorted((DATA / "ljspeech").glob("*.flac")) + [DATA / "pyannote" / "sample.wav"]
    folder = Path(tempfile.mkdtemp(prefix="rehydration-"))
    tiny, diarizer = Transcriber("tiny.en"), Diarizer()
    for clip in track(clips, description="encoding", console=console):
        result = encode_file(clip, tiny, diarizer=diarizer if clip.suffix == ".wav" else None)
        (folder / f"{clip.stem}.bundle").write_bytes(result.data)
    listener = Transcriber("base")

    rows = []
    for voice in voices:
        console.print(f"speaking with {voice}…")
        command = [sys.executable, __file__, "--worker", voice, str(folder)]
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode != 0:
            console.print(f"[red]{voice}: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'failed'}")
            continue
        figures = json.loads(proc.stdout.strip().splitlines()[-1])
        refs, heard, errors = [], [], []
        for path in sorted(folder.glob("*.bundle")):
            bundle = decode_bundle(path.read_bytes())
            audio = load_audio(folder / f"{path.stem}.{voice.replace(':', '_')}.wav")
            back = listener.transcribe(audio)
            refs.append(norm(bundle.text()))
            heard.append(norm(" ".join(s.text for s in back.segments)))
            errors.append(len(audio) / SAMPLE_RATE / bundle.source.duration - 1)
        figures |= {"dwer": jiwer.wer(refs, heard), "max_duration_error": max(errors, key=abs),
                    "mean_duration_error": sum(errors) / len(errors)}
        rows.append(figures)

    table = Table("voice", "RTF", "peak RSS MB", "dWER (base)", "duration error, mean / worst",
                  title="rehydration, 16 LJSpeech clips + the 30 s sample call, 2 cores")
    for r in rows:
        table.add_row(r["voice"], f"{r['rtf']:.3f}", f"{r['peak_rss_mb']:.0f}", f"{r['dwer']:.1%}",
                      f"{r['mean_duration_error']:+.1%} / {r['max_duration_error']:+.1%}")
    console.print(table)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()

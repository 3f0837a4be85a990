#!/usr/bin/env python3
"""Benchmark rehydration: speed, memory, intelligibility, timing, resemblance.

The ground encodes once with Whisper base: the 16 LJSpeech clips, and the
two-speaker pyannote files (sample, dev00, dev01, trn03) with diarization
(told there are two speakers, as an operator who knows the call would) and
voice profiles. dWER is the rehydrated speech, transcribed by the same
Whisper base, against the ground's transcript of the original.

Two parts, each in its own process so its peak RSS is its own:

* one voice per engine speaks every bundle: RTF, peak RSS, time to the
  first phrase (when playback can start), dWER, duration error;
* the edge's cast on the two-speaker files: each speaker gets a voice from
  the voice bank (jointly, with pitch matching), as ``relay decode`` does.
  Also reported: distinctness (each rehydrated speaker's embedding is
  nearest its own assigned voice among the file's voices) and how far each
  speaker's rehydrated median pitch is from their profile's, in semitones.

    .venv/bin/python benchmarks/rehydration.py [--voice KEY ...] [--no-cast]
                                               [--json out.json] [--plot docs/figures/rehydration.png]

Timings are of this machine; tests assert quality, never speed.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = ROOT.parent / "shared" / "data"
DEFAULT_VOICES = ["piper:en_US-joe-medium", "kokoro:jm_kumo", "espeak:en-us+m3"]
TWO_SPEAKER = ["sample", "dev00", "dev01", "trn03"]
CAST = "cast"


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


def _wav_name(stem: str, voice: str) -> str:
    return f"{stem}.{voice.replace(':', '_')}.wav"


def worker(voice: str, folder: Path) -> None:
    """Speak every bundle in ``folder`` (``voice`` or, for ``cast``, the
    two-speaker ones with a cast); print figures as JSON, write WAVs and,
    for a cast, which voice spoke which span."""

    from edge.assign import AssignmentStore
    from edge.cast import cast, resolve_speakers
    from edge.rehydrate import mix, output_rate, rehydrate
    from relay.audio.io import write_wav
    from relay.format.wire import decode_bundle
    from relay.profiles import ProfileStore
    from relay.voice.catalog import Catalog
    from relay.voice.voicebank import VoiceBank

    t0 = time.perf_counter()
    catalog = Catalog()
    engine = None if voice == CAST else catalog.load(voice)
    load_s = time.perf_counter() - t0
    tts_s = speech_s = 0.0
    first: list[float] = []
    bundles = sorted(folder.glob("*.bundle"))
    if voice == CAST:
        bundles = [p for p in bundles if p.stem in TWO_SPEAKER]
        bank, store = VoiceBank(catalog), AssignmentStore(folder / "edge.db")
        profiles = ProfileStore(folder / "edge.db")  # what the edge has learnt from earlier bundles
    for path in bundles:
        bundle = decode_bundle(path.read_bytes(), str(path))
        prosody, spans = {}, []
        if voice == CAST:
            chosen = cast(resolve_speakers(bundle, profiles).profiles, catalog, bank, store)
            voices, prosody = chosen.voices, chosen.prosody
            spans_doc = {"choices": {str(c.speaker): c.voice for c in chosen.choices}}
        else:
            voices = engine
        rate = output_rate(voices)
        t = time.perf_counter()
        parts = []
        for part in rehydrate(bundle, voices, prosody):
            if not parts:
                first.append(time.perf_counter() - t)
            parts.append(part)
        tts_s += time.perf_counter() - t
        audio = mix(parts, bundle.source.duration, rate)
        spans = [[p.segment.speaker, p.start, p.end] for p in parts]
        speech_s += len(audio) / rate
        write_wav(folder / _wav_name(path.stem, voice), audio, rate)
        if voice == CAST:
            (folder / f"{path.stem}.cast.json").write_text(json.dumps(spans_doc | {"spans": spans}))
    print(json.dumps({
        "voice": voice, "load_s": load_s, "rtf": tts_s / speech_s, "peak_rss_mb": peak_rss_mb(),
        "first_phrase_s": statistics.median(first), "first_phrase_max_s": max(first),
    }))


def _speaker_figures(folder: Path, stem: str, audio, rate: int, bundle, bank, encoder) -> dict:
    """Distinctness and pitch error of one cast file."""
    import numpy as np

    from relay.audio.io import resample
    from relay.audio.pitch import pitch_stats
    from relay.voice.catalog import Catalog

    doc = json.loads((folder / f"{stem}.cast.json").read_text())
    choices = {int(k): v for k, v in doc["choices"].items()}
    catalog = Catalog()
    assigned = {s: bank.get(catalog.find(k)).embedding for s, k in choices.items()}
    distinct, pitch_err = [], []
    for speaker in choices:
        spans = [(a, b) for s, a, b in doc["spans"] if s == speaker]
        speech = np.concatenate([audio[int(a * rate) : int(b * rate)] for a, b in spans]) if spans else None
        if speech is None or len(speech) < rate:  # under a second: too little to embed
            continue
        speech16 = resample(speech, rate, 16000)
        heard = encoder.embed(speech16)
        sims = {s: float(heard @ e) for s, e in assigned.items()}
        distinct.append(max(sims, key=sims.get) == speaker)
        profile = bundle.speakers[speaker].profile
        f0, _ = pitch_stats(speech16)
        if profile is not None and f0 > 0:
            pitch_err.append(abs(12 * math.log2(f0 / profile.f0_median)))
    return {"distinct": distinct, "pitch_err": pitch_err, "voices": sorted(set(choices.values()))}


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["voice"].replace("piper:", "").replace("-medium", "") for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    panels = [("dwer", "dWER vs ASR of the original (%)", 100, 10), ("rtf", "real-time factor (2 cores)", 1, 0.3),
              ("first_phrase_s", "first phrase ready (s, median)", 1, 1.0)]
    for ax, (key, title, scale, target) in zip(axes, panels):
        ax.bar(names, [r[key] * scale for r in rows], color="#4c72b0")
        ax.axhline(target * scale, color="#c44e52", ls="--", lw=1, label="target")
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", rotation=20, labelsize=8)
    axes[0].legend(fontsize=8)
    fig.suptitle("Rehydration per voice (LJSpeech x16 + sample call; cast: 4 two-speaker pyannote files)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--voice", action="append", help="voice key (repeatable); default: one per engine")
    ap.add_argument("--no-cast", action="store_true", help="skip the per-speaker cast on the two-speaker files")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--plot", type=Path)
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

    from ground.diarize import DiarizationOptions, Diarizer
    from ground.encoder import Encoder
    from ground.transcribe import Transcriber
    from relay.audio.io import SAMPLE_RATE, load_audio
    from relay.audio.speaker_embedder import SpeakerEmbedder
    from relay.config import GroundConfig, GroundSection
    from relay.format.wire import decode_bundle
    from relay.voice.catalog import Catalog
    from relay.voice.voicebank import VoiceBank

    console = Console(width=160)
    norm = EnglishTextNormalizer()
    voices = (args.voice or DEFAULT_VOICES) + ([] if args.no_cast else [CAST])
    clips = sorted((DATA / "ljspeech").glob("*.flac")) + [DATA / "pyannote" / f"{s}.wav" for s in TWO_SPEAKER]
    folder = Path(tempfile.mkdtemp(prefix="rehydration-"))
    base, diarizer = Transcriber("base"), Diarizer()
    one = Encoder(GroundConfig(ground=GroundSection(model="base", diarize=False)), transcriber=base, store=None)
    two_ = Encoder(GroundConfig(ground=GroundSection(model="base", fit_voices=False)), transcriber=base,
                   diarizer=diarizer, store=None)
    originals: dict[str, str] = {}
    for clip in track(clips, description="encoding (Whisper base)", console=console):
        two = clip.suffix == ".wav"
        result = (two_ if two else one).encode_file(clip, speakers=DiarizationOptions(num_speakers=2) if two else None)
        (folder / f"{clip.stem}.bundle").write_bytes(result.data)
        originals[clip.stem] = norm(" ".join(s.text for s in result.transcript.segments))
    encoder = SpeakerEmbedder()
    bank = VoiceBank(Catalog())

    rows = []
    for voice in voices:
        console.print(f"speaking with {voice}…")
        command = [sys.executable, __file__, "--worker", voice, str(folder)]
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode != 0:
            console.print(f"[red]{voice}: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'failed'}")
            continue
        figures = json.loads(proc.stdout.strip().splitlines()[-1])
        refs, heard, errors, distinct, pitch_err, cast_voices = [], [], [], [], [], []
        for path in sorted(folder.glob("*.bundle")):
            wav = folder / _wav_name(path.stem, voice)
            if not wav.exists():
                continue
            bundle = decode_bundle(path.read_bytes())
            audio = load_audio(wav)
            refs.append(originals[path.stem])
            heard.append(norm(" ".join(s.text for s in base.transcribe(audio).segments)))
            errors.append(len(audio) / SAMPLE_RATE / bundle.source.duration - 1)
            if voice == CAST:
                import soundfile as sf

                raw, rate = sf.read(wav, dtype="float32")
                f = _speaker_figures(folder, path.stem, raw, rate, bundle, bank, encoder)
                distinct += f["distinct"]
                pitch_err += f["pitch_err"]
                cast_voices.append(f"{path.stem}: {', '.join(f['voices'])}")
        figures |= {"files": len(refs), "dwer": jiwer.wer(refs, heard),
                    "max_duration_error": max(errors, key=abs), "mean_duration_error": sum(errors) / len(errors)}
        if voice == CAST:
            figures |= {"distinct": f"{sum(distinct)}/{len(distinct)}",
                        "pitch_error_semitones": statistics.mean(pitch_err) if pitch_err else None,
                        "voices": cast_voices}
        rows.append(figures)

    table = Table("voice", "files", "RTF", "peak RSS MB", "first phrase s (median/max)", "dWER",
                  "duration error mean / worst", "distinct", "pitch err st",
                  title="rehydration: 16 LJSpeech clips + 4 two-speaker pyannote files, Whisper base, 2 cores")
    for r in rows:
        table.add_row(
            r["voice"], str(r["files"]), f"{r['rtf']:.3f}", f"{r['peak_rss_mb']:.0f}",
            f"{r['first_phrase_s']:.2f} / {r['first_phrase_max_s']:.2f}", f"{r['dwer']:.1%}",
            f"{r['mean_duration_error']:+.1%} / {r['max_duration_error']:+.1%}", r.get("distinct", ""),
            f"{r['pitch_error_semitones']:.1f}" if r.get("pitch_error_semitones") is not None else "",
        )
    console.print(table)
    for r in rows:
        for line in r.get("voices", []):
            console.print(f"  cast {line}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))
    if args.plot:
        plot(rows, args.plot)
        console.print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Benchmark the ground station with diarization: who spoke, as the bundle says it.

For each file of ../shared/data/pyannote (sample, dev00, dev01, trn01-04,
30 s each, RTTM references) the whole ground path runs once (levelling,
pyannote diarization with CAM++ embeddings, Whisper on the speech the VAD or
the diarizer heard, word attribution, span fitting, voice profiles, packing).
Two things are scored at collar 0 (pyannote.metrics, overlap scored), with
missed speech, false alarm and confusion apart:

* pyannote's turns (what the diarizer found), and
* the bundle's word spans (each speaker's words, same-speaker gaps up to
  0.3 s bridged): what the edge will speak, so what decides.

The files are split: TUNE were looked at word by word while the ground was
being built; TEST only ever as pooled figures; any RTTM-referenced recording
added later under ../shared/data is reported as UNSEEN (evaluation only).
MIXED: two files of one split played at once (the second 4-8 dB down, their
references joined), four people and much overlap, as in a far-field meeting
where Whisper writes one voice and drops windows: the tune mixes are made
of tune files only, the test mix of test files only.
One-voice recordings (JFK, LJSpeech joined) report the count found and the
words the bundle adds to what was said (insertions against the reference
text: hallucination); silence and noise report the words found (none is right).

    .venv/bin/python benchmarks/diarization.py [--model base] [--json out.json] [--plot der.png]
                                               [--long-minutes 45] [--no-relisten]

``--long-minutes N`` also encodes one N-minute recording made by cycling the
files (each file's speakers recur every few minutes, so a consistent
diarization gives them the same label each time): time, peak memory, count.

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
from ground.evaluate import load_rttm, score, word_attribution, word_spans  # noqa: E402
from ground.transcribe import Transcriber  # noqa: E402
from relay.audio.io import load_audio  # noqa: E402
from relay.cli import stage_bars  # noqa: E402
from relay.config import GroundConfig, GroundSection  # noqa: E402
from relay.format.wire import field_costs  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
DATA = SHARED / "pyannote"
TUNE = ["sample", "dev00", "trn01", "trn03"]
TEST = ["dev01", "trn02", "trn04"]
FILES = TUNE + TEST
# two files at once: (first, second, second's level against the first in dB, split)
MIXES = {"sample+trn03": ("sample", "trn03", -4.0, "tune"), "dev00+trn03": ("dev00", "trn03", -8.0, "tune"),
         "dev01+trn04": ("dev01", "trn04", -4.0, "test")}


def mixed(references: dict) -> tuple[dict, dict]:
    """The MIXES as audio and as joined references: ({uri: audio}, {uri: Annotation})."""
    import numpy as np
    from pyannote.core import Annotation

    audio, refs = {}, {}
    for uri, (a, b, db, _) in MIXES.items():
        x, y = load_audio(DATA / f"{a}.wav"), load_audio(DATA / f"{b}.wav")
        n = min(len(x), len(y))
        gain = np.sqrt(np.mean(x[:n] ** 2) / np.mean(y[:n] ** 2)) * 10 ** (db / 20)
        out = x[:n] + y[:n] * gain
        audio[uri] = (out / np.abs(out).max() * 0.5).astype(np.float32)
        ann = Annotation(uri=uri)
        for src in (a, b):
            for seg, _, label in references[src].itertracks(yield_label=True):
                ann[seg, f"{src}_{label}"] = f"{src}_{label}"
        refs[uri] = ann
    return audio, refs


def unseen() -> dict[str, Path]:
    """Recordings with an RTTM reference anywhere under ../shared/data that are
    not the shared seven: {uri: audio path}."""
    found: dict[str, Path] = {}
    for rttm in SHARED.rglob("*.rttm"):
        for line in rttm.read_text(encoding="utf-8", errors="replace").splitlines():
            f = line.split()
            if len(f) > 1 and f[0] == "SPEAKER" and f[1] not in FILES and f[1] not in found:
                for ext in (".wav", ".flac", ".mp3", ".ogg"):
                    if (audio := rttm.parent / f"{f[1]}{ext}").exists():
                        found[f[1]] = audio
    return found


def plot(rows0, rows5, pooled0: float, pooled5: float, path: Path) -> None:
    """DER per file: pyannote's turns (rows0) and the bundle's word spans (rows5)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = [r.uri for r in rows0] + ["pooled (7)"]
    x = np.arange(len(names))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
    ax1.bar(x - 0.2, [r.der * 100 for r in rows0] + [pooled0 * 100], 0.4, label="pyannote's turns")
    ax1.bar(x + 0.2, [r.der * 100 for r in rows5] + [pooled5 * 100], 0.4, label="bundle's word spans")
    ax1.set_xticks(x, names, rotation=30)
    ax1.set_ylabel("DER (%)")
    ax1.set_ylim(0, 105)
    ax1.set_title("DER per file, collar 0")
    ax1.legend()
    parts = {"missed": [r.missed for r in rows5], "false alarm": [r.false_alarm for r in rows5],
             "confusion": [r.confusion for r in rows5]}
    bottom = np.zeros(len(rows0))
    for label, values in parts.items():
        ax2.bar(x[:-1], values, 0.6, bottom=bottom, label=label)
        bottom += values
    ax2.set_xticks(x[:-1], names[:-1], rotation=30)
    ax2.set_ylabel("seconds (collar 0)")
    ax2.set_title("Where the word spans' errors are")
    ax2.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def _group_row(table: Table, name: str, uris: list[str], references, turns, spans, per_file) -> dict:
    """Pooled figures of one group of files, added to ``table``; returned for the JSON."""
    if not uris:
        return {}
    rows_t, turns_der = score(references, {u: turns[u] for u in uris})
    rows, spans_der = score(references, {u: spans[u] for u in uris})
    scored = sum(per_file[u]["words_scored"] for u in uris)
    right = sum(per_file[u]["word_accuracy"] * per_file[u]["words_scored"] for u in uris if per_file[u]["words_scored"])
    speech_min = sum(r.total for r in rows) / 60
    words = sum(per_file[u]["words"] for u in uris)
    missed, fa, conf = (sum(getattr(r, k) for r in rows) for k in ("missed", "false_alarm", "confusion"))
    count = sum(r.speakers == r.reference_speakers for r in rows)
    deaf = sum(1 for u in uris if per_file[u]["turn_seconds"] >= 1.0 and not per_file[u]["words"])
    table.add_row(f"[bold]{name} ({len(uris)})", f"[bold]{turns_der:.1%}", f"{sum(r.missed for r in rows_t):.1f}",
                  "", f"[bold]{spans_der:.1%}", f"{missed:.1f}", f"{fa:.1f}", f"{conf:.1f}",
                  f"{count} of {len(uris)} right", f"{right / scored:.0%} of {scored}" if scored else "-",
                  f"{words / speech_min:.0f} w/min" if speech_min else "", "")
    return {"turns_der": turns_der, "word_spans_der": spans_der, "word_accuracy": right / scored if scored else None,
            "missed_s": missed, "false_alarm_s": fa, "confusion_s": conf, "right_count": count, "files": len(uris),
            "words_per_min_of_speech": words / speech_min if speech_min else None, "files_without_words": deaf}


JFK = ("And so, my fellow Americans, ask not what your country can do for you, "
       "ask what you can do for your country.")


def one_speaker(ground: Encoder) -> dict[str, dict]:
    """One voice (JFK; the LJSpeech clips joined): speakers found, and words
    inserted against the reference text (what a second listen could invent).
    Silence and noise (30 s each): words found."""
    import jiwer
    import numpy as np
    from whisper_normalizer.english import EnglishTextNormalizer

    normalize = EnglishTextNormalizer()
    out: dict[str, dict] = {}
    cases: dict[str, tuple] = {}
    jfk = SHARED / "whisper" / "jfk.flac"
    if jfk.exists():
        cases["jfk"] = (load_audio(jfk), JFK)
    clips = sorted((SHARED / "ljspeech").glob("*.flac"))
    if clips:
        texts = dict(line.split("|", 1) for line in (SHARED / "ljspeech" / "transcripts.psv").read_text().splitlines()
                     if "|" in line)
        cases["ljspeech"] = (np.concatenate([load_audio(c) for c in clips]), " ".join(texts[c.stem] for c in clips))
    rng = np.random.default_rng(0)
    cases["silence"] = (np.zeros(30 * 16000, np.float32), "")
    noise = np.convolve(rng.standard_normal(30 * 16000), np.ones(8) / 8, mode="same") * 0.03
    cases["noise"] = (noise.astype(np.float32), "")
    for name, (audio, text) in cases.items():
        result = ground.encode(audio, name)
        said = normalize(result.bundle.text())
        row = {"speakers": len(result.bundle.speakers) if result.bundle.segments else 0,
               "words": len(said.split())}
        if text:
            m = jiwer.process_words(normalize(text), said)
            row |= {"wer": m.wer, "insertions": m.insertions, "reference_words": len(normalize(text).split())}
        out[name] = row
    return out


def _split(uri: str) -> str:
    if uri in MIXES:
        return f"mixed {MIXES[uri][3]}"
    return "tune" if uri in TUNE else "test" if uri in TEST else "unseen"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="base", help="Whisper model for the RTF figure (default: base)")
    ap.add_argument("--beam-size", type=int, default=5)
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--plot", type=Path, help="write a PNG of DER per file here")
    ap.add_argument("--long-minutes", type=float, default=0, help="also encode a recording this long")
    ap.add_argument("--no-relisten", action="store_true", help="without the second listen (ground.relisten)")
    ap.add_argument("--no-mixes", action="store_true", help="the recordings as they are only")
    args = ap.parse_args()
    console = Console(width=max(Console().width, 150))

    t0 = time.perf_counter()
    transcriber = Transcriber(args.model, cpu_threads=0)
    diarizer = Diarizer()
    load_s = time.perf_counter() - t0
    extra = unseen()
    references = load_rttm(sorted(SHARED.rglob("*.rttm")))  # the shared seven and any added later
    section = GroundSection(model=args.model, beam_size=args.beam_size, fit_voices=False, relisten=not args.no_relisten)
    ground = Encoder(GroundConfig(ground=section), transcriber=transcriber, diarizer=diarizer, store=None)

    turns, spans, per_file = {}, {}, {}
    sources = {uri: DATA / f"{uri}.wav" for uri in FILES} | extra
    mixes, mixed_refs = ({}, {}) if args.no_mixes else mixed(references)
    references |= mixed_refs
    for uri in track([*sources, *mixes], description="encoding", console=console):
        audio = mixes[uri] if uri in mixes else load_audio(sources[uri])
        result = ground.encode(audio, uri)
        assert result.diarization is not None
        turns[uri] = result.diarization
        spans[uri] = word_spans(result.bundle.segments, result.duration)
        costs = field_costs(result.bundle)
        accuracy, scored = word_attribution(result.bundle.segments, references[uri])
        per_file[uri] = {
            "word_accuracy": accuracy, "words_scored": scored, "duration": result.duration,
            "timings": result.timings, "rtf": result.rtf, "bytes": len(result.data),
            "profile_bytes": costs.get("profiles", 0), "words": sum(len(s.words) for s in result.bundle.segments),
            "turn_seconds": sum(t.duration for t in result.diarization.turns),
        }
    rows_t, _ = score(references, turns)
    rows_s, pooled_s = score(references, spans)
    rows_s5, pooled_s5 = score(references, spans, collar=0.5)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    table = Table(
        "file", "turns DER", "missed s", "conf. s", "words DER", "missed s", "FA s", "conf. s",
        "speakers turns/words (ref)", "words ok", "RTF / words", "bytes",
        title=f"Who spoke: pyannote's turns and the bundle's word spans, collar 0 (Whisper {args.model})",
    )
    for rt, rs in zip(rows_t, rows_s):
        f = per_file[rt.uri]
        group = _split(rt.uri)
        table.add_row(
            f"{rt.uri} [dim]{group}", f"{rt.der:.1%}", f"{rt.missed:.2f}", f"{rt.confusion:.2f}", f"{rs.der:.1%}",
            f"{rs.missed:.2f}", f"{rs.false_alarm:.2f}", f"{rs.confusion:.2f}",
            f"{rt.speakers}/{rs.speakers} ({rt.reference_speakers})",
            f"{f['word_accuracy']:.0%} of {f['words_scored']}" if f["words_scored"] else "-",
            f"{f['rtf']:.3f} / {f['words']}",
            str(f["bytes"]),
        )
    groups = {"tune": TUNE, "test": TEST, "shared": FILES, "unseen": list(extra),
              "mixed tune": [u for u in mixes if MIXES[u][3] == "tune"],
              "mixed test": [u for u in mixes if MIXES[u][3] == "test"]}
    pooled = {name: _group_row(table, name, uris, references, turns, spans, per_file) for name, uris in groups.items()}
    console.print(table)
    duration = sum(f["duration"] for f in per_file.values())
    total_s = sum(sum(f["timings"].values()) for f in per_file.values())
    diar_s = sum(f["timings"]["diarization"] for f in per_file.values())
    right_count = sum(1 for r in rows_s if r.speakers == r.reference_speakers)
    console.print(
        f"{duration:.0f} s of audio; ground RTF {total_s / duration:.3f} (diarization {diar_s / duration:.3f}); "
        f"models loaded in {load_s:.1f} s; peak RSS {peak_mb:.0f} MB; word spans at collar 0.5 s: {pooled_s5:.1%}; "
        f"right speaker count in the words: {right_count} of {len(rows_s)}; "
        f"files without words: {sum(1 for f in per_file.values() if not f['words'])}"
    )
    singles = one_speaker(ground)
    console.print("one voice, silence, noise: " + "; ".join(
        f"{k}: {v['speakers']} speaker(s), {v['words']} words"
        + (f", {v['insertions']} inserted of {v['reference_words']} (WER {v['wer']:.1%})" if "wer" in v else "")
        for k, v in singles.items()))
    summary = {
        "model": args.model, "pooled": pooled, "word_spans_der_collar05": pooled_s5,
        "rtf_ground": total_s / duration, "rtf_diarization": diar_s / duration, "peak_rss_mb": peak_mb,
        "one_speaker": singles, "right_count": right_count, "relisten": not args.no_relisten,
    }
    if args.long_minutes:
        summary["long"] = long_run(ground, args.long_minutes, console)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        files = {rt.uri: {**per_file[rt.uri], "turns_der": rt.der, "turns_missed": rt.missed,
                          "turns_confusion": rt.confusion, "word_spans_der": rs.der, "word_spans_missed": rs.missed,
                          "word_spans_false_alarm": rs.false_alarm, "word_spans_confusion": rs.confusion,
                          "speakers_turns": rt.speakers, "speakers_words": rs.speakers,
                          "reference_speakers": rt.reference_speakers}
                 for rt, rs in zip(rows_t, rows_s)}
        args.json.write_text(json.dumps({"summary": summary, "files": files}, indent=2))
    if args.plot:
        plot(rows_t, rows_s, pooled["shared"]["turns_der"], pooled["shared"]["word_spans_der"], args.plot)
        console.print(f"plot: {args.plot}")


def long_run(ground: Encoder, minutes: float, console: Console) -> dict:
    """One long recording made by cycling the shared files: speed, memory, and
    whether each file's speakers get the same label every time they recur."""
    import numpy as np
    clips = [load_audio(DATA / f"{uri}.wav") for uri in FILES]
    need = int(minutes * 60 * 16000)
    pieces, placed, at = [], [], 0
    while at < need:
        i = len(placed) % len(clips)
        pieces.append(clips[i])
        placed.append((FILES[i], at / 16000, (at + len(clips[i])) / 16000))
        at += len(clips[i])
    long_audio = np.concatenate(pieces)[:need]
    del pieces, clips  # what the benchmark itself holds should not count as the ground's memory
    with stage_bars(console) as progress:
        result = ground.encode(long_audio, "long", progress=progress)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # consistency: the speaker holding most of each file's copy, copy by copy
    assert result.diarization is not None
    labels: dict[str, list[int]] = {}
    for uri, a, b in placed:
        if b > minutes * 60:
            break
        time_by = {}
        for t in result.diarization.turns:
            o = min(b, t.end) - max(a, t.start)
            if o > 0:
                time_by[t.speaker] = time_by.get(t.speaker, 0.0) + o
        if time_by:
            labels.setdefault(uri, []).append(max(time_by, key=time_by.__getitem__))
    consistent = {uri: max(v.count(x) for x in set(v)) / len(v) for uri, v in labels.items()}
    out = {
        "minutes": minutes, "bytes": len(result.data), "bits_per_second": result.bits_per_second,
        "rtf_ground": result.rtf, "rtf_diarization": result.timings["diarization"] / result.duration,
        "speakers": len(result.bundle.speakers), "peak_rss_mb": peak_mb, "consistency": consistent,
    }
    console.print(
        f"{minutes:g}-minute recording: {len(result.data):,} bytes ({result.bits_per_second:.0f} bit/s), "
        f"{len(result.bundle.speakers)} speakers, ground RTF {result.rtf:.3f} "
        f"(diarization {out['rtf_diarization']:.3f}), peak RSS {peak_mb:.0f} MB; main speaker of each file the same "
        f"label on every recurrence: " + ", ".join(f"{k} {v:.0%}" for k, v in consistent.items())
    )
    return out


if __name__ == "__main__":
    main()

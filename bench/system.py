"""Every tier on the same recording, side by side (``relay bench``).

One ASR pass and one diarization (the ground's work is the same for every
tier: only what travels differs), then per tier: pack the bundle, read it back
from its bytes, rehydrate it as the edge would, and listen to the result with
Whisper and pyannote again. The figures per tier:

* bytes, bit/s, and how many times smaller than the input file and than the
  same duration of AAC at 64 kbit/s;
* WER of the rehydrated audio against a reference transcript (``--ref``),
  and dWER against what the listener hears in the original;
* DER of the rehydrated audio's diarization against the RTTM (``--rttm``) or,
  without one, against the original's diarization;
* speaker similarity: the CAM++ embedding of each speaker's stretches in the
  original against the same stretches of the rehydrated audio (the encoder
  that makes the voice profiles), averaged over speakers; per speaker also
  the independent judge (Resemblyzer), normalised where the recording has
  other speakers to stand for strangers (``likeness`` in the JSON);
* ground and edge real-time factors and the process's peak RSS while the tier
  ran (sampled every 50 ms).

It writes one JSON file and two plots (bit rate against dWER per tier; the
speaker timeline of the original against each tier's rehydration) and prints
the table, as Markdown with ``--markdown`` (the README's table comes from it).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from relay.audio.codecs import CodecUnavailable, audio_tiers, get_codec
from relay.audio.io import SAMPLE_RATE, resample
from relay.config import Codecs

AAC_BPS = 64000
TEXT_TIERS = ["text", "hybrid"]


@dataclass(slots=True)
class TierFigures:
    """One row of the table."""

    tier: str
    bytes: int
    bits_per_second: float
    ratio_input: float
    ratio_aac64: float
    wer: float | None
    dwer: float | None
    der: float | None
    similarity: float | None
    rtf_ground: float
    rtf_edge: float
    peak_rss_mb: float
    clips: int = 0
    coded_seconds: float = 0.0
    timeline: list[tuple[float, float, str]] = field(default_factory=list)  # rehydrated diarization, mapped labels
    cast: str = ""  # who spoke whom (edge.player.Performance.described), out-of-reach voices flagged
    likeness: list[SpeakerLikeness] = field(default_factory=list)


@dataclass(slots=True)
class SpeakerLikeness:
    """How much one speaker's rehydration sounds like them (see :func:`_likeness`)."""

    speaker: str
    campplus: float
    judge: float | None = None
    judge_own: float | None = None  # the speaker's two halves of real speech
    judge_stranger: float | None = None  # the recording's other speakers
    normalised: float | None = None


@dataclass(slots=True)
class BenchReport:
    audio: str
    duration: float
    input_bytes: int
    model: str
    listener: str
    reference_text: bool
    rttm: str | None
    reference_timeline: list[tuple[float, float, str]]
    rows: list[TierFigures]
    skipped: dict[str, str]  # tier -> why it could not run


def _vm(field_name: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


@contextmanager
def rss_peak() -> Iterator[list[float]]:
    """The highest resident set size (MB) seen while the block runs."""
    peak = [_vm("VmRSS")]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            peak[0] = max(peak[0], _vm("VmRSS"))

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()
        peak[0] = max(peak[0], _vm("VmRSS"))


def available_tiers(codecs: Codecs) -> tuple[list[str], dict[str, str]]:
    """Text tiers, then every audio tier this machine can run (cheapest first)."""
    ok, skipped = list(TEXT_TIERS), {}
    for name in audio_tiers():
        try:
            get_codec(name, codecs)
            ok.append(name)
        except CodecUnavailable as exc:
            skipped[name] = str(exc)
    return ok, skipped


def _words(transcript) -> str:
    return " ".join(s.text for s in transcript.segments)


def _own_stretches(reference, label: str, length: int) -> list[tuple[int, int]]:
    """Sample ranges where ``label`` talks alone (inside ``length`` samples)."""
    others = reference.subset([lab for lab in reference.labels() if lab != label]).get_timeline().support()
    out = []
    for seg in reference.label_timeline(label).support():
        for a, b in _minus(seg.start, seg.end, [(o.start, o.end) for o in others]):
            lo, hi = int(a * SAMPLE_RATE), min(length, int(b * SAMPLE_RATE))
            if hi > lo:
                out.append((lo, hi))
    return out


def _likeness(encoder, judge, original: np.ndarray, rehydrated: np.ndarray, reference) -> list[SpeakerLikeness]:
    """Per speaker with 2 s alone or more: CAM++ and the independent judge
    (Resemblyzer, never used by the edge) between the original and the
    rehydrated speech over the same stretches; the judge normalised between
    the recording's other speakers (0) and the speaker's own other half (1)."""
    own: dict[str, list[tuple[int, int]]] = {}
    for label in reference.labels():
        spans = _own_stretches(reference, label, min(len(original), len(rehydrated)))
        if sum(b - a for a, b in spans) >= 2 * SAMPLE_RATE:
            own[label] = spans

    def judged(audio: np.ndarray) -> np.ndarray | None:
        return None if judge is None else judge.embed_utterance(audio.astype(np.float32))

    originals = {label: np.concatenate([original[a:b] for a, b in spans]) for label, spans in own.items()}
    judge_real = {label: judged(x) for label, x in originals.items()}
    out = []
    for label, spans in own.items():
        real, heard = originals[label], np.concatenate([rehydrated[a:b] for a, b in spans])
        cam = float(encoder.embed(real) @ encoder.embed(heard))
        j = judge_real[label]
        if j is None:
            out.append(SpeakerLikeness(label, cam))
            continue
        sim = float(j @ judged(heard))
        half = len(spans) // 2
        own_sim = None
        if half and len(spans) - half:
            first = judged(np.concatenate([original[a:b] for a, b in spans[:half]]))
            second = judged(np.concatenate([original[a:b] for a, b in spans[half:]]))
            own_sim = float(first @ second)  # type: ignore[operator]
        strangers = [float(j @ v) for other, v in judge_real.items() if other != label and v is not None]
        stranger = float(np.mean(strangers)) if strangers else None
        norm = None
        if own_sim is not None and stranger is not None and own_sim > stranger:
            norm = (sim - stranger) / (own_sim - stranger)
        out.append(SpeakerLikeness(label, cam, sim, own_sim, stranger, norm))
    return out


def _judge():
    """Resemblyzer's encoder (requirements/weights.txt), or None where it is not installed."""
    try:
        from resemblyzer import VoiceEncoder
    except ImportError:
        return None
    return VoiceEncoder("cpu", verbose=False)


def _minus(start: float, end: float, holes: list[tuple[float, float]]) -> list[tuple[float, float]]:
    pieces = [(start, end)]
    for s, e in holes:
        pieces = [p for a, b in pieces for p in ((a, min(b, s)), (max(a, e), b)) if p[1] - p[0] > 0.05]
    return pieces


def _timeline(annotation, mapping: dict | None = None) -> list[tuple[float, float, str]]:
    mapping = mapping or {}
    return [
        (round(s.start, 2), round(s.end, 2), str(mapping.get(label, label)))
        for s, _, label in annotation.itertracks(yield_label=True)
    ]


def run_bench(
    audio_path: Path,
    reference_text: str | None = None,
    rttm: Path | None = None,
    model: str = "tiny.en",
    listener_model: str = "base",
    codecs: Codecs | None = None,
    voice: str | None = None,
    speakers=None,
    only: list[str] | None = None,
    progress=None,
) -> BenchReport:
    """Run every tier; ``progress(description, advance)`` is told of each step."""
    import tempfile

    import jiwer
    from whisper_normalizer.english import EnglishTextNormalizer

    from edge.player import Player
    from edge.rehydrate import render
    from ground.diarize import Diarizer
    from ground.encoder import Encoder
    from ground.evaluate import load_rttm, to_annotation
    from ground.tiers import apply_tier
    from ground.transcribe import Transcriber
    from relay.audio.io import load_audio
    from relay.audio.speaker_embedder import SpeakerEmbedder
    from relay.config import EdgeConfig, EdgeSection, GroundConfig, GroundSection, Tiers
    from relay.format.wire import decode_bundle, encode_bundle

    codecs = codecs or Codecs()
    say = progress or (lambda text, advance=0: None)
    normalize = EnglishTextNormalizer()
    audio = load_audio(audio_path)
    duration = len(audio) / SAMPLE_RATE
    input_bytes = audio_path.stat().st_size
    names, skipped = available_tiers(codecs)
    if only:
        names = [n for n in names if n in only]

    say("loading models")
    transcriber = Transcriber(model)
    listener = transcriber if listener_model == model else Transcriber(listener_model)
    diarizer = Diarizer()
    encoder = SpeakerEmbedder()
    judge = _judge()
    ground = Encoder(GroundConfig(ground=GroundSection(model=model), codecs=codecs), transcriber=transcriber,
                     diarizer=diarizer, store=None)  # every speaker new: the bench never touches the station's stores
    scratch = tempfile.TemporaryDirectory(prefix="relay-bench-")
    player = Player(EdgeConfig(edge=EdgeSection(state_dir=Path(scratch.name), voice=voice or "auto", play=False),
                               codecs=codecs))

    say("ground: transcribing and diarizing the original")
    with rss_peak() as ground_peak:
        base = ground.encode(audio, audio_path.stem, input_bytes, speakers)
    # a voice fitted to each speaker is the daemon's background work, after the bundle is queued: not in the RTF
    shared_s = sum(v for k, v in base.timings.items() if k not in ("pack", "voice fitting"))  # as EncodeResult.rtf
    if "voice fitting" in base.timings:
        say(f"ground: voices fitted to {len(base.fits)} speaker(s) in {base.timings['voice fitting']:.0f} s")
    heard_original = normalize(_words(listener.transcribe(audio)))
    if rttm is not None:
        refs = load_rttm([rttm])
        reference = refs.get(audio_path.stem) or next(iter(refs.values()))
    else:
        assert base.diarization is not None  # the bench always diarizes
        reference = to_annotation(base.diarization, audio_path.stem)

    from pyannote.core import Segment, Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate

    def der_of(diarization) -> tuple[float, list]:
        metric = DiarizationErrorRate(collar=0.0, skip_overlap=False)
        hyp = to_annotation(diarization, audio_path.stem)
        value = metric(reference, hyp, uem=Timeline([Segment(0.0, duration)]))
        return float(value), _timeline(hyp, metric.optimal_mapping(reference, hyp))

    rows: list[TierFigures] = []
    ref_norm = normalize(reference_text) if reference_text else None
    der0, timeline0 = der_of(base.diarization)
    rows.append(TierFigures(
        "original", input_bytes, input_bytes * 8 / duration, 1.0, duration * AAC_BPS / 8 / input_bytes,
        jiwer.wer(ref_norm, heard_original) if ref_norm else None, 0.0, der0, 1.0,
        shared_s / duration, 0.0, ground_peak[0], timeline=timeline0,
    ))
    for name in names:
        say(f"{name}: packing")
        with rss_peak() as peak:
            t0 = time.perf_counter()
            bundle = apply_tier(base.bundle, audio, base.transcript, name, Tiers(), codecs)
            data = encode_bundle(bundle)
            pack_s = time.perf_counter() - t0
            received = decode_bundle(data, name)
            say(f"{name}: rehydrating")
            performance = player.prepare(received)  # as the edge would: the same voices every time
            t0 = time.perf_counter()
            out, _ = render(received, performance.voices, performance.prosody, codecs)
            edge_s = time.perf_counter() - t0
        heard_audio = resample(out, performance.rate, SAMPLE_RATE)[: len(audio)]
        heard_audio = np.pad(heard_audio, (0, len(audio) - len(heard_audio)))
        say(f"{name}: listening")
        heard = normalize(_words(listener.transcribe(heard_audio)))
        diar = diarizer(heard_audio, speakers)
        der, timeline = der_of(diar)
        likeness = _likeness(encoder, judge, audio, heard_audio, reference)  # "spk sim" is its CAM++ mean
        rows.append(TierFigures(
            name, len(data), len(data) * 8 / duration, input_bytes / len(data), duration * AAC_BPS / 8 / len(data),
            jiwer.wer(ref_norm, heard) if ref_norm else None,
            jiwer.wer(heard_original, heard) if heard_original else None,
            der, float(np.mean([x.campplus for x in likeness])) if likeness else None,
            (shared_s + pack_s) / duration, edge_s / duration, peak[0],
            len(received.clips), sum(c.duration for c in received.clips), timeline,
            performance.described() if performance.choices else "", likeness,
        ))
        say(f"{name}: done", 1)
    scratch.cleanup()
    return BenchReport(
        str(audio_path), duration, input_bytes, model, listener_model, reference_text is not None,
        str(rttm) if rttm else None, _timeline(reference), rows, skipped,
    )


# --- output --------------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def table_rows(report: BenchReport) -> tuple[list[str], list[list[str]]]:
    head = ["tier", "bytes", "bit/s", "x input", "x AAC-64k", "WER", "dWER", "DER", "spk sim", "RTF ground",
            "RTF edge", "peak RSS MB"]
    rows = []
    for r in report.rows:
        rows.append([
            r.tier, f"{r.bytes:,}", f"{r.bits_per_second:,.0f}", f"{r.ratio_input:,.0f}", f"{r.ratio_aac64:,.1f}",
            _pct(r.wer), _pct(r.dwer), _pct(r.der), "-" if r.similarity is None else f"{r.similarity:.2f}",
            f"{r.rtf_ground:.3f}", f"{r.rtf_edge:.3f}", f"{r.peak_rss_mb:.0f}",
        ])
    return head, rows


def markdown(report: BenchReport) -> str:
    head, rows = table_rows(report)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def write_json(report: BenchReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(report), indent=2))


def plot(report: BenchReport, rate_png: Path, timeline_png: Path) -> None:
    """Bit rate against dWER per tier; speaker timelines, original against rehydrated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(r, r.dwer) for r in report.rows if r.dwer is not None]
    fig, ax = plt.subplots(figsize=(8, 5))
    for r, dwer in rows:
        family = r.tier.split("-")[0]
        marker = {"text": "o", "hybrid": "o", "original": "*"}.get(family, "s")
        ax.scatter(r.bits_per_second, 100 * dwer, marker=marker, s=60)
        ax.annotate(r.tier, (r.bits_per_second, 100 * dwer), textcoords="offset points", xytext=(5, 4),
                    fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("bundle bit rate (bit/s, log)")
    ax.set_ylabel("dWER vs the original (%)")
    ax.set_title(f"{Path(report.audio).name}: what each tier costs and keeps")
    ax.grid(True, which="both", alpha=0.3)
    rate_png.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(rate_png, dpi=120)
    plt.close(fig)

    lanes = [("reference", report.reference_timeline)] + [(r.tier, r.timeline) for r in report.rows]
    labels = sorted({lab for _, tl in lanes for *_, lab in tl})
    colours = {lab: plt.get_cmap("tab10")(i % 10) for i, lab in enumerate(labels)}
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(lanes) + 1.2))
    for y, (_, tl) in enumerate(lanes):
        for start, end, lab in tl:
            ax.broken_barh([(start, end - start)], (y - 0.35, 0.7), color=colours[lab])
    ax.set_yticks(range(len(lanes)), [name for name, _ in lanes])
    ax.invert_yaxis()
    ax.set_xlim(0, report.duration)
    ax.set_xlabel("seconds")
    ax.set_title("who speaks when: reference, the original's diarization, and each rehydration")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[lab]) for lab in labels]
    ax.legend(handles, labels, loc="upper right", fontsize=7, ncol=min(len(labels), 6))
    fig.tight_layout()
    fig.savefig(timeline_png, dpi=120)
    plt.close(fig)

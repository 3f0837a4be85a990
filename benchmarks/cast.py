"""The edge's cast on every two-speaker recording: does each speaker sound
like themselves, unlike the other, and still say the same words?

Each two-speaker pyannote file (sample, dev00, dev01, trn03) goes through the
real ground (Whisper base; pyannote told there are two speakers, as an
operator who knows the call would; voice profiles) and the real edge (voice
bank, joint cast, pitch, range and colour); then:

* **dWER**: Whisper base on the rehydrated audio against the ground's
  transcript, per file and pooled; and on the 16 LJSpeech clips, each a
  bundle with the reader's profile;
* **heard as two**: pyannote (not told the count) on the rehydrated audio,
  its speaker count and DER against the reference turns; beside it the DER
  of the bundle's own word spans (who-said-which-word as the edge receives
  it: the rehydration cannot do better) and of pyannote on the original;
* **likeness** per bundle speaker, by CAM++ (the encoder that chose) and by
  Resemblyzer (never used to choose): the speaker's rehydrated speech against
  the second half of their original speech, normalised so 1 is their own
  first half and 0 a stranger: the call's other speaker (same channel, the
  hardest stranger) and, beside it, *broad* strangers (every speaker of the
  other recordings and the LJSpeech reader).

``--fit`` adds a cast of voices fitted at the ground (ground.fit_voice) from
each speaker's first phrases; its likeness is measured on the phrases after
those only (sentences not used for fitting). ``--packaged`` casts as an edge
without the Kokoro v1.0 style set does (five Japanese styles, Piper, espeak-ng).

    .venv/bin/python benchmarks/cast.py [--fit] [--packaged] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"
TWO_SPEAKER = ["sample", "dev00", "dev01", "trn03"]
MIN_SECONDS = 2.0  # a speaker with less rehydrated or original speech is not judged


def _cut(audio: np.ndarray, spans, rate: int = 16000) -> np.ndarray:
    pieces = [audio[int(a * rate):int(b * rate)] for a, b in spans]
    return np.concatenate(pieces) if pieces else np.zeros(0, np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fit", action="store_true", help="also cast voices fitted at the ground (minutes)")
    ap.add_argument("--packaged", action="store_true", help="cast without the Kokoro v1.0 style set")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    if args.packaged:
        os.environ["SPEECH_RELAY_KOKORO_STYLES"] = str(Path(tempfile.gettempdir()) / "no-such-style-set.npz")
    import jiwer
    from resemblyzer import VoiceEncoder
    from whisper_normalizer.english import EnglishTextNormalizer

    from edge.assign import AssignmentStore
    from edge.cast import cast
    from edge.rehydrate import render
    from ground.diarize import DiarizationOptions, Diarizer
    from ground.encoder import Encoder
    from ground.evaluate import load_rttm, score, word_spans
    from ground.transcribe import Transcriber
    from relay.audio.io import SAMPLE_RATE, load_audio, resample
    from relay.audio.speaker_embedder import SpeakerEmbedder
    from relay.config import GroundConfig, GroundSection
    from relay.voice.catalog import Catalog
    from relay.voice.voicebank import VoiceBank

    norm = EnglishTextNormalizer()
    base, diarizer, campplus = Transcriber("base"), Diarizer(), SpeakerEmbedder()
    judge = VoiceEncoder("cpu", verbose=False)
    refs = load_rttm([DATA / "pyannote" / n for n in ("sample.rttm", "debug.development.rttm", "debug.train.rttm")])
    ground = Encoder(GroundConfig(ground=GroundSection(model="base", fit_voices=False)), transcriber=base,
                     diarizer=diarizer, store=None)
    catalog = Catalog()
    print(f"kokoro: {catalog.status('kokoro').detail}")
    bank = VoiceBank(catalog, encoder=campplus)
    fitter = None
    if args.fit:
        from ground.fit_voice import VoiceFitter, _sentences

        fitter = VoiceFitter(campplus)

    def embed(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return campplus.embed(audio), judge.embed_utterance(audio.astype(np.float32))

    # every file's speakers, as the ground hears them
    files = {}
    for uri in TWO_SPEAKER:
        audio = load_audio(DATA / "pyannote" / f"{uri}.wav")
        res = ground.encode_file(DATA / "pyannote" / f"{uri}.wav", speakers=DiarizationOptions(num_speakers=2))
        files[uri] = (audio, res)
    originals = {}  # (uri, speaker) -> (first half, second half) embeddings, and the whole
    person = {}  # (uri, speaker) -> the reference speaker most of their phrases belong to
    for uri, (audio, res) in files.items():
        for s in range(len(res.bundle.speakers)):
            spans = [(g.start, g.end) for g in res.bundle.segments if g.speaker == s]
            from pyannote.core import Segment, Timeline

            mine = Timeline([Segment(a, b) for a, b in spans]).support()
            overlap = {lab: refs[uri].label_timeline(lab).crop(mine).duration() for lab in refs[uri].labels()}
            person[(uri, s)] = max(overlap, key=overlap.__getitem__) if overlap else "?"
            half = len(spans) // 2
            first, second = _cut(audio, spans[:half]), _cut(audio, spans[half:])
            if min(len(first), len(second)) >= MIN_SECONDS * SAMPLE_RATE:
                originals[(uri, s)] = (embed(first), embed(second), embed(_cut(audio, spans)))
    lj = np.concatenate([load_audio(c) for c in sorted((DATA / "ljspeech").glob("*.flac"))])
    lj_embedded = embed(lj)

    rows, hyps, pooled_ref, pooled_hyp, table = [], {}, [], [], []
    for uri, (_audio, res) in files.items():
        bundle = res.bundle
        profiles = [s.profile for s in bundle.speakers]
        variants = {"cast": profiles}
        held: dict[int, set[str]] = {}
        if fitter is not None:
            fitted = []
            for s, p in enumerate(profiles):
                texts = [g.text for g in bundle.segments if g.speaker == s]
                if p is None:
                    fitted.append(p)
                    continue
                fit = fitter.fit(p, texts)
                held[s] = set(_sentences(texts)[0])
                print(f"{uri} {bundle.speakers[s].label}: fitted {fit.voice.describe()} ({fit.seconds:.0f} s; "
                      f"held out {fit.held_out:.3f}, best style {fit.stock} {fit.stock_held_out:.3f})")
                fitted.append(p.with_fitted(fit.voice))
            variants["fit"] = fitted
        for label, profs in variants.items():
            chosen = cast(profs, catalog, bank, AssignmentStore(Path(tempfile.mkdtemp()) / "edge.db"))
            speech, parts = render(bundle, chosen.voices, chosen.prosody)
            rate = parts[0].sample_rate if parts else SAMPLE_RATE
            speech16 = resample(speech, rate, SAMPLE_RATE)
            heard = " ".join(s.text for s in base.transcribe(speech16).segments)
            said = " ".join(s.text for s in res.transcript.segments)
            dwer = jiwer.wer(norm(said), norm(heard)) if norm(said).strip() else 0.0
            if label == "cast":
                pooled_ref.append(norm(said))
                pooled_hyp.append(norm(heard))
            again = diarizer(speech16)
            hyps[f"{uri}/{label}"] = again
            (der_row,), _ = score({uri: refs[uri]}, {uri: again})
            (spans_row,), _ = score({uri: refs[uri]}, {uri: word_spans(bundle.segments, bundle.source.duration)})
            row = {"file": uri, "cast": label, "dwer": dwer, "speakers_heard": again.num_speakers,
                   "der": der_row.der, "bundle_der": spans_row.der, "voices": [c.voice for c in chosen.choices],
                   "speakers": []}
            for c in chosen.choices:
                s = c.speaker
                if (uri, s) not in originals:
                    continue
                own = [p.audio for p in parts if p.segment.speaker == s and p.segment.text not in held.get(s, ())]
                if sum(map(len, own)) < MIN_SECONDS * rate:
                    continue
                voice = embed(resample(np.concatenate(own), rate, SAMPLE_RATE))
                first, second, _ = originals[(uri, s)]
                figures = {}
                for k, name in enumerate(("campplus", "judge")):
                    sim = float(voice[k] @ second[k])
                    own_sim = float(first[k] @ second[k])
                    same = [float(v[2][k] @ second[k]) for (u, o), v in originals.items() if u == uri and o != s]
                    # dev00 and dev01 are two meetings of the same two people: not strangers
                    broad = [float(v[2][k] @ second[k]) for (u, o), v in originals.items()
                             if u != uri and person[(u, o)] != person[(uri, s)]]
                    broad.append(float(lj_embedded[k] @ second[k]))
                    figures[name] = sim
                    for tag, strangers in (("same", same), ("broad", broad)):
                        stranger = float(np.mean(strangers)) if strangers else float("nan")
                        figures[f"{name}_norm_{tag}"] = ((sim - stranger) / (own_sim - stranger)
                                                         if own_sim > stranger else float("nan"))
                figures.update(speaker=bundle.speakers[s].label, voice=c.voice,
                               f0=bundle.speakers[s].profile.f0_median if bundle.speakers[s].profile else 0.0)
                row["speakers"].append(figures)
            rows.append(row)
            for f in row["speakers"]:
                table.append(f"{uri:7s} {label:4s} {f['speaker']:3s} {f['f0']:5.0f} Hz {f['voice'][:34]:34s} "
                             f"CAM++ {f['campplus']:.3f} ({f['campplus_norm_broad']:+.2f} broad) "
                             f"judge {f['judge']:.3f} ({f['judge_norm_same']:+.2f} same, "
                             f"{f['judge_norm_broad']:+.2f} broad)")
            table.append(f"{uri:7s} {label:4s} dWER {dwer:.1%}, heard as {again.num_speakers} speaker(s), "
                         f"DER {der_row.der:.1%}; the bundle's word spans {spans_row.der:.1%} "
                         f"(voices {', '.join(row['voices'])})")
    # LJSpeech: every clip a bundle of one speaker with a profile, cast as the edge casts it (one reader, one voice)
    reader = Encoder(GroundConfig(ground=GroundSection(model="base", diarize=False, fit_voices=False)),
                     transcriber=base, store=None)
    store = AssignmentStore(Path(tempfile.mkdtemp()) / "edge.db")
    lj_said, lj_heard, lj_voices = [], [], set()
    for clip in sorted((DATA / "ljspeech").glob("*.flac")):
        res = ground.encode_file(clip, speakers=DiarizationOptions(num_speakers=1))
        if not res.bundle.segments:
            res = reader.encode_file(clip)
        chosen = cast([s.profile for s in res.bundle.speakers], catalog, bank, store)
        speech, parts = render(res.bundle, chosen.voices, chosen.prosody)
        rate = parts[0].sample_rate if parts else SAMPLE_RATE
        lj_said.append(norm(" ".join(s.text for s in res.transcript.segments)))
        lj_heard.append(norm(" ".join(s.text for s in base.transcribe(resample(speech, rate, SAMPLE_RATE)).segments)))
        lj_voices |= {c.voice for c in chosen.choices}
    print(f"LJSpeech, 16 clips cast: dWER {jiwer.wer(lj_said, lj_heard):.1%} ({', '.join(sorted(lj_voices))})")
    originals_der, _ = score({u: refs[u] for u in TWO_SPEAKER}, {u: diarizer(files[u][0]) for u in TWO_SPEAKER})
    print("\n".join(table))
    print(f"pooled dWER (cast): {jiwer.wer(pooled_ref, pooled_hyp):.1%}")
    print("pyannote on the originals (the ceiling): " + ", ".join(
        f"{r.uri} {r.der:.1%} ({r.speakers} heard)" for r in originals_der))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "pooled_dwer": jiwer.wer(pooled_ref, pooled_hyp)}, indent=1))


if __name__ == "__main__":
    main()

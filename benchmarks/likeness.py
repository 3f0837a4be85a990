"""Whose voice: how much the edge's voice for a speaker sounds like them.

For each speaker, a profile is measured from one half of their speech, as the
ground does (CAM++ embedding, pitch, colour); the edge casts a voice for it
(with and without the colour equaliser) and speaks sentences that are not
the speaker's; the result is judged against the *other* half of the
speaker's real speech by two encoders:

* CAM++ cosine (the encoder the profile and the voice choice use), and
* Resemblyzer (an encoder the edge never uses), normalised so 0 is a stranger
  and 1 is the speaker's own other half:
  ``(sim(voice, real) - sim(stranger, real)) / (sim(own half, real) - sim(stranger, real))``,
  with two kinds of stranger: the other speakers of the same recording
  ("same": on a call the other caller shares the channel, the hardest
  stranger) and the speakers of every other recording ("broad").

A third row per speaker ("fit") is the voice the ground fits to the speaker
(:mod:`ground.fit_voice`) from the fitting half only, equalised as well.

Speakers: the LJSpeech reader (16 clips: the first 8 fit, the last 8 judge)
and the speakers of every two-speaker pyannote file (sample, dev00, dev01,
trn03: their reference turns without overlap, the first half of that speech
fits, the second judges; a speaker with under 2 s in either half is left out). Nothing is tuned on these figures: the
equaliser has no fitted setting (its bound, 12 dB, was set before measuring).

    .venv/bin/python benchmarks/likeness.py
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"
MIN_HALF = 2.0  # seconds
SENTENCES = [
    "The ship will reach the harbour before the storm, if the wind holds.",
    "We measured the ice again this morning and it has not moved.",
    "Please send the spare parts with the next supply flight.",
]


def _speakers() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (fit audio, judge audio), 16 kHz."""
    from ground.evaluate import load_rttm
    from relay.audio.io import load_audio

    clips = sorted((SHARED / "ljspeech").glob("*.flac"))
    out = {"ljspeech": (np.concatenate([load_audio(c) for c in clips[:8]]),
                        np.concatenate([load_audio(c) for c in clips[8:]]))}
    # the call's speakers have no transcript here: the fitter then speaks its stock sentences
    refs = load_rttm([SHARED / "pyannote" / n for n in ("sample.rttm", "debug.development.rttm",
                                                       "debug.train.rttm")])
    for uri in ("sample", "dev00", "dev01", "trn03"):
        audio = load_audio(SHARED / "pyannote" / f"{uri}.wav")
        ref = refs[uri]
        exclusive = ref.get_overlap()
        for label in ref.labels():
            spans = [s for s in ref.label_timeline(label).support().extrude(exclusive) if s.duration > 0.3]
            speech = np.concatenate([audio[int(s.start * 16000) : int(s.end * 16000)] for s in spans])
            if len(speech) >= 2 * MIN_HALF * 16000:  # the first half of their speech fits, the second judges
                out[f"{uri} {label}"] = (speech[: len(speech) // 2], speech[len(speech) // 2 :])
    return out


def _fit_texts() -> dict[str, list[str]]:
    """The words of each speaker's fitting half, where known (LJSpeech's transcripts)."""
    rows = dict(line.split("|", 1) for line in (SHARED / "ljspeech" / "transcripts.psv").read_text().splitlines()
                if "|" in line)
    clips = sorted((SHARED / "ljspeech").glob("*.flac"))
    return {"ljspeech": [rows[c.stem].strip() for c in clips[:8] if c.stem in rows]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-fit", action="store_true", help="skip the voices fitted at the ground (minutes)")
    parser.add_argument("--no-colour-row", action="store_true", help="also cast without the colour equaliser")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    from resemblyzer import VoiceEncoder

    from edge.cast import cast
    from relay.audio.colour import spectrum_shape, to_bytes
    from relay.audio.io import SAMPLE_RATE, resample
    from relay.audio.pitch import pitch_stats
    from relay.audio.speaker_embedder import SpeakerEmbedder
    from relay.format.profile import VoiceProfile
    from relay.voice.catalog import Catalog
    from relay.voice.voicebank import VoiceBank

    campplus, judge = SpeakerEmbedder(), VoiceEncoder("cpu", verbose=False)
    catalog = Catalog()
    bank = VoiceBank(catalog, encoder=campplus)
    speakers = _speakers()
    texts = _fit_texts()
    from ground.fit_voice import VoiceFitter

    fitter = VoiceFitter(campplus)

    def rz(audio: np.ndarray) -> np.ndarray:
        return judge.embed_utterance(audio.astype(np.float32))

    real = {name: (campplus.embed(judge_half), rz(judge_half), rz(fit)) for name, (fit, judge_half) in speakers.items()}
    print(f"{'speaker':18s} {'voice':32s} {'EQ':>3s} {'CAM++':>6s} {'judge':>6s} {'same':>6s} {'broad':>6s}")
    for name, (fit, _) in speakers.items():
        cam_real, rz_real, rz_own = real[name]
        recording = name.split()[0]
        same = [float(rz_real @ real[o][1]) for o in real if o != name and o.split()[0] == recording]
        person = name.split()[-1]  # dev00 and dev01 are two meetings of the same two people
        broad = [float(rz_real @ real[o][1]) for o in real if o.split()[0] != recording and o.split()[-1] != person]
        stranger = float(np.mean(same)) if same else float("nan")
        wide = float(np.mean(broad))
        own = float(rz_real @ rz_own)
        f0, f0_range = pitch_stats(fit)
        profile = VoiceProfile.create(campplus.embed(fit), f0, f0_range, 160.0)
        shape = spectrum_shape(fit, SAMPLE_RATE)
        if shape is not None:
            profile = profile.with_colour(to_bytes(shape))
        rows: list[tuple[str, VoiceProfile, bool]] = [("yes", profile, True)]
        if args.no_colour_row:
            rows.insert(0, ("no", profile, False))
        if not args.no_fit:
            fit = fitter.fit(profile, texts.get(name, []))
            print(f"{'':18s} fitted {fit.voice.describe()} in {fit.seconds:.0f} s, {fit.candidates} candidates; "
                  f"CAM++ fit {fit.fit:.3f}, held out {fit.held_out:.3f} (best style {fit.stock}: "
                  f"{fit.stock_held_out:.3f})")
            rows.append(("fit", profile.with_fitted(fit.voice), True))
        for label, prof, eq in rows:
            c = cast([prof], catalog, bank, match_colour=eq)
            engine, prosody = c.voices[0], c.prosody.get(0)
            speech = []
            for text in SENTENCES:
                y = engine.synthesize(text)
                if prosody is not None:
                    y = prosody.apply(y, engine.sample_rate)
                speech.append(resample(y, engine.sample_rate, SAMPLE_RATE))
            voice = np.concatenate(speech)
            cam = float(campplus.embed(voice) @ cam_real)
            sim = float(rz(voice) @ rz_real)
            norm = (sim - stranger) / (own - stranger) if own > stranger else float("nan")
            norm_broad = (sim - wide) / (own - wide) if own > wide else float("nan")
            print(f"{name:18s} {c.choices[0].voice[:32]:32s} {label:>3s} {cam:6.3f} {sim:6.3f} {norm:6.2f} "
                  f"{norm_broad:6.2f}")
        print(f"{'':18s} {'(judge: own half; strangers)':32s} {'':>3s} {'':>6s} {own:6.3f} {stranger:6.3f} "
              f"{wide:6.3f}")
    print("strangers: 'same' = the other speakers of the recording, 'broad' = every speaker of the others:",
          ", ".join(real))


if __name__ == "__main__":
    main()

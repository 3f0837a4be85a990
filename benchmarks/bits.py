#!/usr/bin/env python3
"""Bits on the wire, format v2 against v1, on real recordings through the real ground.

- read speech joined: the 16 LJSpeech clips joined with 1 s of silence and
  transcribed as one recording (one speaker, profile in full, then by reference);
- the call: pyannote's sample.wav encoded twice with a profile store (the
  second pass sends profiles by reference);
- single clips (2-10 s): each LJSpeech clip and JFK, title = the file's stem;
- short messages (under 3.5 s): those clips with their speaker by reference.

Per bundle: bytes and bit/s all-in (every byte), and bits a word for text and
for timings. Also encode and decode time of the text model (this machine;
figures, never asserted).

    .venv/bin/python benchmarks/bits.py [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ground.encoder import Encoder  # noqa: E402
from ground.transcribe import Transcriber  # noqa: E402
from relay.audio.io import SAMPLE_RATE, load_audio  # noqa: E402
from relay.config import GroundConfig, GroundSection  # noqa: E402
from relay.format.bundle import Bundle, Speaker  # noqa: E402
from relay.format.wire import decode_bundle, encode_bundle, field_bits  # noqa: E402
from relay.profiles import ProfileStore  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def row(name: str, bundle: Bundle, duration: float) -> dict:
    words = max(1, sum(len(s.text.split()) for s in bundle.segments))
    out = {"name": name, "duration_s": round(duration, 1), "words": words}
    for version in (1, 2):
        data = encode_bundle(bundle, version=version)
        bits = field_bits(bundle, version)
        out[f"v{version}"] = {
            "bytes": len(data), "bps": round(8 * len(data) / duration, 1),
            "text_bits_per_word": round(bits.get("text", 0) / words, 2),
            "timing_bits_per_word": round(bits.get("timings", 0) / words, 2),
        }
    return out


def by_reference(bundle: Bundle) -> Bundle:
    return dataclasses.replace(bundle, speakers=[Speaker(s.label, s.profile_id) for s in bundle.speakers])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    import tempfile

    transcriber = Transcriber("tiny.en", cpu_threads=2)
    tmp = Path(tempfile.mkdtemp())
    store = ProfileStore(tmp / "profiles.db")
    ground = Encoder(GroundConfig(ground=GroundSection(model="tiny.en", beam_size=5, diarize=True, fit_voices=False)),
                     transcriber=transcriber, store=store)
    rows = []

    lj = sorted((SHARED / "ljspeech").glob("LJ*.flac"))
    pause = np.zeros(SAMPLE_RATE, np.float32)
    joined = np.concatenate([part for p in lj for part in (load_audio(p), pause)])
    res = ground.encode(joined, "ljspeech joined")
    rows.append(row("read speech joined, profile in full", res.bundle, res.duration))
    rows.append(row("read speech joined, profile by reference", by_reference(res.bundle), res.duration))

    call = SHARED / "pyannote" / "sample.wav"
    first = ground.encode_file(call)
    ground.commit(first, sent=True)
    second = ground.encode_file(call)
    rows.append(row("the call, first pass", first.bundle, first.duration))
    rows.append(row("the call, second pass", second.bundle, second.duration))

    singles = []
    plain = Encoder(GroundConfig(ground=GroundSection(model="tiny.en", beam_size=5, diarize=False)),
                    transcriber=transcriber, store=None)
    for path in [*lj, SHARED / "whisper" / "jfk.flac"]:
        r = plain.encode_file(path)
        singles.append(row(path.stem, r.bundle, r.duration))
        if r.duration < 3.5:
            rows.append(row(f"{path.stem} message, speaker by reference", by_reference(r.bundle), r.duration))
            rows.append(row(f"{path.stem} message, by reference, no title",
                            by_reference(dataclasses.replace(r.bundle, source=dataclasses.replace(
                                r.bundle.source, title=""))), r.duration))
    clip_rows = [s for s in singles if 2.0 <= s["duration_s"] <= 10.0]
    for v in ("v1", "v2"):
        mean = sum(s[v]["bps"] for s in clip_rows) / len(clip_rows)
        rows.append({"name": f"2-10 s clips ({len(clip_rows)}), mean bit/s {v}", "value": round(mean, 1)})

    data = encode_bundle(res.bundle)
    t = time.perf_counter()
    decode_bundle(data)
    dec_s = time.perf_counter() - t
    t = time.perf_counter()
    encode_bundle(res.bundle)
    enc_s = time.perf_counter() - t
    rows.append({"name": "text model, joined read speech", "encode_s": round(enc_s, 2), "decode_s": round(dec_s, 2),
                 "decode_rtf": round(dec_s / res.duration, 3)})
    for r in rows:
        print(json.dumps(r))
    for s in singles:
        print(json.dumps(s))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "singles": singles}, indent=2))


if __name__ == "__main__":
    main()

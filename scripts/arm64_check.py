"""The two halves of the arm64 check (scripts/check-arm64.sh), and the verdict.

Format v2 promises that an x86 ground and an ARM edge compute the same
probabilities to the bit; a Pi's onnxruntime must also still speak. This
script runs on both sides of that promise:

    make DIR     (x86) encode bundles with the real ground: the demo call,
                 read speech, the call again with its voices known (profiles
                 by reference), a part of a live stream; write each bundle
                 and what x86 decodes it to; render the check's phrases
    decode DIR   (arm64, under qemu) decode each bundle and encode it again;
                 render the phrases with Piper and Kokoro; cast the call and render
                 its first phrases, as the edge speaks them
    verify DIR   (x86) compare: every bundle must decode to exactly what x86
                 decoded, and encode back to the same bytes; every phrase
                 must last as long as on x86 (within 5 %) and read back
                 through Whisper with no more than one word in ten wrong (the
                 cast phrases, moved in pitch and colour: one in four)

Each line of the verdict names the bundle or phrase; any difference exits 1.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PHRASES = {
    "piper": ("piper:en_US-joe-medium", "The supply ship reaches the station on Thursday, weather permitting."),
    "kokoro": ("kokoro:af_heart", "Keep the generator running until the relief crew arrives."),
    "kokoro-packaged": ("kokoro:jf_alpha", "Keep the generator running until the relief crew arrives."),
}


def _canonical(value: Any) -> Any:
    """A bundle as plain JSON, exactly: bytes as hex, floats by repr, arrays as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _canonical(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, bytes | bytearray):
        return {"hex": bytes(value).hex()}
    if isinstance(value, float):
        return {"float": repr(value)}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if hasattr(value, "tolist"):
        return {"array": _canonical(value.tolist()), "dtype": str(getattr(value, "dtype", ""))}
    return value


def _first_difference(a: Any, b: Any, path: str = "bundle") -> str | None:
    if type(a) is not type(b):
        return f"{path}: {a!r:.60} != {b!r:.60}"
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f"{path}.{k}: present on one side only"
            found = _first_difference(a[k], b[k], f"{path}.{k}")
            if found:
                return found
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} items != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            found = _first_difference(x, y, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if a == b else f"{path}: {a!r:.60} != {b!r:.60}"


def _sample_call() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("pyannote.audio")
    assert spec and spec.origin
    return Path(spec.origin).parent / "sample" / "sample.wav"


def make(out: Path) -> None:
    """Encode the check's bundles on this (x86) machine, with the real ground."""
    from ground.encoder import Encoder
    from relay.audio.io import load_audio
    from relay.config import GroundConfig
    from relay.format.bundle import StreamPart
    from relay.format.wire import decode_bundle
    from relay.profiles import ProfileStore

    out.mkdir(parents=True, exist_ok=True)
    config = GroundConfig.model_validate({"ground": {"fit_voices": False}})
    store = ProfileStore(out / "profiles.db")
    encoder = Encoder(config, store=store)
    call = load_audio(_sample_call())
    read = load_audio(ROOT.parent / "shared" / "data" / "ljspeech" / "LJ001-0001.flac")
    jobs = [
        ("call", call, "the demo call", None),
        ("call-again", call, "the demo call, its voices known", None),
        ("read", read, "read speech", None),
        ("stream-part", call[: 12 * 16000], "live", StreamPart(bytes.fromhex("0badf00d"), 3, 36.0, last=True)),
    ]
    for name, audio, title, stream in jobs:
        result = encoder.encode(audio, title, stream=stream)
        encoder.commit(result, sent=True)
        (out / f"{name}.bundle").write_bytes(result.data)
        expected = _canonical(decode_bundle(result.data))
        (out / f"{name}.x86.json").write_text(json.dumps(expected, sort_keys=True))
        print(f"{name}: {len(result.data)} bytes")
    render(out, "x86")


def render(out: Path, side: str) -> None:
    """Speak each check phrase that this machine's voices can; a WAV per phrase, and how long each took."""
    import soundfile as sf

    from relay.voice.catalog import Catalog

    catalog = Catalog()
    times: dict[str, float] = {}
    for name, (key, text) in PHRASES.items():
        try:
            engine = catalog.load(key)
        except Exception as exc:  # noqa: BLE001 - a voice this machine lacks is reported, not fatal here
            print(f"{side}: {name}: {key} not available ({exc})")
            continue
        start = time.perf_counter()
        audio = engine.synthesize(text)
        times[name] = time.perf_counter() - start
        sf.write(out / f"{name}.{side}.wav", audio, engine.sample_rate)
        print(f"{side}: {name}: {len(audio) / engine.sample_rate:.2f} s of speech in {times[name]:.1f} s")
    (out / f"render.{side}.json").write_text(json.dumps(times))


def decode(out: Path) -> None:
    """Decode and re-encode each bundle here (arm64), then render the phrases."""
    import platform

    from relay.format.wire import decode_bundle, encode_bundle

    print(f"decoding on {platform.machine()}, Python {platform.python_version()}")
    for path in sorted(out.glob("*.bundle")):
        start = time.perf_counter()
        data = path.read_bytes()
        bundle = decode_bundle(data)
        (out / f"{path.stem}.arm64.json").write_text(json.dumps(_canonical(bundle), sort_keys=True))
        again = encode_bundle(bundle, version=2)
        (out / f"{path.stem}.arm64.bundle.again").write_bytes(again)
        print(f"{path.stem}: decoded and encoded again in {time.perf_counter() - start:.1f} s")
    render(out, "arm64")
    cast(out)


CAST_WORDS, CAST_PHRASES = 8, 4  # the call's first phrases, up to these, rendered by the cast (a minute each)


def cast(out: Path) -> None:
    """The edge's whole path for the call on arm64: cast (shipped measurements, no torch), then the
    first phrases rendered, moved to each speaker's pitch and colour (PSOLA, the equaliser)."""
    import numpy as np
    import soundfile as sf

    from edge.player import Player
    from relay.config import EdgeConfig
    from relay.format.wire import decode_bundle

    start = time.perf_counter()
    player = Player(EdgeConfig.model_validate({"edge": {"state_dir": str(out / "edge-state")}}))
    performance = player.prepare(decode_bundle((out / "call.bundle").read_bytes()))
    phrases = []
    for phrase in player.phrases(performance):
        phrases.append(phrase)
        if len(phrases) == CAST_PHRASES or sum(len(p.segment.words) for p in phrases) >= CAST_WORDS:
            break
    gap = np.zeros(int(0.4 * performance.rate), np.float32)
    sf.write(out / "cast.arm64.wav", np.concatenate([x for p in phrases for x in (p.audio, gap)]), performance.rate)
    text = " ".join(p.segment.text for p in phrases)
    (out / "cast.arm64.json").write_text(json.dumps({"cast": performance.described(), "text": text}))
    print(f"cast: {performance.described()}; {len(phrases)} phrases in {time.perf_counter() - start:.0f} s")


def _words(text: str) -> list[str]:
    return "".join(c.lower() if c.isalnum() or c.isspace() else " " for c in text).split()


def verify(out: Path) -> int:
    """Compare the two sides; one line per bundle and phrase; 1 if anything differs."""
    import jiwer
    import soundfile as sf

    failed = 0
    bundles = sorted(out.glob("*.bundle"))
    if not bundles:
        print("arm64 check: no bundles were made")
        return 1
    for path in bundles:
        name = path.stem
        arm = out / f"{name}.arm64.json"
        if not arm.exists():
            print(f"FAIL {name}: not decoded on arm64")
            failed += 1
            continue
        diff = _first_difference(json.loads((out / f"{name}.x86.json").read_text()), json.loads(arm.read_text()))
        again = (out / f"{name}.arm64.bundle.again").read_bytes()
        if diff:
            print(f"FAIL {name}: arm64 decodes it differently: {diff}")
            failed += 1
        elif again != path.read_bytes():
            print(f"FAIL {name}: arm64 encodes it back to different bytes "
                  f"({len(again)} against {path.stat().st_size})")
            failed += 1
        else:
            print(f"ok   {name}: {path.stat().st_size} bytes decode identically on arm64 and encode back bit for bit")

    from faster_whisper import WhisperModel

    from ground.models import resolve_whisper
    from relay.audio.io import load_audio

    whisper = WhisperModel(str(resolve_whisper("tiny.en").path), device="cpu", compute_type="int8", cpu_threads=2)
    times = json.loads((out / "render.arm64.json").read_text()) if (out / "render.arm64.json").exists() else {}
    for name, (key, text) in PHRASES.items():
        x86, arm = out / f"{name}.x86.wav", out / f"{name}.arm64.wav"
        if not x86.exists():
            continue  # a voice this machine lacks (the Kokoro v1.0 set): nothing to compare with
        if not arm.exists():
            print(f"FAIL {name}: {key} did not render on arm64")
            failed += 1
            continue
        a, b = sf.info(str(x86)).duration, sf.info(str(arm)).duration
        segments, _ = whisper.transcribe(load_audio(arm), beam_size=1, language="en")
        heard = " ".join(s.text for s in segments)
        wer = jiwer.wer(" ".join(_words(text)), " ".join(_words(heard)))
        line = (f"{name}: {key} {b:.2f} s on arm64 against {a:.2f} s on x86, WER {wer:.0%} "
                f"(rendered in {times.get(name, math.nan):.0f} s under emulation): {heard.strip()!r}")
        if abs(b / a - 1) > 0.05 or wer > 0.10:
            print("FAIL " + line)
            failed += 1
        else:
            print("ok   " + line)
    cast_file = out / "cast.arm64.json"
    if not (out / "render.arm64.json").exists():  # the bundles alone were checked (tests/test_arm64_check.py)
        return 1 if failed else 0
    if not cast_file.exists():
        print("FAIL cast: the edge did not cast and render the call on arm64")
        return 1
    done = json.loads(cast_file.read_text())
    segments, _ = whisper.transcribe(load_audio(out / "cast.arm64.wav"), beam_size=1, language="en")
    heard = " ".join(s.text for s in segments)
    wer = jiwer.wer(" ".join(_words(done["text"])), " ".join(_words(heard)))
    line = f"cast: {done['cast']}; its first phrases read back with WER {wer:.0%}: {heard.strip()!r}"
    print(("FAIL " if wer > 0.25 else "ok   ") + line)
    failed += wer > 0.25
    return 1 if failed else 0


def main() -> int:
    if len(sys.argv) != 3 or sys.argv[1] not in ("make", "decode", "verify"):
        print("usage: arm64_check.py make|decode|verify DIR", file=sys.stderr)
        return 2
    os.environ.setdefault("SPEECH_RELAY_FIT_VOICES", "0")
    out = Path(sys.argv[2])
    if sys.argv[1] == "make":
        make(out)
    elif sys.argv[1] == "decode":
        decode(out)
    else:
        return verify(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

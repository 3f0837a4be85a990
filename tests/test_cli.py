"""The ``relay`` command as an operator uses it: real files, real subprocesses.

Every bad input must give a non-zero exit and exactly one line on stderr that
names the file, never a traceback.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, shared

pytestmark = pytest.mark.slow  # runs the commands with the speech models

RELAY = shutil.which("relay", path=str(Path(sys.executable).parent)) or "relay"


def relay(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [RELAY, *args], capture_output=True, text=True, cwd=cwd, timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0, proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def jfk_bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "jfk.bundle"
    proc = relay("ground", "encode", str(shared("whisper", "jfk.flac")), "-o", str(out), "--title", "JFK inaugural")
    assert proc.returncode == 0, proc.stderr
    assert "bits/s" in proc.stdout and "smaller than the input" in proc.stdout
    return out


def test_encode_inspect_decode(jfk_bundle, tmp_path):
    proc = relay("inspect", str(jfk_bundle), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["source"]["title"] == "JFK inaugural"
    assert doc["speakers"][0]["label"] == "S1"
    assert {"start", "end", "speaker", "text"} <= set(doc["segments"][0])
    assert "ask not what your country" in " ".join(s["text"] for s in doc["segments"]).lower()
    assert doc["bytes"] == jfk_bundle.stat().st_size

    human = relay("inspect", str(jfk_bundle))
    assert human.returncode == 0
    for field in ("header", "text", "timings", "end check", "bits per second", "format v2"):
        assert field in human.stdout
    text_bits = re.search(r"text ([0-9.]+) bits a word, timings ([0-9.]+) bits a word", human.stdout)
    assert text_bits and 0 < float(text_bits[1]) < 12 and 0 < float(text_bits[2]) < 8

    wav = tmp_path / "jfk.wav"
    proc = relay("edge", "decode", str(jfk_bundle), "-o", str(wav))
    assert proc.returncode == 0, proc.stderr
    import soundfile as sf

    info = sf.info(str(wav))
    assert abs(info.duration - 11.0) < 0.6


@pytest.mark.parametrize(
    "name, content",
    [
        ("empty.wav", b""),
        ("random.wav", os.urandom(4096)),
        ("notes.wav", b"These are meeting notes, not audio.\n" * 20),
        ("random.mp3", os.urandom(2048)),
    ],
)
def test_encode_rejects_bad_audio(tmp_path, name, content):
    bad = tmp_path / name
    bad.write_bytes(content)
    proc = relay("ground", "encode", str(bad), "-o", str(tmp_path / "out.bundle"))
    assert_one_line_error(proc, name)
    assert not (tmp_path / "out.bundle").exists()


def test_encode_missing_file(tmp_path):
    assert_one_line_error(relay("ground", "encode", str(tmp_path / "nope.flac")), "nope.flac", "no such file")


def test_encode_unknown_model_folder(tmp_path):
    proc = relay("ground", "encode", str(shared("whisper", "jfk.flac")), "--model", str(tmp_path / "no-model"))
    assert_one_line_error(proc, "no-model")


def test_encode_hub_model_without_internet(tmp_path):
    proc = relay("ground", "encode", str(shared("whisper", "jfk.flac")), "--model", "large-v3",
                 env={"HF_HOME": str(tmp_path)})
    assert_one_line_error(proc, "large-v3")


def _mutations(data: bytes) -> dict[str, bytes]:
    future = bytearray(data)
    future[1] = 9  # format v2 with a text model this relay does not have
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x10
    return {
        "truncated": data[: len(data) - 7],
        "flipped": bytes(flipped),
        "future": bytes(future),
        "empty": b"",
        "random": os.urandom(300),
        "text": b"hello, I am not a bundle\n",
    }


@pytest.mark.parametrize("kind", ["truncated", "flipped", "future", "empty", "random", "text"])
@pytest.mark.parametrize("command", ["inspect", "decode"])
def test_bad_bundles(jfk_bundle, tmp_path, kind, command):
    bad = tmp_path / f"{kind}.bundle"
    bad.write_bytes(_mutations(jfk_bundle.read_bytes())[kind])
    args = ["inspect", str(bad)] if command == "inspect" else ["edge", "decode", str(bad), "-o",
        str(tmp_path / "x.wav")]
    proc = relay(*args)
    expected = {"future": "text model 8", "truncated": "truncated", "flipped": "corrupt"}.get(kind, "")
    assert_one_line_error(proc, f"{kind}.bundle", expected)
    assert not (tmp_path / "x.wav").exists()


def test_missing_bundle_and_unwritable_output(jfk_bundle, tmp_path):
    assert_one_line_error(relay("inspect", str(tmp_path / "gone.bundle")), "gone.bundle")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_one_line_error(relay("edge", "decode", str(jfk_bundle), "-o", str(blocker / "out.wav")), "out.wav")


def test_missing_voice(jfk_bundle, tmp_path):
    proc = relay("edge", "decode", str(jfk_bundle), "--voice", str(tmp_path / "nobody.onnx"))
    assert_one_line_error(proc, "nobody.onnx")


def test_usage_error_is_not_a_traceback():
    proc = relay("ground", "encode")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_relay_core_never_imports_ground_or_edge():
    for path in (ROOT / "relay").rglob("*.py"):
        text = path.read_text()
        assert "import ground" not in text and "from ground" not in text, path
        assert "import edge" not in text and "from edge" not in text, path


def ground_config(tmp_path: Path) -> str:
    """A ground.toml with its own state folder, as a station would have."""
    cfg = tmp_path / "ground.toml"
    cfg.write_text(f'[ground]\nstate_dir = "{tmp_path}/ground-state"\n')
    return str(cfg)


def test_speakers_enroll_encode_inspect_remove(tmp_path):
    """Enrolled into the store the ground daemon uses (the same -c), matched by encode."""
    from relay.config import load_ground
    from relay.profiles import ProfileStore

    store = ground_config(tmp_path)
    add = relay("ground", "speakers", "add", "Linda", str(shared("ljspeech", "LJ001-0001.flac")), "-c", store)
    assert add.returncode == 0, add.stderr
    assert add.stdout.startswith("enrolled Linda: profile ")
    listed = json.loads(relay("ground", "speakers", "ls", "--json", "-c", store).stdout)
    assert [p["name"] for p in listed] == ["Linda"] and listed[0]["sent"] is False
    daemon_store = ProfileStore(load_ground(store).ground.profiles_db)  # what `relay ground run -c` matches against
    assert [p.name for p in daemon_store] == ["Linda"]

    out = tmp_path / "lj.bundle"
    first = relay("ground", "encode", str(shared("ljspeech", "LJ001-0002.flac")), "-o", str(out), "-c", store)
    assert first.returncode == 0, first.stderr
    assert "speakers: Linda (full profile, known voice 0." in first.stdout
    shown = relay("inspect", str(out))
    assert shown.returncode == 0 and "Linda" in shown.stdout
    assert "voice profiles:" in shown.stdout and "1 sent in full" in shown.stdout
    doc = json.loads(relay("inspect", str(out), "--json").stdout)
    assert doc["speakers"][0]["profile"] == "full" and doc["speakers"][0]["voice"]["name"] is None

    again = relay("ground", "encode", str(shared("ljspeech", "LJ001-0002.flac")), "-o", str(out), "-c", store)
    assert "speakers: Linda (ref profile, known voice 0." in again.stdout, again.stdout
    assert json.loads(relay("ground", "speakers", "ls", "--json", "-c", store).stdout)[0]["sent"] is True

    assert relay("ground", "speakers", "rm", "Linda", "-c", store).returncode == 0
    assert_one_line_error(relay("ground", "speakers", "rm", "Linda", "-c", store), "no speaker named 'Linda'")


def test_speakers_add_bad_clip_and_duplicate(tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage")
    proc = relay("ground", "speakers", "add", "X", str(bad), "-c", ground_config(tmp_path))
    assert_one_line_error(proc, "broken.wav")


def test_encode_speaker_options(tmp_path):
    clip = str(shared("whisper",
        "jfk.flac"))
    proc = relay("ground", "encode", clip, "--min-speakers", "3", "--max-speakers", "2", "-o",
        str(tmp_path / "x.bundle"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    hub = "pyannote/speaker-diarization-community-1"
    proc = relay("ground", "encode", clip, "--pipeline", hub, "-o", str(tmp_path / "y"))
    assert_one_line_error(proc, "cannot load diarization pipeline")
    proc = relay("ground", "encode", clip, "--no-diarize", "-o", str(tmp_path / "z.bundle"))
    assert proc.returncode == 0 and "speakers:" not in proc.stdout


def test_voices_ls_and_decode_with_other_engines(jfk_bundle, tmp_path):
    import soundfile as sf

    listed = relay("edge", "voices", "ls", "--json", env={"SPEECH_RELAY_COQUI_MODEL": "tts_models/en/vctk/vits"})
    assert listed.returncode == 0, listed.stderr
    assert "Traceback" not in listed.stderr
    doc = json.loads(listed.stdout)
    engines = {e["engine"]: e for e in doc["engines"]}
    assert engines["kokoro"]["available"] and engines["espeak"]["available"]
    assert not engines["coqui"]["available"] and "cannot be fetched" in engines["coqui"]["detail"]
    assert {"kokoro:jm_kumo", "espeak:en+f2", "piper:en_US-joe-medium"} <= {v["key"] for v in doc["voices"]}
    for key, rate in (("kokoro:jm_kumo", 24000), ("espeak:en+f2", 22050)):
        out = tmp_path / f"{key.replace(':', '_')}.wav"
        proc = relay("edge", "decode", str(jfk_bundle), "-o", str(out), "--voice",
            key)
        assert proc.returncode == 0, proc.stderr
        assert sf.info(out).samplerate == rate
    proc = relay("edge", "decode", str(jfk_bundle), "--voice", "nope", "-o", str(tmp_path / "x.wav"))
    assert_one_line_error(proc, "nope")


def test_decode_gives_two_speakers_two_voices_and_keeps_them(tmp_path):
    from tests.test_voices import two_speaker_bundle

    path = tmp_path / "two.bundle"
    path.write_bytes(two_speaker_bundle())
    env = {"SPEECH_RELAY_HOME": str(tmp_path / "home")}  # the session's cache: its voice bank is shared
    first = relay("edge", "decode", str(path), "-o", str(tmp_path / "a.wav"), env=env)
    assert first.returncode == 0, first.stderr
    picked = [part.split(" -> ")[1].split(" ")[0].rstrip(",") for part in first.stdout.split(", ") if " -> " in part]
    assert len(picked) == 2 and picked[0] != picked[1], first.stdout
    again = relay("edge", "decode", str(path), "-o", str(tmp_path / "b.wav"), env=env)
    assert again.stdout.count("(as before)") == 2, again.stdout
    listed = json.loads(relay("edge", "voices", "ls", "--json", env=env).stdout)
    measured = {v["key"] for v in listed["voices"] if v["embedding"] == "measured"}
    assert set(picked) <= measured


def test_decode_play_without_a_device_writes_the_wav(jfk_bundle, tmp_path):
    import soundfile as sf

    sd = pytest.importorskip("sounddevice")
    if any(d["max_output_channels"] > 0 for d in sd.query_devices()):
        pytest.skip("this machine has an audio output")
    out = tmp_path / "jfk.wav"
    proc = relay("edge", "decode", str(jfk_bundle), "--play", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    notes = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(notes) == 1 and notes[0].startswith("note: no usable audio output"), proc.stderr
    assert sf.info(out).duration > 10

"""A slow edge keeps up (edge.speed, edge.playback's lead) and tells its operator what it has (edge.doctor).

No test here times anything: the plan is arithmetic on measured real-time
factors, and the render-ahead is checked by counting what was rendered before
the first sound, not by a clock."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge import doctor, speed
from edge.playback import MAX_LEAD, RecordingOutput, play
from edge.rehydrate import RenderedSegment
from relay.config import EdgeConfig
from relay.format.bundle import Segment
from relay.voice.catalog import Catalog

RELAY = shutil.which("relay", path=str(Path(sys.executable).parent)) or "relay"


def test_the_lead_covers_what_a_slow_renderer_cannot_catch_up():
    assert speed.lead_seconds(0.5, 600.0) == 0.0  # keeps ahead as it plays
    # at RTF 2 (2.5 with the margin) playback may start once 60 % of the timeline is rendered:
    # the remaining 40 % then takes 2.5 * 240 = 600 s, exactly while the 600 s play
    r = 2.0 * speed.MARGIN
    lead = speed.lead_seconds(2.0, 600.0)
    assert math.isclose(lead, 600 * (1 - 1 / r))
    assert math.isclose(r * (600 - lead), 600.0)
    assert speed.lead_seconds(1000.0, 30.0) <= 30.0


def test_only_engines_faster_than_real_time_with_margin_serve_live_speech():
    p = speed.SpeedProfile("arm64 x4", "v", {"kokoro": 2.4, "piper": 0.3, "espeak": 0.05})
    assert speed.fast_engines(p) == {"piper", "espeak"}
    assert speed.fast_engines(speed.SpeedProfile("slow", "v", {"kokoro": 2.4, "piper": 1.1})) == set()
    assert p.fastest() == ("espeak", 0.05)


def _parts(n: int, seconds: float, produced: list[int]):
    for i in range(n):
        produced.append(i)
        audio = np.zeros(int(seconds * 100), np.float32)
        yield RenderedSegment(i, Segment(0, i * seconds, (i + 1) * seconds, "x"), i * seconds, audio, 100, 1.0)


class _FirstWrite(RecordingOutput):
    """Remembers how many phrases had been rendered when the first sound went out."""

    def __init__(self, produced: list[int]) -> None:
        super().__init__(100)
        self.produced, self.rendered_at_first = produced, None

    def write(self, block: np.ndarray) -> None:
        if self.rendered_at_first is None:
            self.rendered_at_first = len(self.produced)
        super().write(block)


def test_playback_waits_for_the_lead_before_the_first_sound():
    produced: list[int] = []
    out = _FirstWrite(produced)
    report = play(_parts(20, 3.0, produced), out, lead=30.0)
    assert out.rendered_at_first >= 10  # 10 phrases of 3 s cover the 30 s lead
    assert report.phrases == 20 and report.lead_s == 30.0
    assert len(out.audio) == 20 * 300  # everything played, in order, nothing dropped

    produced.clear()
    out = _FirstWrite(produced)
    play(_parts(5, 3.0, produced), out, lead=1e9)  # a lead longer than the bundle: all of it, then play
    assert out.rendered_at_first == 5 and len(out.audio) == 5 * 300
    assert play(_parts(1, 1.0, []), RecordingOutput(100), lead=1e9).lead_s == MAX_LEAD


def test_speed_profile_is_cached_until_the_device_or_the_voices_change(tmp_path):
    catalog = Catalog()
    path = tmp_path / "speed.json"
    here = speed.SpeedProfile(speed.device(), speed._voices_key(catalog), {"piper": 0.25}, 1.0)
    path.write_text(json.dumps({"device": here.device, "voices": here.voices, "rtf": here.rtf, "measured": 1.0}))
    assert speed.profile(catalog, path).rtf == {"piper": 0.25}  # not measured again
    assert speed.load(tmp_path / "missing.json") is None
    (tmp_path / "bad.json").write_text("{not json")
    assert speed.load(tmp_path / "bad.json") is None
    (tmp_path / "nan.json").write_text('{"device": "d", "voices": "v", "rtf": {"piper": NaN}, "measured": 1}')
    assert speed.load(tmp_path / "nan.json") is None


def test_cpu_quota_is_read_as_cpus():
    quota = speed.cpu_quota()
    assert quota is None or quota > 0
    assert speed.device().startswith(("x86_64", "aarch64"))


def _config(tmp_path, **edge) -> EdgeConfig:
    return EdgeConfig.model_validate({"edge": {"state_dir": str(tmp_path / "state"), **edge},
                                      "broker": {"port": 1}})


def _presumed_speed(cfg: EdgeConfig) -> None:
    """A speed.json as the daemon would leave it, so the doctor does not spend seconds timing voices."""
    catalog = Catalog(cfg.voices)
    cfg.edge.state_dir.mkdir(parents=True, exist_ok=True)
    (cfg.edge.state_dir / "speed.json").write_text(json.dumps(
        {"device": speed.device(), "voices": speed._voices_key(catalog), "rtf": {"kokoro": 2.5, "piper": 1.2},
         "measured": 1.0}))


@pytest.mark.slow  # loads the text model and probes every engine
def test_doctor_names_what_is_missing_and_fails(tmp_path):
    cfg = _config(tmp_path, signing_key=str(tmp_path / "no.key"), trusted_keys=["ed25519:not-a-key"])
    _presumed_speed(cfg)
    found = {f.what: f for f in doctor.examine(cfg, broker=True, timeout=2.0)}
    assert found["signing key"].level == "fail" and "no.key" in found["signing key"].detail
    assert found["trusted ground key"].level == "fail"
    assert found["broker"].level == "fail" and "localhost:1" in found["broker"].detail
    assert found["speed"].level == "warn" and "none keeps ahead" in found["speed"].detail
    assert found["text model"].level == "ok"
    assert found["clock"].level == "ok"  # nothing received yet


@pytest.mark.slow
def test_doctor_passes_a_ready_node_and_reads_the_clock_from_the_last_bundle(tmp_path):
    import sqlite3

    from relay.link.signing import SigningKey

    key = SigningKey.generate()
    key.save(tmp_path / "edge.key")
    ground = SigningKey.generate()
    cfg = _config(tmp_path, signing_key=str(tmp_path / "edge.key"), trusted_keys=[ground.public.text()], play=False)
    _presumed_speed(cfg)
    found = doctor.examine(cfg, broker=False)
    assert not [f for f in found if f.level == "fail"], found
    with sqlite3.connect(cfg.edge.inbox_db) as c:  # the edge's own schema, then one bundle signed "later"
        from edge.store import Inbox

        Inbox.of(cfg).close()
        c.execute("INSERT INTO bundles (bundle_id, state, priority, received, signed_at) VALUES (?, ?, ?, ?, ?)",
                  (b"12345678", "accepted", 2, 1000.0, 5000))
    clock = {f.what: f for f in doctor.examine(cfg, broker=False)}["clock"]
    assert clock.level == "fail" and "behind" in clock.detail


@pytest.mark.slow
@pytest.mark.parametrize("flag", [["--no-broker"], ["--no-broker", "--json"]])
def test_doctor_command_exits_non_zero_on_a_missing_key(tmp_path, flag):
    cfg_file = tmp_path / "edge.toml"
    state = tmp_path / "state"
    cfg_file.write_text(f'[edge]\nstate_dir = "{state}"\nsigning_key = "{tmp_path}/none.key"\n')
    _presumed_speed(_config(tmp_path))
    result = subprocess.run([RELAY, "edge", "doctor", "-c", str(cfg_file), *flag], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "SPEECH_RELAY_HOME": str(tmp_path)})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    if "--json" in flag:
        doc = json.loads(result.stdout)
        assert doc["ok"] is False and any(f["what"] == "signing key" and f["level"] == "fail" for f in doc["findings"])
    else:
        assert "signing key" in result.stdout and "FAIL" in result.stdout


@pytest.mark.slow  # the real ground, then the edge's cast
def test_a_live_part_or_a_flash_bundle_speaks_only_with_voices_that_keep_up(tmp_path, tiny, diarizer):
    """On a device where Kokoro is slower than real time, the call as a flash bundle or as a
    live part is cast from the fast engines; as an ordinary bundle, Kokoro may speak it, rendered ahead."""
    import dataclasses

    from conftest import encoder, shared

    from edge.player import Player
    from relay.format.bundle import StreamPart

    bundle = encoder(tiny, diarizer).encode_file(shared("pyannote", "sample.wav")).bundle
    cfg = _config(tmp_path)
    player = Player(cfg)
    player._speeds = speed.SpeedProfile(speed.device(), "v", {"kokoro": 2.6, "piper": 0.3, "espeak": 0.05})
    calm = player.prepare(bundle)
    assert any(c.voice.startswith("kokoro:") for c in calm.choices)  # this edge's best likeness
    assert player.lead(calm) == pytest.approx(speed.lead_seconds(2.6, bundle.source.duration))
    flash = player.prepare(bundle, urgent=True)
    live = player.prepare(dataclasses.replace(bundle, source=dataclasses.replace(
        bundle.source, stream=StreamPart(b"live", 0, 0.0))))
    for performance in (flash, live):
        assert len(performance.choices) == 2
        assert not any(c.voice.startswith("kokoro:") for c in performance.choices), performance.described()
        assert player.lead(performance) == 0.0
    # a device too slow even for the fastest voice: said once, every voice allowed, nothing dropped
    player._speeds = speed.SpeedProfile(speed.device(), "v", {"kokoro": 9.0, "piper": 3.0})
    assert len(player.prepare(bundle, urgent=True).choices) == 2 and player._too_slow_said

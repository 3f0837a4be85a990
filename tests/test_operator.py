"""What an operator meets on an ordinary day, without a broker: a recording
with nothing said, the daemon's state in one line, commands without a
configuration, the console's list from its index."""

from __future__ import annotations

import subprocess
import time

import pytest

from edge.player import NOTHING_TO_SAY, Player
from edge.search import TranscriptIndex
from ground.queue import LinkState
from relay.config import EdgeConfig
from relay.format.bundle import Bundle, SourceInfo, Speaker
from relay.format.wire import decode_bundle, encode_bundle
from relay.testing.bundles import conversation
from tests.test_daemons import RELAY


def test_a_bundle_with_nothing_said_plays_no_silence(tmp_path):
    cfg = EdgeConfig.model_validate({"edge": {"state_dir": str(tmp_path), "output_dir": str(tmp_path / "out"),
                                              "voice": "espeak:en-us+m3", "play": False}})
    empty = encode_bundle(Bundle(SourceInfo("quiet watch", 30.0, "en"), [Speaker("S1")], []))
    assert len(empty) < 60
    where = Player(cfg).speak(empty, decode_bundle(empty).bundle_id, time.time())
    assert where == NOTHING_TO_SAY
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.wav"))


def test_the_ground_warns_of_a_recording_with_nothing_said():
    from ground.daemon import _no_words

    empty = decode_bundle(encode_bundle(Bundle(SourceInfo("quiet watch", 30.0, "en"), [Speaker("S1")], [])))
    assert "no speech was found in its 30 s" in _no_words(empty)
    assert _no_words(conversation(3, seed=1)) == ""


def test_phonemizer_warnings_stay_out_of_the_daemons_logs():
    import logging

    import relay.voice.engines  # noqa: F401 - what every engine imports first

    assert logging.getLogger("phonemizer").getEffectiveLevel() >= logging.ERROR


def test_the_daemons_state_is_one_line_that_tells_stopped_from_lost():
    now = time.time()
    assert LinkState(True, now - 300, now - 5).describe(now) == "broker link up for 5 min"
    down = LinkState(False, now - 42, now - 5).describe(now)
    assert down.startswith("broker link DOWN for 42 s") and "reconnecting" in down
    assert LinkState(False, now - 42, now - 30, stopped=True).describe(now) == "ground daemon stopped 30 s ago"
    assert not LinkState(True, now - 42, now - 1, stopped=True).alive(now)
    assert "not running" in LinkState(True, now - 900, now - 600).describe(now)  # killed: its beat went quiet


@pytest.mark.slow  # runs the command a few times
def test_state_commands_refuse_to_run_on_the_packaged_defaults(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    for cmd in (["edge", "ls"], ["ground", "status"], ["ground", "queue", "cancel", "1"]):
        proc = subprocess.run([RELAY, *cmd], capture_output=True, text=True, env=env)
        assert proc.returncode == 1 and proc.stderr.startswith("error: no ") and "-c FILE" in proc.stderr, proc.stderr
    # what needs no station still runs without one
    proc = subprocess.run([RELAY, "edge", "voices", "ls", "--json"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr


def test_the_index_knows_who_speaks_in_a_bundle(tmp_path):
    index = TranscriptIndex(tmp_path / "t.db")
    bundle = conversation(6, seed=2, title="watch")
    assert index.speakers(bundle.bundle_id) is None  # not indexed: the console reads it in the background
    index.add(bundle)
    assert index.speakers(bundle.bundle_id) == ["Alice", "S2"]

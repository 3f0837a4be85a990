"""Starting the daemons: every configuration or setup mistake an operator can
make stops them (or the command) with one line naming it, never a traceback.
(The daemons at work, with faults and attackers: test_deployment.py,
test_hostile.py, test_diskfull.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from relay.link.signing import SigningKey
from relay.testing.broker import free_port
from relay.testing.bundles import real_bundle
from relay.testing.configs import write_station

RELAY = str(Path(sys.executable).with_name("relay"))


def write_configs(tmp_path: Path, ground_port: int, edge_port: int, key: SigningKey, rate: float,
                  voice: str = "espeak:en-us+m3") -> tuple[Path, Path]:
    """A ground (signing with ``key``) and an edge "ship" on two brokers, topic prefix "t"."""
    station = write_station(tmp_path, ground_port, edge_port, edge="ship", voice=voice, ground={
        "ground": {"name": "g1"}, "broker": {"topic_prefix": "t"},
        "link": {"fragment_size": 340, "rate": rate, "ack_timeout": 3, "max_poll_interval": 6},
    }, edges={"broker": {"topic_prefix": "t", "keepalive": 5}}, ground_key=key)
    return station.ground, station.edge


def test_config_errors_name_the_key(tmp_path):
    bad = tmp_path / "ground.toml"
    bad.write_text('[link]\nfragment_size = 100\n')
    proc = subprocess.run([RELAY, "ground", "queue", "ls", "-c", str(bad)], capture_output=True, text=True)
    assert proc.returncode != 0 and proc.stderr.strip().count("\n") == 0
    assert "link.fragment_size" in proc.stderr and "340" in proc.stderr
    bad.write_text('[link]\nfragmnet_size = 400\n')
    proc = subprocess.run([RELAY, "ground", "queue", "ls", "-c", str(bad)], capture_output=True, text=True)
    assert "link.fragmnet_size: unknown key" in proc.stderr
    bad.write_text('[tiers]\ntier = "mp3"\n')
    proc = subprocess.run([RELAY, "ground", "queue", "ls", "-c", str(bad)], capture_output=True, text=True)
    assert "tiers.tier: unknown tier 'mp3'" in proc.stderr and proc.stderr.strip().count("\n") == 0
    edge = tmp_path / "edge.toml"
    edge.write_text(f'[edge]\nname = "ship"\nstate_dir = "{tmp_path}/edge"\n')
    proc = subprocess.run([RELAY, "edge", "run", "-c", str(edge)], capture_output=True, text=True)
    assert "edge.trusted_keys: required" in proc.stderr and "Traceback" not in proc.stderr


def test_shipped_configurations_are_valid():
    from relay.config import load_edge, load_ground

    root = Path(__file__).resolve().parents[1] / "config"
    ground = load_ground(root / "ground.toml")
    assert ground.link.fragment_size == 340 and ground.ground.default_edge in ground.edges
    edge = load_edge(root / "edge.toml")
    assert edge.edge.name == ground.ground.default_edge and edge.edge.trusted_keys
    assert ground.tiers.tier == "text" and ground.tiers.codec == "codec2-3200"  # text unless the operator says


def one_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and all(n in lines[0] for n in needles), proc.stderr
    return lines[-1]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([RELAY, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_operator_mistakes_are_one_line(tmp_path):
    ground, edge = write_configs(tmp_path, free_port(), free_port(), SigningKey.generate(), 100.0)
    text = ground.read_text()
    # a bool given as text, a spool folder that is a file, a password file that is not there
    ground.write_text(text.replace("[ground]", "[ground]\ndiarize = \"yes\""))
    one_line(run("ground", "queue", "ls", "-c", str(ground)), "ground.diarize", "boolean")
    (tmp_path / "notes.txt").write_text("meeting notes\n" * 40)
    ground.write_text(text.replace("[ground]", f'[ground]\nspool_dir = "{tmp_path}/notes.txt"'))
    one_line(run("ground", "run", "-c", str(ground)), "spool_dir", "not a folder")
    ground.write_text(text.replace("[broker]", f'[broker]\npassword_file = "{tmp_path}/missing.pass"'))
    one_line(run("ground", "run", "-c", str(ground)), "missing.pass", "cannot read the broker password")
    ground.write_text(text.replace('default_edge = "ship"', 'default_edge = "ship9"'))
    one_line(run("ground", "run", "-c", str(ground)), "default_edge", "ship9")
    ground.write_text(text.replace('key = "ed25519:', 'key = "ed25519:AAAA'))
    one_line(run("ground", "run", "-c", str(ground)), "edges.ship.key")
    ground.write_text(text)
    # notes are not audio; an edge the ground does not serve; a corrupt bundle
    one_line(run("ground", "queue", "add", str(tmp_path / "notes.txt"), "-c", str(ground)), "notes.txt",
        "no audio stream")
    bundle = tmp_path / "b.bundle"
    bundle.write_bytes(real_bundle(20))
    one_line(run("ground", "queue", "add", str(bundle), "--to", "ship7", "-c", str(ground)), "ship7", "not an edge")
    bundle.write_bytes(real_bundle(20)[:-3])
    one_line(run("ground", "queue", "add", str(bundle), "-c", str(ground)), "truncated")
    # the edge's own key missing; a play flag given as text
    etext = edge.read_text()
    edge.write_text(etext.replace(f'"{tmp_path}/edge.key"', f'"{tmp_path}/nope.key"'))
    one_line(run("edge", "run", "-c", str(edge)), "nope.key", "cannot read signing key")
    edge.write_text(etext.replace("play = false", 'play = "yes"'))
    one_line(run("edge", "ls", "-c", str(edge)), "edge.play", "boolean")
    # keys: into a folder that does not exist yet (made), over an existing key (refused)
    made = run("ground", "keys", "init", str(tmp_path / "new" / "folder" / "edge.key"))
    assert made.returncode == 0 and "ed25519:" in made.stdout, made.stderr
    one_line(run("ground", "keys", "init", str(tmp_path / "new" / "folder" / "edge.key")), "already exists")
    blocked = tmp_path / "file"
    blocked.write_text("x")
    one_line(run("ground", "keys", "init", str(blocked / "edge.key")), "cannot create the folder")


def test_an_unknown_voice_stops_the_edge_at_start_with_one_line(tmp_path):
    _, edge = write_configs(tmp_path, free_port(), free_port(), SigningKey.generate(), 100.0, voice="piper:nobody")
    proc = subprocess.run([RELAY, "edge", "run", "-c", str(edge)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "no voice 'piper:nobody'" in proc.stderr and "Traceback" not in proc.stderr

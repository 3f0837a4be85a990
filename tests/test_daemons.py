"""The ground and edge daemons over a real mosquitto and a thin link, with faults.

Both daemons run as real processes (``relay ground run``, ``relay edge run``)
against a private mosquitto with persistence; the edge reaches the broker
through a throttling, delaying link simulator on loopback
(:mod:`relay.linksim`). Mid-transfer the test cuts the link, kills the
ground with SIGKILL while it publishes, kills the edge with SIGKILL while a
bundle is half received, and restarts the broker; then every bundle must
have arrived and been spoken exactly once, the flash ones before any bulk
(but the bundle the edge was killed receiving, which waits for a poll).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from relay.broker import LocalBroker, free_port, mosquitto_path
from relay.link import Priority
from relay.linksim import LinkSimThread
from relay.signing import SigningKey
from relay.testing.bundles import real_bundle

RELAY = str(Path(sys.executable).with_name("relay"))


@pytest.fixture()
def broker(tmp_path):
    if mosquitto_path() is None:
        pytest.skip("mosquitto is not installed (scripts/setup.sh installs it)")
    with LocalBroker(tmp_path / "broker") as b:
        yield b


def write_configs(tmp_path: Path, ground_port: int, edge_port: int, key: SigningKey, rate: float,
                  voice: str = "espeak:en-us+m3") -> tuple[Path, Path]:
    key.save(tmp_path / "ground.key")
    edge_key = SigningKey.generate()
    edge_key.save(tmp_path / "edge.key")
    ground = tmp_path / "ground.toml"
    ground.write_text(f"""
[ground]
name = "g1"
state_dir = "{tmp_path}/ground"
signing_key = "{tmp_path}/ground.key"
default_edge = "ship"

[edges.ship]
key = "{edge_key.public.text()}"

[broker]
port = {ground_port}
host = "127.0.0.1"
topic_prefix = "t"

[link]
fragment_size = 340
rate = {rate}
ack_timeout = 3
max_poll_interval = 6
""")
    edge = tmp_path / "edge.toml"
    edge.write_text(f"""
[edge]
name = "ship"
state_dir = "{tmp_path}/edge"
output_dir = "{tmp_path}/played"
play = false
voice = "{voice}"
signing_key = "{tmp_path}/edge.key"
trusted_keys = ["{key.public.text()}"]

[broker]
port = {edge_port}
host = "127.0.0.1"
topic_prefix = "t"
keepalive = 5
""")
    return ground, edge


def daemon(kind: str, config: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([RELAY, kind, "run", "-c", str(config)], stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})


def cli_json(*args: str) -> dict | list:
    out = subprocess.run([RELAY, *args, "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def queue(config: Path) -> list[dict]:
    return cli_json("queue", "ls", "--all", "-c", str(config))


def wait_for(predicate, timeout: float, what: str) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def add(ground_cfg: Path, path: Path, prio: Priority) -> None:
    proc = subprocess.run([RELAY, "queue", "add", str(path), "-p", prio.name.lower(), "-c", str(ground_cfg)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_twenty_bundles_once_each_flash_first_through_every_fault(broker, tmp_path):
    key = SigningKey.generate()
    logs = tmp_path / "logs"
    logs.mkdir()
    with LinkSimThread(broker.port, rate=2500.0, latency=0.25) as link:
        ground_cfg, edge_cfg = write_configs(tmp_path, broker.port, link.port, key, rate=1500.0)
        kinds = [Priority.BULK, Priority.NORMAL, Priority.PRIORITY, Priority.BULK]
        for i in range(16):
            path = tmp_path / f"b{i}.bundle"
            path.write_bytes(real_bundle(200 + 40 * i, f"b{i}", seed=i * 37))
            add(ground_cfg, path, kinds[i % 4])
        ground = daemon("ground", ground_cfg, logs / "ground.log")
        edge = daemon("edge", edge_cfg, logs / "edge.log")
        try:
            wait_for(lambda: any(q["fragments_sent"] > 2 for q in queue(ground_cfg)), 60, "fragments to flow")
            for j in range(4):  # flash material arrives while the others are in flight
                path = tmp_path / f"flash{j}.bundle"
                path.write_bytes(real_bundle(50, f"flash{j}", seed=500 + j))
                add(ground_cfg, path, Priority.FLASH)
            assert not any(q["fragments_sent"] for q in queue(ground_cfg) if q["priority"] == "bulk")

            link.cut()  # the satellite goes behind a mast
            time.sleep(4.0)
            link.restore()

            ground.send_signal(signal.SIGKILL)  # mid-publish
            ground.wait()
            ground = daemon("ground", ground_cfg, logs / "ground.log")

            arriving = lambda: cli_json("edge", "ls", "-c", str(edge_cfg))["arriving"]  # noqa: E731
            wait_for(lambda: link.stats.connections >= 2, 60, "the edge back on the link")
            time.sleep(1.0)
            wait_for(lambda: any(0 < a["fragments"] < a["of"] for a in arriving()), 60, "a bundle half received")
            edge.send_signal(signal.SIGKILL)  # mid-receive
            edge.wait()
            # what was in flight when the edge died completes through the ground's poll after
            # ack_timeout while other bundles keep the link busy, so it may be acknowledged late
            hit = {a["bundle_id"] for a in arriving()}
            assert any(q["state"] != "delivered" for q in queue(ground_cfg))  # still mid-transfer

            broker.restart()
            edge = daemon("edge", edge_cfg, logs / "edge.log")
            wait_for(lambda: all(q["state"] == "delivered" for q in queue(ground_cfg)), 240,
                     "every bundle delivered")
            entries = queue(ground_cfg)
            played = tmp_path / "played"
            wait_for(lambda: len(list(played.glob("*.wav"))) >= len(entries), 120, "every bundle spoken")
            time.sleep(2.0)  # nothing more may appear
        finally:
            for p in (ground, edge):
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
                    p.wait(20)
        assert link.stats.cuts == 1 and link.stats.connections >= 3  # the edge came back through the link
    wavs = sorted(played.glob("*.wav"))
    ids = {q["bundle_id"] for q in entries}
    assert len(wavs) == len(ids) == 20  # exactly once each
    assert {w.stem.split("-")[-1] for w in wavs} == ids
    stored = cli_json("edge", "ls", "-c", str(edge_cfg))["bundles"]
    assert len(stored) == 20 and all(b["plays"] == 1 and b["state"] == "accepted" for b in stored)
    acked = sorted((q for q in entries if q["bundle_id"] not in hit), key=lambda q: q["delivered"])
    flash_last = max(i for i, q in enumerate(acked) if q["priority"] == "flash")
    bulk_first = min(i for i, q in enumerate(acked) if q["priority"] == "bulk")
    assert flash_last < bulk_first, [(q["title"], q["priority"]) for q in acked]


def test_config_errors_name_the_key(tmp_path):
    bad = tmp_path / "ground.toml"
    bad.write_text('[link]\nfragment_size = 100\n')
    proc = subprocess.run([RELAY, "queue", "ls", "-c", str(bad)], capture_output=True, text=True)
    assert proc.returncode != 0 and proc.stderr.strip().count("\n") == 0
    assert "link.fragment_size" in proc.stderr and "340" in proc.stderr
    bad.write_text('[link]\nfragmnet_size = 400\n')
    proc = subprocess.run([RELAY, "queue", "ls", "-c", str(bad)], capture_output=True, text=True)
    assert "link.fragmnet_size: unknown key" in proc.stderr
    bad.write_text('[tiers]\ntier = "mp3"\n')
    proc = subprocess.run([RELAY, "queue", "ls", "-c", str(bad)], capture_output=True, text=True)
    assert "tiers.tier: unknown tier 'mp3'" in proc.stderr and proc.stderr.strip().count("\n") == 0
    edge = tmp_path / "edge.toml"
    edge.write_text('[edge]\nname = "ship"\n')
    proc = subprocess.run([RELAY, "edge", "ls", "-c", str(edge)], capture_output=True, text=True)
    assert "edge.trusted_keys" in proc.stderr and "Traceback" not in proc.stderr


def test_shipped_configurations_are_valid():
    from relay.config import load_edge, load_ground

    root = Path(__file__).resolve().parents[1] / "config"
    ground = load_ground(root / "ground.toml")
    assert ground.link.fragment_size == 340 and ground.ground.default_edge in ground.edges
    edge = load_edge(root / "edge.toml")
    assert edge.edge.name == ground.ground.default_edge and edge.edge.trusted_keys
    assert ground.tiers.tier == "text" and ground.tiers.codec == "codec2-3200"  # text unless the operator says


def test_an_unknown_voice_stops_the_edge_at_start_with_one_line(tmp_path):
    _, edge = write_configs(tmp_path, free_port(), free_port(), SigningKey.generate(), 100.0, voice="piper:nobody")
    proc = subprocess.run([RELAY, "edge", "run", "-c", str(edge)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "no voice 'piper:nobody'" in proc.stderr and "Traceback" not in proc.stderr

"""The ground and edge daemons over a real mosquitto, with faults.

Both daemons run as real processes (``relay ground run``, ``relay edge run``)
against a mosquitto started here with persistence; the test kills them with
SIGKILL mid-transfer and restarts the broker, and then checks that every
bundle arrived, was played exactly once, and that the flash ones went first.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_link import real_bundle

from relay.link import Priority
from relay.signing import SigningKey

RELAY = str(Path(sys.executable).with_name("relay"))
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """A real mosquitto on 127.0.0.1 with persistence in a temporary folder."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {folder}/\nautosave_interval 1\nmax_queued_messages 0\n"
            f"user {getpass.getuser()}\nlog_dest file {folder}/mosquitto.log\n"
        )
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)])
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # a clean stop writes the persistence file
            self.proc.wait(10)


@pytest.fixture()
def broker(tmp_path):
    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto is not installed (scripts/setup.sh installs it)")
    b = Broker(tmp_path / "broker")
    b.start()
    yield b
    b.stop()


def write_configs(tmp_path: Path, port: int, key: SigningKey, rate: float) -> tuple[Path, Path]:
    key.save(tmp_path / "ground.key")
    ground = tmp_path / "ground.toml"
    ground.write_text(f"""
[ground]
name = "g1"
state_dir = "{tmp_path}/ground"
signing_key = "{tmp_path}/ground.key"
default_edge = "ship"
edges = ["ship"]

[broker]
port = {port}
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
voice = "piper:en_US-joe-medium"
trusted_keys = ["{key.public.text()}"]

[broker]
port = {port}
host = "127.0.0.1"
topic_prefix = "t"
""")
    return ground, edge


def daemon(kind: str, config: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([RELAY, kind, "run", "-c", str(config)], stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})


def queue(config: Path) -> list[dict]:
    out = subprocess.run([RELAY, "queue", "ls", "--all", "--json", "-c", str(config)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def wait_for(predicate, timeout: float, what: str) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_every_bundle_once_flash_first_through_kills_and_a_broker_restart(broker, tmp_path):
    key = SigningKey.generate()
    ground_cfg, edge_cfg = write_configs(tmp_path, broker.port, key, rate=1500.0)
    logs = tmp_path / "logs"
    logs.mkdir()
    mix = [Priority.BULK, Priority.NORMAL, Priority.BULK, Priority.PRIORITY, Priority.NORMAL, Priority.BULK]
    for i, prio in enumerate(mix):
        path = tmp_path / f"b{i}.bundle"
        path.write_bytes(real_bundle(120 + 40 * i, f"b{i}", seed=i * 37))
        proc = subprocess.run([RELAY, "queue", "add", str(path), "-p", prio.name.lower(), "-c", str(ground_cfg)],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    ground = daemon("ground", ground_cfg, logs / "ground.log")
    edge = daemon("edge", edge_cfg, logs / "edge.log")
    try:
        wait_for(lambda: any(q["fragments_sent"] > 2 for q in queue(ground_cfg)), 60, "fragments to flow")
        # flash material arrives while bulk is in flight
        for j in range(2):
            path = tmp_path / f"flash{j}.bundle"
            path.write_bytes(real_bundle(60, f"flash{j}", seed=500 + j))
            subprocess.run([RELAY, "queue", "add", str(path), "-p", "flash", "-c", str(ground_cfg)], check=True,
                           capture_output=True)
        time.sleep(1.0)
        assert any(q["state"] != "acknowledged" for q in queue(ground_cfg))  # the faults hit mid-transfer
        ground.send_signal(signal.SIGKILL)  # mid-publish
        ground.wait()
        edge.send_signal(signal.SIGKILL)  # mid-receive
        edge.wait()
        broker.stop()
        broker.start()
        ground = daemon("ground", ground_cfg, logs / "ground.log")
        time.sleep(2.0)
        edge = daemon("edge", edge_cfg, logs / "edge.log")
        wait_for(lambda: all(q["state"] == "acknowledged" for q in queue(ground_cfg)), 180, "every acknowledgement")
        entries = queue(ground_cfg)
        played = tmp_path / "played"
        wait_for(lambda: len(list(played.glob("*.wav"))) >= len(entries), 120, "every bundle played")
        time.sleep(2.0)  # nothing more may appear
    finally:
        for p in (ground, edge):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(20)
    wavs = sorted(played.glob("*.wav"))
    ids = {q["bundle_id"] for q in entries}
    assert len(wavs) == len(ids) == len(mix) + 2  # exactly once each
    assert {w.stem.split("-")[-1] for w in wavs} == ids
    listing = subprocess.run([RELAY, "edge", "ls", "--json", "-c", str(edge_cfg)], capture_output=True, text=True)
    stored = json.loads(listing.stdout)["bundles"]
    assert all(b["plays"] == 1 and b["state"] == "accepted" for b in stored)
    acked = sorted(entries, key=lambda q: q["acknowledged"])
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
    edge = tmp_path / "edge.toml"
    edge.write_text('[edge]\nname = "ship"\n')
    proc = subprocess.run([RELAY, "edge", "ls", "-c", str(edge)], capture_output=True, text=True)
    assert "edge.trusted_keys" in proc.stderr and "Traceback" not in proc.stderr


def test_shipped_configurations_are_valid():
    from relay.config import load_edge, load_ground

    root = Path(__file__).resolve().parents[1] / "config"
    ground = load_ground(root / "ground.toml")
    assert ground.link.fragment_size == 340 and ground.ground.default_edge in ground.ground.edges
    edge = load_edge(root / "edge.toml")
    assert edge.edge.name == ground.ground.default_edge and edge.edge.trusted_keys

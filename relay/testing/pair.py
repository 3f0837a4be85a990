"""One broker, no ACL, a ground and an edge daemon: the setting for attacks
that assume the attacker can publish anywhere (the ground's broker password
leaked, or a broker without the shipped ACL), used by the hostile-input
tests and ``benchmarks/attacks.py``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from relay.link.signing import SigningKey
from relay.testing.broker import LocalBroker

RELAY = str(Path(sys.executable).with_name("relay"))


class Pair:
    """A ground and an edge daemon on one broker (topic prefix "relay", edge "ship1")."""

    def __init__(self, tmp: Path, broker: LocalBroker, ground_limits: str = "", edge_extra: str = "",
                 edge_skew: float = 0.0, ground_extra: str = "") -> None:
        """``edge_skew``: the edge's ``link.max_clock_skew``; 0 (one machine, one clock) lets a transfer the
        test signs the moment the edge's store began be taken at once; the default's first-transfer refusal
        and fresh signature are tested on their own. ``ground_extra``: more keys for ``[ground]``."""
        self.tmp = tmp
        self.broker = broker
        self.ground_key, self.edge_key = SigningKey.generate(), SigningKey.generate()
        self.ground_key.save(tmp / "ground.key")
        self.edge_key.save(tmp / "edge.key")
        self.ground_config = tmp / "ground.toml"
        self.ground_config.write_text(f"""
[ground]
state_dir = "{tmp}/ground"
signing_key = "{tmp}/ground.key"
default_edge = "ship1"
{ground_extra}
[edges.ship1]
key = "{self.edge_key.public.text()}"
[broker]
host = "127.0.0.1"
port = {broker.port}
[link]
ack_timeout = 3
max_poll_interval = 6
{ground_limits}
""")
        self.edge_config = tmp / "edge.toml"
        self.edge_config.write_text(f"""
[edge]
name = "ship1"
state_dir = "{tmp}/edge"
output_dir = "{tmp}/played"
play = false
voice = "espeak:en-us+m3"
signing_key = "{tmp}/edge.key"
trusted_keys = ["{self.ground_key.public.text()}"]
[broker]
host = "127.0.0.1"
port = {broker.port}
[link]
max_clock_skew = {edge_skew}
{edge_extra}
""")
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str) -> None:
        cfg = self.ground_config if name == "ground" else self.edge_config
        log = (self.tmp / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen([RELAY, name, "run", "-c", str(cfg)], stdout=log, stderr=subprocess.STDOUT,
                                            env={**os.environ, "HF_HUB_OFFLINE": "1"})

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text()

    def alive(self, name: str) -> bool:
        return self.procs[name].poll() is None

    def relay(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([RELAY, *args], capture_output=True, text=True, timeout=120)

    def queue(self, data: bytes, name: str, priority: str = "normal") -> None:
        path = self.tmp / f"{name}.bundle"
        path.write_bytes(data)
        proc = self.relay("ground", "queue", "add", str(path), "-p", priority, "-c", str(self.ground_config))
        assert proc.returncode == 0, proc.stderr

    def entries(self) -> list[dict]:
        proc = self.relay("ground", "queue", "ls", "--all", "--json", "-c", str(self.ground_config))
        return json.loads(proc.stdout)

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(30)


def wait_for(predicate, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def publisher(port: int) -> mqtt.Client:
    """A raw client that may publish anything anywhere (no ACL on this broker)."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"raw-{time.monotonic_ns()}")
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c

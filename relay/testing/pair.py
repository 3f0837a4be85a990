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

from relay.testing.broker import LocalBroker
from relay.testing.configs import Sections, write_station

RELAY = str(Path(sys.executable).with_name("relay"))


class Pair:
    """A ground and an edge daemon on one broker (topic prefix "relay", edge "ship1")."""

    def __init__(self, tmp: Path, broker: LocalBroker, ground: Sections | None = None,
                 edges: Sections | None = None, edge_skew: float = 0.0) -> None:
        """``ground``, ``edges``: keys added to each side's configuration, section by
        section (:func:`relay.testing.configs.write_station`). ``edge_skew``: the edge's
        ``link.max_clock_skew``; 0 (one machine, one clock) lets a transfer the test signs
        the moment the edge's store began be taken at once; the default's first-transfer
        refusal and fresh signature are tested on their own."""
        self.tmp = tmp
        self.broker = broker
        edge_sections: Sections = {"link": {"max_clock_skew": edge_skew}}
        for section, keys in (edges or {}).items():
            edge_sections.setdefault(section, {}).update(keys)
        station = write_station(tmp, broker.port, ground=ground, edges=edge_sections)
        self.ground_key, self.edge_key = station.ground_key, station.edge_key
        self.ground_config, self.edge_config = station.ground, station.edge
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

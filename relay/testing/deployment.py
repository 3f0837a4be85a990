"""The real deployment shape, on one machine, for tests and the soak benchmark.

Two mosquittos, each started the way Debian starts it (its main
configuration including ``conf.d``) with the *shipped* files in ``conf.d``:
``config/mosquitto.conf`` and ``config/mosquitto.acl`` on both, plus
``config/mosquitto-tls.conf`` on the ground's and
``config/mosquitto-bridge.conf`` on the ship's; only their paths
(``/etc/mosquitto/speech-relay/``), ports, the ground's address and the edge's
name are moved to this run's. The ship's bridge dials the ground's TLS
listener through the thin-link simulator (:mod:`relay.link.linksim`), logging in
with the certificate ``scripts/make-certs.sh`` made for it. The ground daemon
talks to the ground's broker, the edge daemon to the ship's, both with user
names and password files as an operator would set them up, and both run as
real ``relay ... run`` processes that a test can kill and restart. A
watchdog probes both brokers every few seconds and restarts one that stops
answering, as ``systemd/relay-broker-watchdog.*`` does in the field (Debian's
mosquitto 2.0.11 can hang after a TLS bridge loses the link mid-handshake);
``broker_hangs`` counts what it had to do.
"""

from __future__ import annotations

import getpass
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from relay.errors import RelayError
from relay.link.linksim import LinkSimThread
from relay.link.mqtt import probe
from relay.link.signing import SigningKey
from relay.testing.broker import LocalBroker, free_port
from relay.testing.configs import write_station

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config"
RELAY = str(Path(sys.executable).with_name("relay"))
SHIPPED_DIR = "/etc/mosquitto/speech-relay/"


def mosquitto_passwd(path: Path, user: str, password: str) -> None:
    exe = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    args = [exe, "-b", str(path), user, password]
    if not path.exists():
        args.insert(1, "-c")
    subprocess.run(args, check=True, capture_output=True)


class ShippedBroker(LocalBroker):
    """mosquitto with the shipped configuration files in its ``conf.d``."""

    def __init__(self, folder: str | Path, snippets: list[str], users: dict[str, str],
                 files: dict[str, Path] | None = None, replace: dict[str, str] | None = None,
                 tls: bool = False) -> None:
        self.snippets = snippets
        self.users = users
        self.files = files or {}
        self.replace = replace or {}
        self.tls_port = free_port() if tls else None
        super().__init__(folder)

    def configuration(self) -> str:
        etc = self.folder / "etc"
        conf_d = self.folder / "conf.d"
        for d in (etc, conf_d):
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True)
        for user, password in self.users.items():
            mosquitto_passwd(etc / "passwd", user, password)
        shutil.copy(CONFIG / "mosquitto.acl", etc / "acl")
        for name, path in self.files.items():
            shutil.copy(path, etc / name)
        for name in self.snippets:
            text = (CONFIG / name).read_text().replace(SHIPPED_DIR, f"{etc}/")
            text = re.sub(r"(?m)^listener 1883 ", f"listener {self.port} ", text)
            if self.tls_port:
                text = re.sub(r"(?m)^listener 8883$", f"listener {self.tls_port} 127.0.0.1", text)
            for old, new in self.replace.items():
                text = text.replace(old, new)
            (conf_d / name).write_text(text)
        # as Debian's /etc/mosquitto/mosquitto.conf, with this run's folders
        return (f"persistence true\npersistence_location {self.folder}/\nlog_dest file {self.log}\n"
                f"log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
                f"user {getpass.getuser()}\ninclude_dir {conf_d}\n")


@dataclass
class Deployment:
    """``with Deployment(folder) as d:`` brokers, bridge and link up; then
    :meth:`start` the daemons, :meth:`queue` files, :meth:`kill` and restart."""

    folder: Path
    edge: str = "ship1"
    link_rate: float = 2500.0  # bytes per second each way over the thin link
    latency: float = 0.25
    ground_rate: float = 1500.0  # the ground's budget
    fragment_size: int = 340
    ack_timeout: float = 3.0
    max_poll_interval: float = 6.0
    speak: bool = True
    voice: str = "espeak:en-us+m3"
    outages: tuple[float, float] | None = None  # the link simulator's random cuts
    passwords: dict[str, str] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    starts: dict[str, int] = field(default_factory=dict)
    broker_hangs: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        self.logs = self.folder / "logs"
        self._brokers_lock = threading.Lock()
        self._watching = threading.Event()
        self._watchdog: threading.Thread | None = None

    # --- setting up ------------------------------------------------------------------------------

    def __enter__(self) -> Deployment:
        f = self.folder
        self.logs.mkdir(parents=True, exist_ok=True)
        certs = f / "certs"
        proc = subprocess.run(["bash", str(ROOT / "scripts" / "make-certs.sh"), str(certs), "127.0.0.1", self.edge],
                              capture_output=True, text=True)
        if proc.returncode:
            raise RelayError(f"make-certs.sh failed: {proc.stderr.strip()}")
        self.passwords = {name: secrets.token_urlsafe(12) for name in ("ground", self.edge, "mallory")}
        self.ground_broker = ShippedBroker(
            f / "ground-broker", ["mosquitto.conf", "mosquitto-tls.conf"],
            {"ground": self.passwords["ground"], "mallory": self.passwords["mallory"]},
            files={n: certs / n for n in ("ca.crt", "server.crt", "server.key")}, tls=True)
        self.ground_broker.start()
        assert self.ground_broker.tls_port is not None
        self.link = LinkSimThread(self.ground_broker.tls_port, rate=self.link_rate, latency=self.latency,
                                  outages=self.outages)
        self.link.__enter__()
        self.ship_broker = ShippedBroker(
            f / "ship-broker", ["mosquitto.conf", "mosquitto-bridge.conf"],
            {self.edge: self.passwords[self.edge], "mallory": self.passwords["mallory"]},
            files={"ca.crt": certs / "ca.crt", f"{self.edge}.crt": certs / f"{self.edge}.crt",
                   f"{self.edge}.key": certs / f"{self.edge}.key"},
            replace={"ground.example.net:8883": f"127.0.0.1:{self.link.port}", "ship1": self.edge,
                     "restart_timeout 10 300": "restart_timeout 1 5"})
        try:
            self.ship_broker.start()
            self._write_configs()
        except BaseException:  # what started is stopped again: a failed set-up leaves no broker behind
            self.ship_broker.stop()
            self.link.__exit__()
            self.ground_broker.stop()
            raise
        self._watching.set()
        self._watchdog = threading.Thread(target=self._watch, name="broker-watchdog", daemon=True)
        self._watchdog.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._watching.clear()
        if self._watchdog is not None:
            self._watchdog.join(30)
        for name in list(self.procs):
            self.stop(name)
        self.ship_broker.stop()
        self.link.__exit__()
        self.ground_broker.stop()

    def broker(self, which: str) -> ShippedBroker:
        return self.ground_broker if which == "ground" else self.ship_broker

    def restart_broker(self, which: str) -> None:
        """Restart the ``ground`` or the ``ship`` broker (a clean stop: its persistence is written)."""
        with self._brokers_lock:
            self.broker(which).restart()

    def _watch(self, every: float = 3.0, misses: int = 3) -> None:
        missed = {"ground": 0, "ship": 0}
        while self._watching.wait(every) and self._watching.is_set():
            for which in missed:
                with self._brokers_lock:
                    b = self.broker(which)
                    if b.pid is None or probe("127.0.0.1", b.port, timeout=5.0) is not None:
                        missed[which] = 0
                        continue
                    missed[which] += 1
                    if missed[which] >= misses and b.proc is not None:
                        b.proc.kill()  # hung: a clean stop would not be answered either
                        b.proc.wait(10)
                        b.start()
                        self.broker_hangs[which] = self.broker_hangs.get(which, 0) + 1
                        missed[which] = 0

    def _write_configs(self) -> None:
        f = self.folder
        ground_key, edge_key = SigningKey.generate(), SigningKey.generate()
        for name, key in (("ground", ground_key), ("edge", edge_key)):
            if not (f / f"{name}.key").exists():
                key.save(f / f"{name}.key")
        ground_key, edge_key = SigningKey.load(f / "ground.key"), SigningKey.load(f / "edge.key")
        for name in ("ground", self.edge):
            (f / f"{name}.pass").write_text(self.passwords[name] + "\n")
            os.chmod(f / f"{name}.pass", 0o600)
        station = write_station(f, self.ground_broker.port, self.ship_broker.port, edge=self.edge, voice=self.voice,
                                ground_key=ground_key, edge_key=edge_key, ground={
            "ground": {"name": "ground"},
            "broker": {"password_file": f"{f}/ground.pass", "keepalive": 10},
            "link": {"fragment_size": self.fragment_size, "rate": self.ground_rate, "ack_timeout": self.ack_timeout,
                     "max_poll_interval": self.max_poll_interval},
        }, edges={
            "edge": {"speak": self.speak},
            "broker": {"password_file": f"{f}/{self.edge}.pass", "keepalive": 10},
            "link": {"max_clock_skew": 600.0},  # the shipped setting: the first transfer is signed again
        })
        self.ground_config, self.edge_config = station.ground, station.edge

    # --- the daemons -----------------------------------------------------------------------------

    def start(self, name: str) -> subprocess.Popen:
        """Start the ``ground`` or the ``edge`` daemon (again)."""
        cfg = self.ground_config if name == "ground" else self.edge_config
        log = (self.logs / f"{name}.log").open("ab")
        p = subprocess.Popen([RELAY, name, "run", "-c", str(cfg)], stdout=log, stderr=subprocess.STDOUT,
                             env={**os.environ, "HF_HUB_OFFLINE": "1"})
        self.procs[name] = p
        self.starts[name] = self.starts.get(name, 0) + 1
        return p

    def kill(self, name: str) -> None:
        """SIGKILL, as a power cut or the OOM killer would."""
        p = self.procs[name]
        p.send_signal(signal.SIGKILL)
        p.wait(30)

    def stop(self, name: str) -> int | None:
        p = self.procs.pop(name)
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        return p.returncode

    def alive(self, name: str) -> bool:
        p = self.procs.get(name)
        return p is not None and p.poll() is None

    def relay(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([RELAY, *args], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})

    def arriving(self) -> list[tuple[int, int]]:
        """(parts received, count) of every transfer in progress at the edge, read
        straight from its store (a command would be too slow to catch one)."""
        import sqlite3

        db = self.folder / "edge" / "inbox.db"
        if not db.exists():
            return []
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
            try:
                rows = con.execute("SELECT count, received FROM transfers").fetchall()
            finally:
                con.close()
        except sqlite3.Error:
            return []
        return [(sum(bin(b).count("1") for b in rec), n) for n, rec in rows]

    def queue(self, path: Path, priority: str) -> None:
        proc = self.relay("ground", "queue", "add", str(path), "-p", priority, "-c", str(self.ground_config))
        if proc.returncode:
            raise RelayError(f"queue add {path}: {proc.stderr.strip()}")

    def wait_for(self, predicate, timeout: float, what: str, every: float = 0.25) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return
            time.sleep(every)
        raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")

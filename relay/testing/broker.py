"""A private mosquitto for one run: the tests, the soak benchmark, the demo.

Production runs mosquitto as a system service (``config/mosquitto.conf``);
this starts the same broker as a child process on 127.0.0.1, with its
persistence in a folder of ours, so that a restart keeps the QoS 1
messages and persistent sessions it holds, exactly as the service would.
"""

from __future__ import annotations

import getpass
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from relay.errors import RelayError

CANDIDATES = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


def mosquitto_path() -> Path | None:
    found = shutil.which("mosquitto")
    if found:
        return Path(found)
    return next((Path(p) for p in CANDIDATES if Path(p).exists()), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalBroker:
    """``with LocalBroker(folder) as b:`` a mosquitto on ``127.0.0.1:b.port``;
    :meth:`stop` and :meth:`start` restart it with its persistence kept."""

    def __init__(self, folder: str | Path, port: int | None = None) -> None:
        exe = mosquitto_path()
        if exe is None:
            raise RelayError("mosquitto is not installed (apt install mosquitto; scripts/setup.sh does it)")
        self.exe = exe
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.conf = self.folder / "mosquitto.conf"
        self.log = self.folder / "mosquitto.log"
        self.conf.write_text(self.configuration())
        self.proc: subprocess.Popen | None = None

    def configuration(self) -> str:
        """mosquitto.conf for this broker: anonymous, on loopback, persistent."""
        # max_queued_messages 0: no cap on what waits for an absent client (the relay's queues are the bound)
        return (
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {self.folder}/\nautosave_interval 1\nmax_queued_messages 0\n"
            f"user {getpass.getuser()}\nlog_dest file {self.log}\n"
        )

    def start(self, timeout: float = 10.0) -> None:
        self.proc = subprocess.Popen([str(self.exe), "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RelayError(f"mosquitto exited at start (status {self.proc.returncode}); see {self.log}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RelayError(f"mosquitto did not open 127.0.0.1:{self.port} within {timeout:.0f} s; see {self.log}")

    def stop(self, timeout: float = 15.0) -> None:
        """A clean stop, which writes the persistence file; a broker that does
        not stop within ``timeout`` is killed, as systemd would (mosquitto
        2.0.11 has been seen to hang on SIGTERM with a bridge reconnecting
        over TLS; what it held since its last autosave is then lost, and the
        relay's own acks and polls get it back)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                self.killed = getattr(self, "killed", 0) + 1

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc and self.proc.poll() is None else None

    def __enter__(self) -> LocalBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

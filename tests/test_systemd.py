"""The shipped systemd units, as systemd itself scores them (``systemd-analyze
security --offline=true``): exposure at most 2.0 for both daemons and the
broker watchdog and the live capture, the edge and the capture still able
to open the sound card and each daemon to reach the local broker. And the probe the watchdog runs, against a live
broker and a dead one."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.conftest import ROOT

ANALYZE = shutil.which("systemd-analyze")


def exposure(unit: str) -> tuple[float, str]:
    proc = subprocess.run([ANALYZE, "security", "--offline=true", "--no-pager", str(ROOT / "systemd" / unit)],
                          capture_output=True, text=True, timeout=120)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    assert found, proc.stdout + proc.stderr
    return float(found.group(1)), proc.stdout


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed (scripts/setup.sh installs systemd)")
@pytest.mark.parametrize("unit", ["relay-ground.service", "relay-edge.service", "relay-broker-watchdog.service",
                                  "relay-capture.service"])
def test_units_are_hardened(unit):
    score, report = exposure(unit)
    assert score <= 2.0, report
    text = (ROOT / "systemd" / unit).read_text()
    if unit == "relay-capture.service":  # no network at all: the parts go into the ground's queue
        assert "IPAddressDeny=any" in text and "AF_INET" not in text and "relay ground capture" in text
        assert "DeviceAllow=char-alsa rw" in text and "SupplementaryGroups=audio" in text
        return
    assert "IPAddressAllow=localhost" in text and "AF_INET" in text  # the broker stays reachable
    if unit == "relay-broker-watchdog.service":
        assert "relay broker-check" in text and "systemctl restart mosquitto.service" in text
    if unit == "relay-edge.service":
        assert "DeviceAllow=char-alsa rw" in text and "SupplementaryGroups=audio" in text
        assert "PrivateDevices=yes" not in text  # would hide /dev/snd


def test_broker_check_tells_a_live_broker_from_a_dead_one(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from relay.testing.broker import LocalBroker, free_port, mosquitto_path

    if mosquitto_path() is None:
        pytest.skip("mosquitto is not installed (scripts/setup.sh)")
    relay = str(Path(sys.executable).with_name("relay"))
    with LocalBroker(tmp_path) as broker:
        alive = subprocess.run([relay, "broker-check", f"127.0.0.1:{broker.port}"], capture_output=True, text=True)
        assert alive.returncode == 0 and "answered in" in alive.stdout
        broker.proc.send_signal(19)  # SIGSTOP: the port still accepts, the broker answers no one (a hang)
        try:
            hung = subprocess.run([relay, "broker-check", f"127.0.0.1:{broker.port}", "--timeout", "2"],
                                  capture_output=True, text=True)
        finally:
            broker.proc.send_signal(18)  # SIGCONT
    assert hung.returncode == 1 and hung.stderr.startswith("error: ") and "did not answer" in hung.stderr
    dead = subprocess.run([relay, "broker-check", f"127.0.0.1:{free_port()}", "--timeout", "2"],
                          capture_output=True, text=True)
    assert dead.returncode == 1 and dead.stderr.count("\n") == 1

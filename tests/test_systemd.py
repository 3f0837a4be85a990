"""The shipped systemd units, as systemd itself scores them (``systemd-analyze
security --offline=true``): exposure at most 2.0 for both daemons, and the
edge still able to open the sound card and both to reach their broker."""

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
@pytest.mark.parametrize("unit", ["relay-ground.service", "relay-edge.service"])
def test_units_are_hardened(unit):
    score, report = exposure(unit)
    assert score <= 2.0, report
    text = (ROOT / "systemd" / unit).read_text()
    assert "IPAddressAllow=localhost" in text and "AF_INET" in text  # the broker stays reachable
    if unit == "relay-edge.service":
        assert "DeviceAllow=char-alsa rw" in text and "SupplementaryGroups=audio" in text
        assert "PrivateDevices=yes" not in text  # would hide /dev/snd

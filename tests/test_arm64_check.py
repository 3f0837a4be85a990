"""The arm64 check's verdict (scripts/arm64_check.py verify): a bundle arm64 decodes differently,
or encodes back to other bytes, fails the check and is named. The emulated run itself is
scripts/check-arm64.sh, which CI runs after the suite."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _verdict(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "arm64_check.py"), "verify", str(folder)],
                          capture_output=True, text=True, timeout=600)


def test_identical_bundles_pass_and_any_difference_is_named(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    from arm64_check import _canonical

    from relay.format.bundle import Bundle, Segment, SourceInfo, Speaker, Word
    from relay.format.wire import decode_bundle, encode_bundle

    bundle = Bundle(SourceInfo("check", 3.0, "en"), [Speaker("S1")],
                    [Segment(0, 0.0, 1.2, "hello there", (Word("hello", 0.0, 0.5), Word("there", 0.6, 1.2)))])
    data = encode_bundle(bundle, version=2)
    for name in ("one", "two"):
        (tmp_path / f"{name}.bundle").write_bytes(data)
        dump = json.dumps(_canonical(decode_bundle(data)), sort_keys=True)
        (tmp_path / f"{name}.x86.json").write_text(dump)
        (tmp_path / f"{name}.arm64.json").write_text(dump)
        (tmp_path / f"{name}.arm64.bundle.again").write_bytes(data)
    ok = _verdict(tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.count("ok   ") == 2

    (tmp_path / "two.arm64.json").write_text((tmp_path / "two.arm64.json").read_text().replace("there", "their"))
    (tmp_path / "one.arm64.bundle.again").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    bad = _verdict(tmp_path)
    assert bad.returncode == 1
    assert "FAIL one: arm64 encodes it back to different bytes" in bad.stdout
    assert "FAIL two: arm64 decodes it differently" in bad.stdout and "there" in bad.stdout

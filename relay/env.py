"""Every environment variable speech-relay reads, read here and nowhere else.

Configuration lives in TOML files (:mod:`relay.config`); the environment only
supplies defaults for what a file does not say, and the places the packaged
models and the state go when there is no file at all (a user running the
demo, the tests). Library code takes its settings as arguments; only this
module looks at ``os.environ``.

=============================  ==========================================================
variable                       meaning
=============================  ==========================================================
``SPEECH_RELAY_HOME``          state (queues, profile stores) when no config says
``SPEECH_RELAY_CACHE``         rebuildable files (joined models, ONNX exports, voice bank)
``SPEECH_RELAY_GROUND_CONFIG`` the ground's TOML when ``-c`` is not given
``SPEECH_RELAY_EDGE_CONFIG``   the edge's TOML when ``-c`` is not given
``SPEECH_RELAY_LYRA``          folder of Lyra v2's three ``.tflite`` models
``SPEECH_RELAY_VOICES``        extra Piper voice folders (``os.pathsep``-separated)
``SPEECH_RELAY_KOKORO_MODEL``  a Kokoro ``.onnx`` model (with ``..._VOICES``)
``SPEECH_RELAY_KOKORO_VOICES`` its style voices (``.bin``)
``SPEECH_RELAY_KOKORO_STYLES`` Kokoro v1.0's 54-style set (default: in the venv, by setup)
``SPEECH_RELAY_FIT_VOICES``    ``0``: the ground fits no voices unless its config says so
``SPEECH_RELAY_COQUI_MODEL``   a Coqui TTS model name or checkpoint
``SPEECH_RELAY_COQUI_CONFIG``  that checkpoint's ``config.json``
``SPEECH_RELAY_SHARED``        the shared test data (tests and benchmarks only)
``HF_TOKEN``                   a Hugging Face token, for hub pipelines
``XDG_CACHE_HOME``,            the usual fallbacks for the cache and the state
``XDG_DATA_HOME``
=============================  ==========================================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def _path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else None


@dataclass(frozen=True, slots=True)
class Environment:
    home: Path | None
    cache: Path | None
    ground_config: Path | None
    edge_config: Path | None
    lyra: Path | None
    voices: tuple[Path, ...]
    kokoro_model: Path | None
    kokoro_voices: Path | None
    kokoro_styles: Path | None
    fit_voices: bool
    coqui_model: str | None
    coqui_config: Path | None
    shared: Path | None
    hf_token: str | None
    xdg_cache: Path | None
    xdg_data: Path | None


def environment() -> Environment:
    """The environment now (read at each call: tests change it)."""
    return Environment(
        home=_path("SPEECH_RELAY_HOME"),
        cache=_path("SPEECH_RELAY_CACHE"),
        ground_config=_path("SPEECH_RELAY_GROUND_CONFIG"),
        edge_config=_path("SPEECH_RELAY_EDGE_CONFIG"),
        lyra=_path("SPEECH_RELAY_LYRA"),
        voices=tuple(Path(d).expanduser() for d in os.environ.get("SPEECH_RELAY_VOICES", "").split(os.pathsep) if d),
        kokoro_model=_path("SPEECH_RELAY_KOKORO_MODEL"),
        kokoro_voices=_path("SPEECH_RELAY_KOKORO_VOICES"),
        kokoro_styles=_path("SPEECH_RELAY_KOKORO_STYLES"),
        fit_voices=os.environ.get("SPEECH_RELAY_FIT_VOICES", "1") != "0",
        coqui_model=os.environ.get("SPEECH_RELAY_COQUI_MODEL") or None,
        coqui_config=_path("SPEECH_RELAY_COQUI_CONFIG"),
        shared=_path("SPEECH_RELAY_SHARED"),
        hf_token=os.environ.get("HF_TOKEN") or None,
        xdg_cache=_path("XDG_CACHE_HOME"),
        xdg_data=_path("XDG_DATA_HOME"),
    )

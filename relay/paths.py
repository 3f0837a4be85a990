"""Where speech-relay keeps what it derives and what it remembers.

* cache (rebuildable: joined model files, ONNX exports, voice embeddings):
  ``speech-relay`` under ``$SPEECH_RELAY_CACHE``, else under
  ``$XDG_CACHE_HOME``, else ``~/.cache/speech-relay``;
* state (profile stores, voice assignments): ``$SPEECH_RELAY_HOME``, else
  ``$XDG_DATA_HOME/speech-relay``, else ``~/.local/share/speech-relay``.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    base = os.environ.get("SPEECH_RELAY_CACHE") or os.environ.get("XDG_CACHE_HOME")
    return Path(base) / "speech-relay" if base else Path.home() / ".cache" / "speech-relay"


def state_dir(role: str) -> Path:
    base = os.environ.get("SPEECH_RELAY_HOME")
    data_home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return (Path(base) if base else data_home / "speech-relay") / role

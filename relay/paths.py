"""Where speech-relay keeps what it derives and what it remembers, when no
configuration says otherwise.

* cache (rebuildable: joined model files, ONNX exports, voice embeddings):
  ``speech-relay`` under ``$SPEECH_RELAY_CACHE``, else under
  ``$XDG_CACHE_HOME``, else ``~/.cache/speech-relay``;
* state (queues, profile stores, voice assignments): ``<role>`` under
  ``$SPEECH_RELAY_HOME``, else ``$XDG_DATA_HOME/speech-relay``, else
  ``~/.local/share/speech-relay``. The daemons' configurations name their own
  ``state_dir`` (``/var/lib/speech-relay`` under systemd).
"""

from __future__ import annotations

from pathlib import Path

from relay.env import environment


def cache_dir() -> Path:
    env = environment()
    base = env.cache or env.xdg_cache
    return base / "speech-relay" if base else Path.home() / ".cache" / "speech-relay"


def state_dir(role: str) -> Path:
    env = environment()
    data_home = env.xdg_data or Path.home() / ".local" / "share"
    return (env.home or data_home / "speech-relay") / role

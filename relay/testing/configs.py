"""Settings the tests share, and one writer of a test station's configuration pair."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import tomli_w

from relay.config import EdgeLink
from relay.link.signing import SigningKey

# An edge store whose clock is the ground's (one machine): it takes a transfer signed the moment it began.
# A real store refuses what was signed before it began and max_clock_skew after (edge.store), and the
# ground signs such a transfer again; tests that open a store and send to it at once would only measure that.
SAME_CLOCK = EdgeLink(max_clock_skew=0)

Sections = dict[str, dict[str, object]]


@dataclass(frozen=True, slots=True)
class Station:
    """A ground and an edge configured for each other: their TOML files and keys."""

    ground: Path
    edge: Path
    ground_key: SigningKey
    edge_key: SigningKey


def write_station(folder: Path, ground_port: int, edge_port: int | None = None, *, edge: str = "ship1",
                  voice: str = "espeak:en-us+m3", ground: Sections | None = None,
                  edges: Sections | None = None, ground_key: SigningKey | None = None,
                  edge_key: SigningKey | None = None) -> Station:
    """Write ``ground.toml`` and ``edge.toml`` (and both keys) in ``folder``: a
    ground that sends to ``edge`` through the broker on ``ground_port``, an
    edge that trusts it on ``edge_port`` (the same broker by default), each
    writing under ``folder``, the edge speaking with ``voice`` into files.
    ``ground`` and ``edges`` add or override keys, section by section (``edges``
    for the edge's file). ``ground_key``, ``edge_key``: keys to use (new ones otherwise)."""
    ground_key, edge_key = ground_key or SigningKey.generate(), edge_key or SigningKey.generate()
    for key, name in ((ground_key, "ground.key"), (edge_key, "edge.key")):
        if not (folder / name).exists():  # a key file already there is the one passed (a station set up again)
            key.save(folder / name)
    g: Sections = {
        "ground": {"state_dir": f"{folder}/ground", "signing_key": f"{folder}/ground.key", "default_edge": edge},
        "edges": {edge: {"key": edge_key.public.text()}},
        "broker": {"host": "127.0.0.1", "port": ground_port},
        "link": {"ack_timeout": 3, "max_poll_interval": 6},
    }
    e: Sections = {
        "edge": {"name": edge, "state_dir": f"{folder}/edge", "output_dir": f"{folder}/played", "play": False,
                 "voice": voice, "signing_key": f"{folder}/edge.key",
                 "trusted_keys": [ground_key.public.text()]},
        "broker": {"host": "127.0.0.1", "port": edge_port or ground_port},
        "link": {"max_clock_skew": 0},  # one machine, one clock (SAME_CLOCK)
    }
    for base, extra in ((g, ground), (e, edges)):
        for section, keys in (extra or {}).items():
            base.setdefault(section, {}).update(keys)
    paths = folder / "ground.toml", folder / "edge.toml"
    for path, sections in zip(paths, (g, e)):
        path.write_text(tomli_w.dumps(sections))
    return Station(paths[0], paths[1], ground_key, edge_key)

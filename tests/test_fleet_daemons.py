"""A fleet over a real broker: one ground daemon, real edge daemons, one
recording queued for a group, encoded once, delivered and played on each
ship that is up while the one that is down keeps nobody waiting; and an edge
restarted in the middle of a transfer does not ask again for parts its
broker session held."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import tomli_w

from relay.link.signing import SigningKey
from relay.testing.broker import LocalBroker, mosquitto_path
from relay.testing.bundles import real_bundle
from relay.testing.pair import wait_for
from tests.conftest import shared
from tests.test_daemons import RELAY

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(mosquitto_path() is None, reason="mosquitto is not installed (scripts/setup.sh)")]


class Fleet:
    """A ground serving ``names`` (group ``@fleet``), each edge a daemon of its own when started."""

    def __init__(self, tmp: Path, port: int, names: list[str], rate: float = 0.0) -> None:
        self.tmp, self.names = tmp, names
        ground_key = SigningKey.generate()
        ground_key.save(tmp / "ground.key")
        keys = {n: SigningKey.generate() for n in names}
        ground = {
            "ground": {"state_dir": f"{tmp}/ground", "signing_key": f"{tmp}/ground.key", "default_edge": names[0],
                       "diarize": False, "fit_voices": False},
            "edges": {n: {"key": k.public.text()} for n, k in keys.items()},
            "groups": {"fleet": names},
            "broker": {"host": "127.0.0.1", "port": port},
            "link": {"ack_timeout": 3, "max_poll_interval": 6, "rate": rate},
        }
        self.ground = tmp / "ground.toml"
        self.ground.write_text(tomli_w.dumps(ground))
        self.edges: dict[str, Path] = {}
        for n, k in keys.items():
            k.save(tmp / f"{n}.key")
            edge = {
                "edge": {"name": n, "state_dir": f"{tmp}/{n}", "output_dir": f"{tmp}/{n}-played", "play": False,
                         "voice": "espeak:en-us+m3", "signing_key": f"{tmp}/{n}.key",
                         "trusted_keys": [ground_key.public.text()]},
                "broker": {"host": "127.0.0.1", "port": port},
                "link": {"max_clock_skew": 0},
            }
            self.edges[n] = tmp / f"{n}.toml"
            self.edges[n].write_text(tomli_w.dumps(edge))
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str) -> None:
        config = self.ground if name == "ground" else self.edges[name]
        log = (self.tmp / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen([RELAY, "ground" if name == "ground" else "edge", "run", "-c",
                                             str(config)], stdout=log, stderr=subprocess.STDOUT,
                                            env={**os.environ, "HF_HUB_OFFLINE": "1"})

    def stop(self, name: str) -> None:
        p = self.procs[name]
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            p.wait(60)

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text()

    def relay(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([RELAY, *args, "-c", str(self.ground)], capture_output=True, text=True, timeout=120)

    def rows(self) -> list[dict]:
        return json.loads(self.relay("ground", "queue", "ls", "--all", "--json").stdout)

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(name)


def test_a_recording_for_the_fleet_is_encoded_once_and_each_ship_up_plays_it(tmp_path):
    with LocalBroker(tmp_path / "broker") as broker:
        fleet = Fleet(tmp_path, broker.port, ["north1", "north2", "south1"])
        try:
            for name in ("north1", "north2"):  # south1 is down all along
                fleet.start(name)
                wait_for(lambda n=name: (tmp_path / n / "inbox.db").exists(), 600, f"{name}'s store")
            added = fleet.relay("ground", "queue", "add", str(shared("ljspeech", "LJ001-0001.flac")), "--to",
                                "@fleet", "--title", "morning brief")
            assert added.returncode == 0 and "3 edges" in added.stdout, added.stderr
            fleet.start("ground")
            wait_for(lambda: sum(r.get("play_state") == "played" for r in fleet.rows()) == 2, 900,
                     "both ships that are up to play it")
            rows = {r["edge"]: r for r in fleet.rows()}
            assert {r["entry"] for r in rows.values()} == {1} and len({r["bundle_id"] for r in rows.values()}) == 1
            assert rows["south1"]["state"] == "sending" and rows["south1"]["play_state"] is None
            assert fleet.log("ground").count("encoding entry 1 ") == 1  # once, for all three
            for name in ("north1", "north2"):
                assert len(list((tmp_path / f"{name}-played").glob("*.wav"))) == 1
                # an edge says what it is doing while it prepares a bundle, not only once it is played
                assert "morning brief, normal" in fleet.log(name) and "preparing its voices" in fleet.log(name)
            status = fleet.relay("ground", "status")
            assert "played on 2/3 edges; not yet: south1" in status.stdout, status.stdout
            assert "broker link up" in status.stdout
            # the ship that was down comes up: it gets it too, and nobody hears it twice
            fleet.start("south1")
            wait_for(lambda: all(r.get("play_state") == "played" for r in fleet.rows()), 900, "south1 to play it")
            for name in fleet.names:
                assert len(list((tmp_path / f"{name}-played").glob("*.wav"))) == 1
            fleet.stop("ground")
            assert "ground daemon stopped" in fleet.relay("ground", "status").stdout  # not "reconnecting"
            for name in ["ground", *fleet.names]:
                assert "Traceback" not in fleet.log(name), fleet.log(name)
        finally:
            fleet.close()


def test_an_edge_restarted_mid_transfer_does_not_ask_for_what_its_session_held(tmp_path):
    from edge.store import Inbox
    from relay.config import load_edge

    with LocalBroker(tmp_path / "broker") as broker:
        fleet = Fleet(tmp_path, broker.port, ["ship1"], rate=200.0)
        try:
            fleet.start("ship1")
            wait_for(lambda: (tmp_path / "ship1" / "inbox.db").exists(), 600, "the edge's store")
            bundle = tmp_path / "long.bundle"
            bundle.write_bytes(real_bundle(3000, title="long"))  # about 15 parts, 30 s
            assert fleet.relay("ground", "queue", "add", str(bundle)).returncode == 0
            fleet.start("ground")
            inbox = Inbox.of(load_edge(fleet.edges["ship1"]))
            wait_for(lambda: any(have >= 2 for _, have, _ in inbox.partial()), 600, "the first parts to arrive")
            fleet.stop("ship1")  # mid-transfer: what the ground sends now, the broker keeps for it
            wait_for(lambda: fleet.rows()[0]["pending_fragments"] == 0, 600, "the ground to send the rest")
            sent = fleet.rows()[0]["fragments_sent"]
            fleet.start("ship1")
            wait_for(lambda: fleet.rows()[0]["state"] == "delivered", 600, "the bundle to be delivered")
            row = fleet.rows()[0]
            assert row["fragments_sent"] == sent == row["fragments"], row  # nothing sent twice
            assert "missing parts" not in fleet.log("ship1")
        finally:
            fleet.close()


def test_the_spool_sends_a_folders_files_to_the_edges_it_names(tmp_path):
    """spool/FILE -> default_edge; spool/@fleet/FILE -> every ship, one entry; spool/ship9/FILE -> refused with
    its reason beside it; the daemon keeps running. No broker is needed to queue."""
    from relay.testing.broker import free_port

    fleet = Fleet(tmp_path, free_port(), ["north1", "north2"])
    spool = tmp_path / "spool"
    for folder in ("", "@fleet", "ship9"):
        (spool / folder).mkdir(parents=True, exist_ok=True)
    text = fleet.ground.read_text().replace('[ground]\n', f'[ground]\nspool_dir = "{spool}"\nspool_settle = 0.0\n')
    fleet.ground.write_text(text)
    (spool / "plain.bundle").write_bytes(real_bundle(20, seed=1))
    (spool / "@fleet" / "brief.bundle").write_bytes(real_bundle(20, seed=2))
    (spool / "ship9" / "lost.bundle").write_bytes(real_bundle(20, seed=3))
    try:
        fleet.start("ground")
        wait_for(lambda: list((spool / ".rejected").glob("*-lost.bundle.reason")) and len(fleet.rows()) == 3, 120,
                 "the spool to be taken")
        rows = fleet.rows()
        by_title = {}
        for r in rows:
            by_title.setdefault(r["title"], set()).add(r["edge"])
        assert by_title == {"plain": {"north1"}, "brief": {"north1", "north2"}}
        assert len({r["entry"] for r in rows if r["title"] == "brief"}) == 1
        (reason,) = [p.read_text() for p in (spool / ".rejected").glob("*-lost.bundle.reason")]
        assert reason.startswith("spool folder ship9: not an edge this ground serves"), reason
        assert (spool / ".taken" / "@fleet").is_dir() and not list((spool / "@fleet").iterdir())
        assert fleet.procs["ground"].poll() is None and "Traceback" not in fleet.log("ground")
    finally:
        fleet.close()

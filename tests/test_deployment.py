"""The real deployment shape, with faults and an attacker.

Two mosquittos started with the shipped configuration (password files, the
ACL, the ground's TLS listener, the ship's bridge with its certificate), the
bridge running over the thin-link simulator; the ground and edge daemons as
real processes with password files. While 20 bundles of mixed priority go
across, a hostile broker user on each broker publishes garbage, forged
parts, manifests, polls and acks on every topic it names, and one message
over the size limit; the link is cut, each daemon is killed with SIGKILL
mid-transfer and each broker restarted. Every bundle must arrive, be spoken
exactly once and be reported played to the ground; every flash bundle must
be delivered before any bulk one; neither daemon may stop on its own; the
attacker must hear nothing.
"""

from __future__ import annotations

import json
import time

import paho.mqtt.client as mqtt
import pytest

from ground.queue import Outbox
from relay.link.messages import Priority
from relay.testing.broker import mosquitto_path
from relay.testing.bundles import real_bundle
from relay.testing.deployment import Deployment
from relay.testing.hostile import Hostile

pytestmark = [
    pytest.mark.slow,  # runs the daemons for minutes
    pytest.mark.skipif(mosquitto_path() is None, reason="mosquitto is not installed (scripts/setup.sh)"),
]


def connect(port: int, user: str, password: str) -> tuple[mqtt.Client, list, list]:
    got: list[tuple[str, bytes]] = []
    codes: list = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"probe-{user}-{time.monotonic_ns()}")
    c.username_pw_set(user, password)
    c.on_message = lambda cl, u, m: got.append((m.topic, bytes(m.payload)))
    c.on_connect = lambda cl, u, f, rc, p: codes.append(str(rc))
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c, got, codes


def until(predicate, timeout: float = 20.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_the_shipped_broker_configuration_starts_and_its_acl_holds(tmp_path):
    """Each edge reads only its own downlink and writes only its own acks; the
    ground reaches every edge; a stranger with a password reads nothing; the
    ship's bridge carries the edge's topics over TLS with its certificate."""
    with Deployment(tmp_path) as d:
        pw = d.passwords
        ground, ground_got, codes = connect(d.ground_broker.port, "ground", pw["ground"])
        edge, edge_got, _ = connect(d.ship_broker.port, "ship1", pw["ship1"])
        mallory_g, mallory_g_got, _ = connect(d.ground_broker.port, "mallory", pw["mallory"])
        mallory_s, mallory_s_got, _ = connect(d.ship_broker.port, "mallory", pw["mallory"])
        intruder, _, refused = connect(d.ship_broker.port, "ship1", "not-the-password")
        assert until(lambda: codes and refused)
        assert codes[0] == "Success" and refused[0] == "Not authorized"
        ground.subscribe("relay/+/a", 1)
        edge.subscribe("relay/ship1/d", 1)
        for c in (mallory_g, mallory_s):
            c.subscribe("#", 1)
        assert until(lambda: "relay-bridge-ship1" in d.ground_broker.log.read_text(), 30), "the bridge never came"
        for _ in range(30):  # the bridge subscribes just after it connects: send until the downlink carries
            ground.publish("relay/ship1/d", b"to ship1", qos=1).wait_for_publish(5)
            if until(lambda: bool(edge_got), 1.0):
                break
        assert edge_got, "the bridge did not carry the downlink"
        tries = [
            (edge, "relay/ship1/a", b"ack from ship1"),
            (edge, "relay/ship1/d", b"edge writes its own downlink"),
            (edge, "relay/ship2/a", b"ship1 as ship2"),
            (ground, "relay/ship2/d", b"to ship2"),
            (mallory_s, "relay/ship1/d", b"mallory to ship1"),
            (mallory_g, "relay/ship1/d", b"mallory to ship1 via the ground"),
            (mallory_g, "relay/ship1/a", b"mallory as ship1"),
            (mallory_g, "relay/mallory/a", b"mallory's own"),
        ]
        for client, topic, payload in tries:  # each handled by its broker (acknowledged) before the markers go
            client.publish(topic, payload, qos=1).wait_for_publish(5)
        # positive controls, sent after every try: once they are through, anything let through is too
        ground.publish("relay/ship1/d", b"marker down", qos=1).wait_for_publish(5)
        edge.publish("relay/ship1/a", b"marker up", qos=1).wait_for_publish(5)
        assert until(lambda: b"marker up" in [p for _, p in ground_got] and b"marker down" in [p for _, p in edge_got])
        assert sorted(p for _, p in ground_got) == [b"ack from ship1", b"mallory's own", b"marker up"]  # no mallory
        assert [p for _, p in edge_got if p != b"to ship1"] == [b"marker down"]
        assert mallory_g_got == [] and mallory_s_got == []
        for c in (ground, edge, mallory_g, mallory_s, intruder):
            c.loop_stop()


def edge_ls(d: Deployment) -> dict:
    proc = d.relay("edge", "ls", "--json", "-c", str(d.edge_config))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def ground_queue(d: Deployment) -> list[dict]:
    proc = d.relay("ground", "queue", "ls", "--all", "--json", "-c", str(d.ground_config))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_twenty_bundles_through_faults_and_an_attacker_once_each_flash_first(tmp_path):
    with Deployment(tmp_path) as d:
        kinds = [Priority.BULK, Priority.NORMAL, Priority.PRIORITY, Priority.BULK]
        for i in range(16):
            path = tmp_path / f"b{i}.bundle"
            path.write_bytes(real_bundle(100 + 20 * i, f"b{i}", seed=i * 37))  # 2 to 4 parts each
            d.queue(path, kinds[i % 4].name.lower())
        ids = [bytes.fromhex(q["bundle_id"]) for q in ground_queue(d)]
        targets = ["relay/ship1/d", "relay/ship1/a", "relay/mallory/a", "relay/ground/d", "relay/ship2/a", "relay"]
        with Hostile(d.ground_broker.port, "mallory", d.passwords["mallory"], targets, ids, seed=1) as at_ground, \
                Hostile(d.ship_broker.port, "mallory", d.passwords["mallory"], targets, ids, seed=2) as at_ship:
            d.start("edge")  # first: until the edge has subscribed once, its broker keeps nothing for it
            d.wait_for(lambda: b"connected" in (d.logs / "edge.log").read_bytes(), 600, "the edge to connect")
            d.start("ground")
            d.wait_for(lambda: any(q["fragments_sent"] > 2 for q in ground_queue(d)), 600, "fragments to flow")
            at_ground.oversized("relay/mallory/a")
            flash_queued = int(time.time())
            outbox = Outbox(tmp_path / "ground" / "queue.db")  # as `relay queue add` does, without its start-up time
            for j in range(4):  # flash material arrives while the others are in flight
                outbox.add_bundle(real_bundle(50, f"flash{j}", seed=500 + j), "ship1", Priority.FLASH)
            outbox.close()

            d.link.cut()  # the satellite goes behind a mast
            time.sleep(4.0)
            d.link.restore()

            d.kill("ground")  # mid-publish
            d.start("ground")
            d.wait_for(lambda: any(0 < n < of for n, of in d.arriving()), 600, "a bundle half received",
                       every=0.02)
            d.kill("edge")  # mid-receive
            assert any(q["state"] != "delivered" for q in ground_queue(d))  # still mid-transfer
            d.restart_broker("ground")
            d.restart_broker("ship")
            d.start("edge")
            # deadlines only: a loaded machine may take long, a passing run does not wait for them
            d.wait_for(lambda: all(q["state"] == "delivered" for q in ground_queue(d)), 900,
                       "every bundle delivered", every=1.0)
            played = tmp_path / "played"
            d.wait_for(lambda: len(list(played.glob("*.wav"))) >= 20, 900, "every bundle spoken")
            d.wait_for(lambda: all(q["play_state"] == "played" for q in ground_queue(d)), 900,
                       "every play report back at the ground", every=1.0)
            # a positive control: one more bundle, sent after everything above, played; what the link still
            # carried of the others (resends, the attacker's) went before it, so a second play would show now
            path = tmp_path / "last.bundle"
            path.write_bytes(real_bundle(40, "last", seed=999))
            d.queue(path, "flash")
            d.wait_for(lambda: all(q["play_state"] == "played" for q in ground_queue(d)), 900,
                       "the last bundle played", every=1.0)
            assert d.alive("ground") and d.alive("edge"), "a daemon stopped on its own"
        assert at_ground.sent > 100 and at_ship.sent > 100
        assert at_ground.heard == [] and at_ship.heard == []  # the ACL let it read nothing
        assert d.link.stats.cuts == 1
    entries = ground_queue(d)
    wavs = sorted(played.glob("*.wav"))
    bundle_ids = {q["bundle_id"] for q in entries}
    assert len(wavs) == len(bundle_ids) == 21  # exactly once each (the twenty and the last)
    assert {w.stem.split("-")[-1] for w in wavs} == bundle_ids
    stored = edge_ls(d)["bundles"]
    assert len(stored) == 21 and all(b["plays"] == 1 and b["state"] == "accepted" for b in stored)
    entries = [q for q in entries if q["title"] != "last"]  # the twenty
    # priorities decide what is sent next: every bulk bundle that had not started when the flash
    # ones were queued is delivered after every flash one, whatever the faults in between
    delivered = sorted(entries, key=lambda q: q["delivered"])
    later_bulk = [q for q in entries if q["priority"] == "bulk" and (q["started"] or 0) > flash_queued]
    assert later_bulk, [(q["title"], q["started"], flash_queued) for q in entries]
    flash_last = max(q["delivered"] for q in entries if q["priority"] == "flash")
    assert all(q["delivered"] > flash_last for q in later_bulk), [(q["title"], q["priority"]) for q in delivered]
    ground_log = (d.logs / "ground.log").read_text()
    assert "no edge 'mallory'" in ground_log and "Traceback" not in ground_log
    assert "Traceback" not in (d.logs / "edge.log").read_text()

"""The daemons against what a hostile or broken peer sends them, over a real broker.

One mosquitto with no ACL (as if an attacker held the ground's broker
credentials), both daemons as real processes. Each test sends what the issue
list found could stop a daemon or lose a bundle, and checks that the daemon
logs it, drops it and goes on, and that the real traffic still arrives.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path

import msgpack
import pytest

from relay.format.bundle import AudioClip, Bundle, Segment, SourceInfo, Speaker, Word
from relay.format.wire import encode_bundle
from relay.link.messages import Ack, AckState, Fragment, Priority
from relay.link.signing import SigningKey
from relay.link.transfer import OutgoingTransfer
from relay.testing.broker import LocalBroker, mosquitto_path
from relay.testing.bundles import real_bundle
from relay.testing.hostile import Hostile
from relay.testing.pair import Pair, publisher, wait_for

pytestmark = [
    pytest.mark.slow,  # runs the daemons for minutes
    pytest.mark.skipif(mosquitto_path() is None, reason="mosquitto is not installed (scripts/setup.sh)"),
]
RELAY = str(Path(sys.executable).with_name("relay"))


@pytest.fixture()
def pair(tmp_path):
    with LocalBroker(tmp_path / "broker") as broker:
        p = Pair(tmp_path, broker)
        yield p
        p.stop()


def test_no_ack_stops_the_ground(pair):
    """Acks for bundles the ground never sent (a second ground on the broker),
    signed by the real edge; a profile id of 2**40; unsigned and forged acks;
    garbage; an edge the ground does not serve: all logged and dropped."""
    pair.start("ground")
    wait_for(lambda: "connected" in pair.log("ground"), 600, "the ground to connect")
    raw = publisher(pair.broker.port)
    key = pair.edge_key
    huge = msgpack.packb([3, bytes(8), 1, [], "", [2**40], 0, 1, 0, 1, 0])  # used to allocate a terabyte
    bad = [
        Ack(os.urandom(8), AckState.ACCEPTED).pack(key, "ship1"),  # a bundle this ground does not know
        huge + key.sign(b"speech-relay ack v3\0", b"ship1\0" + huge)[1],
        Ack(os.urandom(8), AckState.ACCEPTED).body(),  # unsigned
        Ack(os.urandom(8), AckState.ACCEPTED).pack(SigningKey.generate(), "ship1"),  # forged
        os.urandom(5000),
        b"",
    ]
    for _ in range(3):  # redelivered or repeated: still nothing
        for payload in bad:
            raw.publish("relay/ship1/a", payload, qos=1).wait_for_publish(5)
        raw.publish("relay/nobody/a", Ack(os.urandom(8), AckState.PLAYED).pack(key, "nobody"), qos=1)
    pair.queue(real_bundle(60), "real")
    pair.start("edge")
    wait_for(lambda: all(e["state"] == "delivered" for e in pair.entries()), 600, "the real bundle delivered")
    assert pair.alive("ground")
    log = pair.log("ground")
    for line in ("for unknown bundle", "wrong types", "not signed by ship1's key", "no edge 'nobody'"):
        assert line in log, line
    assert len(re.findall("dropped: ack on relay/ship1/a: ack not signed", log)) == 1  # one line, then a count
    assert "Traceback" not in log
    raw.loop_stop()


def test_a_flood_on_the_edges_topic_stores_nothing_and_delays_little(pair):
    """Ten seconds of garbage, forged manifests and parts for the real transfer
    (as if the ground's broker password had leaked): the real bundle still
    arrives and plays, the edge's store does not grow, the edge stays up."""
    pair.start("edge")
    wait_for(lambda: "connected" in pair.log("edge"), 600, "the edge to connect")
    db = pair.tmp / "edge" / "inbox.db"
    before = sum(p.stat().st_size for p in db.parent.glob("inbox.db*"))
    data = real_bundle(150, "real")
    from relay.format.wire import decode_bundle

    bid = decode_bundle(data).bundle_id
    with Hostile(pair.broker.port, None, None, ["relay/ship1/d"], [bid], rate=2000, seed=3) as flood:
        wait_for(lambda: flood.sent >= 4000, 600, "the flood under way")
        pair.queue(data, "real", "flash")
        pair.start("ground")
        wait_for(lambda: flood.sent >= 20000, 600, "the flood to go on while the real bundle is sent")
    assert flood.sent >= 20000
    wait_for(lambda: pair.entries()[0]["state"] == "delivered", 600, "the real bundle delivered")
    wait_for(lambda: pair.entries()[0]["play_state"] == "played", 600, "the real bundle played")
    after = sum(p.stat().st_size for p in db.parent.glob("inbox.db*"))
    assert after - before < 512 * 1024, (before, after)  # the real bundle, not the flood
    assert pair.alive("edge") and pair.alive("ground")
    log = pair.log("edge")
    assert "dropped" in log and "Traceback" not in log
    assert len(log.splitlines()) < 200  # counted, not a line per message


def test_oversized_bundles_are_rejected_and_unplayable_ones_quarantined_and_the_next_one_plays(tmp_path):
    """A ground with limits far above the edge's sends a 55-hour bundle: the edge
    rejects it (allocating nothing) and says why. A bundle whose audio clip no
    codec can read is accepted, quarantined when it cannot play, and reported.
    The bundle behind both plays."""
    with LocalBroker(tmp_path / "broker") as broker:
        pair = Pair(tmp_path, broker, ground={"limits": {"max_duration": 600000.0}})
        try:
            word = (Word("hello", 0.5, 0.9),)
            long = Bundle(SourceInfo("55 hours", 55 * 3600.0, "en"), [Speaker("S1")],
                          [Segment(0, 0.5, 0.9, "hello", word)])
            broken = Bundle(SourceInfo("broken clip", 3.0, "en"), [Speaker("S1")], [],
                            [AudioClip(0.0, 2.0, "opus-6k", b"\x05not opus", 0)])
            pair.queue(encode_bundle(long), "long", "flash")
            pair.queue(encode_bundle(broken), "broken", "priority")
            pair.queue(real_bundle(40, "fine"), "fine", "normal")
            pair.start("edge")
            pair.start("ground")
            wait_for(lambda: all(e["state"] in ("failed", "delivered") and (e["state"] == "failed" or e["play_state"])
                                 for e in pair.entries()), 600, "every bundle decided and played or not")
            by_title = {e["title"]: e for e in pair.entries()}
            assert by_title["55 hours"]["state"] == "failed" and "over the limit" in by_title["55 hours"]["reason"]
            assert by_title["broken clip"]["play_state"] == "quarantined"
            assert "cannot be decoded" in by_title["broken clip"]["play_reason"]
            assert by_title["fine"]["play_state"] == "played"
            import json

            ls = json.loads(pair.relay("edge", "ls", "--json", "-c", str(pair.edge_config)).stdout)["bundles"]
            assert [b["reason"][:10] for b in ls if b["state"] == "quarantined"] == ["audio clip"]
            assert pair.alive("edge") and pair.alive("ground")
        finally:
            pair.stop()


def test_a_replay_to_an_edge_that_lost_its_store_is_refused(pair):
    """Captured parts of a delivered bundle, replayed after the edge lost its store
    (an attacker with write access to the broker): refused as stale, not played again."""
    pair.queue(real_bundle(30, "once"), "once")
    pair.start("edge")
    pair.start("ground")
    wait_for(lambda: pair.entries()[0]["play_state"] == "played", 600, "the bundle played")
    entry = pair.entries()[0]
    pair.procs["edge"].send_signal(signal.SIGTERM)
    pair.procs["edge"].wait(30)
    for f in (pair.tmp / "edge").glob("inbox.db*"):
        f.unlink()  # the store is lost
    time.sleep(1.1)
    pair.start("edge")
    wait_for(lambda: pair.log("edge").count("connected to") >= 2, 600, "the edge back")
    # the captured transfer, as the attacker recorded it (signed by the real ground, weeks ago or a second ago)
    old = OutgoingTransfer.create(bytes.fromhex(entry["bundle_id"]), real_bundle(30, "once"), "ship1",
                                  Priority.FLASH, 340, pair.ground_key, 1, int(time.time()) - 3600)
    raw = publisher(pair.broker.port)
    for i in range(old.count):
        raw.publish("relay/ship1/d", old.fragment(i).pack(), qos=1).wait_for_publish(5)
    wait_for(lambda: "signed before this edge's store began" in pair.log("edge"), 600, "the replay refused")
    # and a positive control: a new bundle, queued after the replay, plays (so the replay had its chance)
    pair.queue(real_bundle(30, "after"), "after")
    wait_for(lambda: len(list((pair.tmp / "played").glob("*.wav"))) == 2, 600, "the next bundle played")
    titles = {e["title"]: e for e in pair.entries()}
    assert titles["after"]["play_state"] == "played"
    assert len(list((pair.tmp / "played").glob("*.wav"))) == 2  # the replay not played again
    raw.loop_stop()


def test_fragments_of_the_wrong_size_count_or_origin_do_not_lock_a_transfer(pair):
    """A part claiming another count, a part 30 MiB long, a forged manifest for the
    real bundle id first: the real transfer completes anyway."""
    data = real_bundle(200, "real")
    from relay.format.wire import decode_bundle

    bid = decode_bundle(data).bundle_id
    pair.start("edge")
    wait_for(lambda: "connected" in pair.log("edge"), 600, "the edge to connect")
    raw = publisher(pair.broker.port)
    stranger = SigningKey.generate()
    forged = OutgoingTransfer.create(bid, os.urandom(len(data)), "ship1", Priority.FLASH, 340, stranger, 1,
                                     int(time.time()))
    for payload in (forged.fragment(0).pack(), Fragment(bid, 1, 9999, b"x" * 327).pack(),
                    Fragment(bid, 2, 4, os.urandom(30 * 1024 * 1024)).pack()):
        raw.publish("relay/ship1/d", payload, qos=1).wait_for_publish(30)
    pair.queue(data, "real")
    pair.start("ground")
    wait_for(lambda: pair.entries()[0]["state"] == "delivered", 600, "the real bundle delivered")
    log = pair.log("edge")
    assert "untrusted key" in log and "over the limit" in log
    raw.loop_stop()


DATA = Path(__file__).parent / "data"


def test_a_long_decoding_holds_up_neither_the_link_nor_a_flash_bundle(pair):
    """Bundles whose text takes minutes to decode ("Thank you." 10,000 times:
    30,000 tokens in 663 bytes, signed by the real ground) used to hold the
    edge's receiving loop, and a flash bundle behind one waited (5 s to 85 s).
    Now decoding runs beside the link, two at a time; the flash bundle, more
    urgent than both, sets one aside and is decoded and played first."""
    dense = (DATA / "thanks-10000.bundle").read_bytes()
    ids = [os.urandom(8) for _ in range(2)]
    pair.start("edge")
    wait_for(lambda: "connected" in pair.log("edge"), 600, "the edge to connect")
    raw = publisher(pair.broker.port)
    for n, bid in enumerate(ids):  # the same text under two ids (the id is in the plain header)
        slow = OutgoingTransfer.create(bid, dense[:2] + bid + dense[10:], "ship1", Priority.BULK, 340,
                                       pair.ground_key, 1 + n, int(time.time()))
        for i in range(slow.count):
            raw.publish("relay/ship1/d", slow.fragment(i).pack(), qos=1).wait_for_publish(5)
    wait_for(lambda: all(f"bundle {b.hex()} complete" in pair.log("edge") for b in ids), 600, "both to decode")
    pair.queue(real_bundle(40, "flash"), "flash", "flash")
    pair.start("ground")
    wait_for(lambda: pair.entries()[0]["play_state"] == "played", 600, "the flash bundle played")
    log = pair.log("edge")
    assert not any(f"bundle {b.hex()} accepted" in log for b in ids)  # still being decoded
    assert sum(f"bundle {b.hex()}: decoding set aside for a more urgent one" in log for b in ids) == 1
    assert pair.alive("edge") and "Traceback" not in log
    raw.loop_stop()


def test_a_spooled_bundle_is_decoded_off_the_grounds_loop(tmp_path):
    """The same bundle dropped in the ground's spool used to be decoded on its
    event loop (a flash entry waited 2 s to 101 s, the broker connection
    dropped). Now it is checked in a worker thread and the link goes on."""
    spool = tmp_path / "spool"
    spool.mkdir()
    with LocalBroker(tmp_path / "broker") as broker:
        pair = Pair(tmp_path, broker, ground={"ground": {"spool_dir": str(spool), "spool_settle": 0.5}})
        try:
            pair.start("edge")
            pair.start("ground")
            wait_for(lambda: "connected" in pair.log("ground"), 600, "the ground to connect")
            shutil.copy(DATA / "thanks-10000.bundle", spool / "chant.bundle")
            wait_for(lambda: not (spool / "chant.bundle").exists(), 600, "the spool to take it")
            pair.queue(real_bundle(40, "flash"), "flash", "flash")
            wait_for(lambda: pair.entries()[0]["play_state"] == "played", 600, "the flash bundle played")
            assert [e["title"] for e in pair.entries()] == ["flash"]  # the chant still being checked
            assert pair.alive("ground") and "Traceback" not in pair.log("ground")
        finally:
            pair.stop()

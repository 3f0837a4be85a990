"""The link protocol, the ground's queue and the edge's store, without a broker:
parts of real bundles, out of order, duplicated, lost, forged, injected."""

from __future__ import annotations

import dataclasses
import os
import random
import time

import numpy as np
import pytest

from edge.store import ACCEPTED, QUARANTINED, REJECTED, Inbox, Received
from ground.queue import Outbox, OutboxError, PlayState, State
from relay.config import EdgeLink
from relay.format.bundle import Bundle, Speaker
from relay.format.limits import Limits
from relay.format.profile import VoiceProfile
from relay.format.wire import decode_bundle, encode_bundle
from relay.link.messages import Ack, AckState, Fragment, LinkError, Poll, Priority, RejectCode, parse_down
from relay.link.signing import Keyring, SigningKey, VerifyKey
from relay.link.transfer import IncomingTransfer, Layout, Manifest, OutgoingTransfer, payload_size
from relay.profiles import ProfileStore
from relay.testing.bundles import real_bundle
from relay.testing.configs import SAME_CLOCK

FRAG = 340


@pytest.fixture()
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture()
def edge_key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture()
def ends(tmp_path, key):
    outbox = Outbox(tmp_path / "ground.db")
    inbox = Inbox(tmp_path / "edge.db", "ship", Keyring([key.public]), link=SAME_CLOCK)
    return outbox, inbox


def drain(outbox: Outbox, key: SigningKey, edges=("ship",), limit: int = 10_000, ack_timeout: float = 60):
    """Everything the sender would publish now, in order, as the edge parses it."""
    out = []
    for _ in range(limit):
        nxt = outbox.next_out(FRAG, key, edges, ack_timeout=ack_timeout)
        if nxt is None or nxt.index is None:  # fragments only: a poll means everything is out
            return out
        assert len(nxt.payload) <= FRAG
        outbox.sent(nxt, ack_timeout=ack_timeout)
        out.append((nxt, parse_down(nxt.payload)))
    raise AssertionError("sender never ran dry")


def stamped(inbox: Inbox, ack: Ack) -> Ack:
    """``ack`` as the edge daemon signs it: with the edge's next ack number."""
    return dataclasses.replace(ack, counter=inbox.next_counter(), at=int(time.time()))


def deliver(inbox: Inbox, frag: Fragment) -> Received:
    """What the edge daemon does with one fragment (decoding inline)."""
    got = inbox.receive(frag)
    return inbox.finish(got.complete) if got.complete else got


def test_bundles_cross_in_order_with_duplicates_and_holes(ends, key, edge_key):
    outbox, inbox = ends
    data = real_bundle(300)
    row = outbox.add_bundle(data, "ship", Priority.NORMAL)
    sent = drain(outbox, key)
    assert len(sent) > 3 and outbox.get(row).state == State.SENDING
    frags = [f for _, f in sent]
    lost = {2, 3}
    arriving = [f for f in frags if f.index not in lost]
    head, rest = arriving[0], arriving[1:]
    random.Random(4).shuffle(rest)  # the link reorders everything but the first
    acks = [deliver(inbox, f).ack for f in [head, *rest, *rest[:2]]]  # and two duplicates
    holes = [a for a in acks if a is not None]
    assert holes and holes[-1].state == AckState.INCOMPLETE and holes[-1].missing_indices() == lost
    wire_ack = Ack.unpack(holes[-1].pack(edge_key, "ship", inbox.next_counter()), edge_key.public, "ship")
    outbox.on_ack(wire_ack, "ship", 60)
    resent = drain(outbox, key)
    assert sorted(f.index for _, f in resent) == sorted(lost)  # only the holes
    results = [deliver(inbox, f) for _, f in resent]
    decided = [r.decided for r in results if r.decided]
    assert len(decided) == 1 and decided[0].state == ACCEPTED
    outcome = outbox.on_ack(results[-1].ack, "ship", 60)
    assert outcome.item.state == State.DELIVERED and outcome.note == "delivered"
    assert inbox.data(decided[0].bundle_id) == data
    # the broker redelivers the manifest: acknowledged again (once per reply_interval), stored once;
    # a bare part of a decided bundle is anyone's to send, and never answered
    again = inbox.receive(frags[0])
    assert again.ack is not None and again.ack.state == AckState.ACCEPTED and again.decided is None
    assert inbox.receive(frags[0]).ack is None  # the same ack again, so soon: not sent
    assert inbox.receive(frags[1]).ack is None
    assert len(inbox.bundles()) == 1


def test_manifest_arriving_last_still_verifies_the_held_parts(ends, key):
    outbox, inbox = ends
    outbox.add_bundle(real_bundle(200), "ship")
    frags = [f for _, f in drain(outbox, key)]
    for f in frags[:0:-1]:  # every part before its manifest: held in memory, nothing stored
        assert inbox.receive(f).dropped is None
    assert inbox.partial() == [] and inbox.stored_bytes() == 0
    got = inbox.receive(frags[0])
    assert got.complete == frags[0].bundle_id
    assert inbox.finish(got.complete).decided.state == ACCEPTED


def test_large_bundles_carry_their_hash_list_in_several_parts(tmp_path, key):
    """A bundle of ~100 KB in 340-byte fragments: the manifest holds 27 hashes,
    the next parts the rest, each checked by an earlier one."""
    data = os.urandom(100_000)
    bid = os.urandom(8)
    t = OutgoingTransfer.create(bid, data, "ship", Priority.BULK, FRAG, key, seq=7, signed_at=int(time.time()))
    assert t.layout.heads >= 5 and t.count == 1 + t.layout.heads + -(-len(data) // payload_size(FRAG))
    manifest = Manifest.unpack(t.part(0))
    manifest.check(Keyring([key.public]), "ship", bid, t.count)
    incoming = IncomingTransfer(bid, manifest)
    order = list(range(1, t.count))
    random.Random(1).shuffle(order)
    verified, waiting = {0}, set(order)
    while waiting:  # parts verify as soon as the part holding their hash has verified
        progress = [i for i in sorted(waiting) if incoming.known(i)]
        assert progress, "the hash chain broke"
        for i in progress:
            assert incoming.verify(i, t.part(i))
            assert not incoming.verify(i, t.part(i)[:-1] + bytes([t.part(i)[-1] ^ 1]))
            incoming.learn(i, t.part(i))
            verified.add(i)
            waiting.discard(i)
    again = OutgoingTransfer.resume(bid, data, t.head_blob(), FRAG)
    assert [again.part(i) for i in range(t.count)] == [t.part(i) for i in range(t.count)]
    with pytest.raises(LinkError, match="signature"):
        manifest.check(Keyring([key.public]), "another-ship", bid, t.count)
    with pytest.raises(LinkError, match="parts"):
        Layout.of(30_000_000, payload_size(FRAG))


def test_flash_overtakes_bulk_at_the_next_fragment(ends, key):
    outbox, _ = ends
    bulk = outbox.add_bundle(real_bundle(400, "bulk"), "ship", Priority.BULK)
    first = outbox.next_out(FRAG, key)
    outbox.sent(first, 60)
    assert first.id == bulk
    flash = outbox.add_bundle(real_bundle(30, "flash"), "ship", Priority.FLASH)
    order = [o.id for o, _ in drain(outbox, key)]
    n_flash = order.count(flash)
    assert order[:n_flash] == [flash] * n_flash and set(order[n_flash:]) == {bulk}


def test_an_overdue_flash_poll_goes_before_bulk_fragments(ends, key):
    outbox, _ = ends
    flash = outbox.add_bundle(real_bundle(30, "flash"), "ship", Priority.FLASH)
    drain(outbox, key, ack_timeout=0)  # every flash fragment out; its ack overdue at once
    bulk = outbox.add_bundle(real_bundle(400, "bulk"), "ship", Priority.BULK)
    nxt = outbox.next_out(FRAG, key)
    assert nxt.id == flash and nxt.index is None  # the poll, not bulk's first fragment
    outbox.sent(nxt, 60)
    assert outbox.next_out(FRAG, key).id == bulk


def test_forged_parts_and_manifests_never_displace_the_real_ones(ends, key):
    outbox, inbox = ends
    stranger = SigningKey.generate()
    data = real_bundle(150)
    outbox.add_bundle(data, "ship", Priority.NORMAL)
    frags = [f for _, f in drain(outbox, key)]
    bid = frags[0].bundle_id
    # before the real manifest: a forged one for the same id, and forged parts at every index
    forged = OutgoingTransfer.create(bid, os.urandom(len(data)), "ship", Priority.FLASH, FRAG, stranger, 1,
                                     int(time.time()))
    assert inbox.receive(forged.fragment(0)).dropped == "signature"
    for i in range(1, len(frags)):
        inbox.receive(Fragment(bid, i, len(frags), os.urandom(len(frags[i].data))))
    # a part claiming another count, and a giant one
    assert inbox.receive(Fragment(bid, 1, len(frags) + 5, b"x" * 10)).dropped is None  # held: nothing known yet
    assert inbox.receive(Fragment(bid, 1, 3, b"x" * 70_000)).dropped == "size"
    assert inbox.stored_bytes() == 0 and inbox.partial() == []
    results = [deliver(inbox, f) for f in frags]
    assert results[-1].decided.state == ACCEPTED and inbox.data(bid) == data
    # after the real manifest, forged parts are dropped by hash, not stored
    outbox.add_bundle(other := real_bundle(150, seed=9), "ship")
    frags2 = [f for _, f in drain(outbox, key)]
    bid2 = frags2[0].bundle_id
    deliver(inbox, frags2[0])
    assert inbox.receive(Fragment(bid2, 1, len(frags2), os.urandom(len(frags2[1].data)))).dropped == "hash"
    assert inbox.receive(Fragment(bid2, 1, len(frags2) + 1, frags2[1].data)).dropped == "count"
    results = [deliver(inbox, f) for f in frags2[1:]]
    assert results[-1].decided.state == ACCEPTED and inbox.data(bid2) == other


def test_untrusted_unsigned_and_misaddressed_manifests_are_dropped_silently(tmp_path, key):
    """Unauthenticated input gets no answer: an answer would let a stranger make
    the edge talk up the thin link, or fail a real bundle at the ground."""
    inbox = Inbox(tmp_path / "e.db", "ship", Keyring([key.public]), link=SAME_CLOCK)
    stranger = SigningKey.generate()
    data = real_bundle(20)
    cases = {
        "untrusted": OutgoingTransfer.create(os.urandom(8), data, "ship", Priority.NORMAL, FRAG, stranger, 1,
                                             int(time.time())),
        "other edge": OutgoingTransfer.create(os.urandom(8), data, "another-ship", Priority.NORMAL, FRAG, key, 1,
                                              int(time.time())),
    }
    for name, t in cases.items():
        got = inbox.receive(t.fragment(0))
        assert got.dropped == "signature" and got.ack is None, name
    t = OutgoingTransfer.create(os.urandom(8), data, "ship", Priority.BULK, FRAG, key, 1, int(time.time()))
    tampered = bytearray(t.part(0))
    tampered[1] = int(Priority.FLASH)  # promoted to flash on the way
    assert inbox.receive(Fragment(t.bundle_id, 0, t.count, bytes(tampered))).dropped == "signature"
    assert inbox.receive(Fragment(t.bundle_id, 0, t.count, b"\x02" * 40)).dropped == "manifest"
    assert inbox.partial() == [] and inbox.bundles() == []


def test_a_signed_bundle_that_does_not_decode_is_rejected_and_the_ground_fails_it(ends, key):
    outbox, inbox = ends
    outbox.add_bundle(real_bundle(20), "ship")
    # the ground signs bytes that are not a bundle (a ground bug, or a bundle over this edge's limits)
    row = outbox.get(outbox.items()[0].id)
    bogus = os.urandom(row.bundle_size)
    t = OutgoingTransfer.create(row.bundle_id, bogus, "ship", Priority.NORMAL, FRAG, key, 1, int(time.time()))
    results = [deliver(inbox, t.fragment(i)) for i in range(t.count)]
    assert results[-1].decided.state == REJECTED and results[-1].ack.state == AckState.REJECTED
    drain(outbox, key)
    outcome = outbox.on_ack(stamped(inbox, results[-1].ack), "ship", 60)
    assert outcome.item.state == State.FAILED and "edge rejected it" in outcome.item.reason
    assert inbox.next_to_play() is None


def test_stale_and_replayed_transfers_are_refused_and_signed_again(tmp_path, key):
    """An edge that lost its store refuses what was signed before the store
    began (a captured bundle replayed); the ground signs its own afresh."""
    outbox = Outbox(tmp_path / "g.db")
    outbox.add_bundle(real_bundle(30), "ship")
    frags = [f for _, f in drain(outbox, key)]
    old = Inbox(tmp_path / "e.db", "ship", Keyring([key.public]), link=SAME_CLOCK)
    assert [deliver(old, f) for f in frags][-1].decided.state == ACCEPTED
    old.close()
    (tmp_path / "e.db").unlink()  # the edge's store is lost ...
    later = Inbox(tmp_path / "e2.db", "ship", Keyring([key.public]))
    later.receiver.epoch = int(time.time()) + 5  # ... and begins again a few seconds later: within max_clock_skew
    got = later.receive(frags[0])  # an attacker replays the captured transfer
    assert got.ack.state == AckState.REJECTED and got.ack.code == RejectCode.STALE and later.partial() == []
    assert got.ack.not_before == later.epoch
    # the ground, told so in an ack it can trust, signs again, no earlier than the edge's store began
    outcome = outbox.on_ack(got.ack, "ship", 60)  # (the first ack never reached the ground)
    assert outcome.item.state == State.READY
    fresh = [f for _, f in drain(outbox, key)]
    assert Manifest.unpack(fresh[0].data).signed_at == later.epoch
    assert [deliver(later, f) for f in fresh][-1].decided.state == ACCEPTED
    # a bundle signed longer ago than max_age
    aged = Inbox(tmp_path / "e3.db", "ship", Keyring([key.public]), link=EdgeLink(max_clock_skew=0, max_age=60))
    t = OutgoingTransfer.create(os.urandom(8), real_bundle(10), "ship", Priority.NORMAL, FRAG, key, 3,
                                int(time.time()) - 3600)
    assert aged.receive(t.fragment(0)).ack.code == RejectCode.STALE


def test_the_ground_signs_again_when_the_edge_calls_its_transfer_stale(tmp_path, key):
    outbox = Outbox(tmp_path / "g.db")
    row = outbox.add_bundle(real_bundle(30), "ship")
    first = [f for _, f in drain(outbox, key)]

    def stale(manifest: Fragment, not_before: int = 0) -> Ack:
        return Ack(manifest.bundle_id, AckState.REJECTED, reason="signed before this edge's store began",
                   code=RejectCode.STALE, seq=Manifest.unpack(manifest.data).seq, not_before=not_before)

    later = int(time.time()) + 90  # the edge's store began after the ground's clock's now
    assert outbox.on_ack(stale(first[0], later), "ship", 60).item.state == State.READY
    second = [f for _, f in drain(outbox, key)]
    replayed = outbox.on_ack(stale(first[0], later), "ship", 60)
    assert replayed.item is None and replayed.refused == "old transfer"  # about the transfer before
    assert second[0].data != first[0].data  # a new manifest: new time, new sequence number
    assert Manifest.unpack(second[0].data).seq == Manifest.unpack(first[0].data).seq + 1
    assert Manifest.unpack(second[0].data).signed_at == later  # signed no earlier than the edge asked
    last = second
    for _ in range(3):
        outbox.on_ack(stale(last[0]), "ship", 60)
        last = [f for _, f in drain(outbox, key)] or last
    assert outbox.get(row).state == State.FAILED  # a clock that keeps disagreeing is an operator's problem


def test_partial_transfers_expire_and_have_a_quota(tmp_path, key):
    inbox = Inbox(tmp_path / "e.db", "ship", Keyring([key.public]),
                  link=EdgeLink(max_clock_skew=0, max_partial=2, partial_ttl=60))

    def start(prio: Priority) -> bytes:
        t = OutgoingTransfer.create(os.urandom(8), real_bundle(200, seed=int(prio)), "ship", prio, FRAG, key, 1,
                                    int(time.time()))
        got = inbox.receive(t.fragment(0))
        return t.bundle_id if got.dropped is None else b""

    a, b = start(Priority.BULK), start(Priority.NORMAL)
    assert a and b and start(Priority.BULK) == b""  # full, and nothing less urgent to give way
    c = start(Priority.FLASH)  # flash evicts the bulk transfer
    assert c and {p[0] for p in inbox.partial()} == {b, c}
    inbox._db.execute("UPDATE transfers SET last = last - 120 WHERE bundle_id = ?", (b,))
    assert inbox.expire() == [b] and {p[0] for p in inbox.partial()} == {c}


def test_polls_are_signed_and_answered_once(ends, key):
    outbox, inbox = ends
    row = outbox.add_bundle(real_bundle(100), "ship")
    drain(outbox, key, ack_timeout=0)  # every fragment lost; the ack overdue at once
    due = outbox.next_out(FRAG, key, ack_timeout=30, max_poll_interval=600)
    assert due is not None and due.index is None and due.id == row
    outbox.sent(due, 30)
    assert outbox.next_out(FRAG, key, ack_timeout=30) is None  # next one in 30 s, then 60, 120...
    poll = parse_down(due.payload)
    assert isinstance(poll, Poll)
    got = inbox.poll(poll)
    ack = got.ack  # the edge holds nothing of it
    assert ack is not None, got
    assert ack.state == AckState.UNKNOWN
    assert inbox.poll(poll).ack is None  # a replayed poll: not answered again so soon
    forged = Poll.create(poll.bundle_id, "ship", SigningKey.generate(), int(time.time()) + 1)
    assert inbox.poll(forged).dropped == "signature"
    outbox.on_ack(stamped(inbox, ack), "ship", 60)
    assert outbox.get(row).pending == outbox.get(row).count  # everything again


def test_acks_are_verified_against_the_edges_key(ends, key, edge_key):
    outbox, inbox = ends
    row = outbox.add_bundle(real_bundle(20), "ship")
    frags = [f for _, f in drain(outbox, key)]
    accepted = Ack(frags[0].bundle_id, AckState.ACCEPTED)
    mallory = SigningKey.generate()
    with pytest.raises(LinkError, match="not signed"):
        Ack.unpack(accepted.pack(mallory, "ship"), edge_key.public, "ship")
    with pytest.raises(LinkError, match="not signed"):
        Ack.unpack(accepted.pack(edge_key, "ship2"), edge_key.public, "ship")  # another edge's ack, replayed
    with pytest.raises(LinkError):
        Ack.unpack(accepted.body(), edge_key.public, "ship")  # unsigned
    assert outbox.get(row).state == State.SENDING
    assert outbox.on_ack(Ack(os.urandom(8), AckState.ACCEPTED), "ship", 60).item is None  # unknown: ignored


def test_delivered_then_played_or_quarantined(ends, key, edge_key):
    outbox, inbox = ends
    rows = [outbox.add_bundle(real_bundle(20, seed=s), "ship") for s in (1, 2, 3)]
    for _, f in drain(outbox, key):
        got = deliver(inbox, f)
        if got.ack is not None:
            outbox.on_ack(got.ack, "ship", 60)
    assert [outbox.get(r).state for r in rows] == [State.DELIVERED] * 3
    first, second, third = inbox.bundles()
    inbox.start_play(first.bundle_id)
    inbox.played(first.bundle_id, "auto", "device")
    inbox.start_play(second.bundle_id)
    inbox.quarantine(second.bundle_id, "bundle cannot be played: no voice")
    assert inbox.get(second.bundle_id).state == QUARANTINED
    # what the ground must hear stays in the store until the broker has it: the third's
    # decision (its ack may have died with the daemon), the first two's play reports
    reports = inbox.reports()
    assert [(r.bundle_id, r.state) for r in reports] == [(first.bundle_id, AckState.PLAYED),
                                                         (second.bundle_id, AckState.QUARANTINED),
                                                         (third.bundle_id, AckState.ACCEPTED)]
    for r in reports:
        outbox.on_ack(Ack.unpack(r.pack(edge_key, "ship"), edge_key.public, "ship"), "ship", 60)
        inbox.reported(r)
    assert inbox.reports() == []
    assert outbox.get(rows[0]).play_state == PlayState.PLAYED
    assert outbox.get(rows[1]).play_state == PlayState.QUARANTINED and "no voice" in outbox.get(rows[1]).play_reason
    assert outbox.get(rows[2]).play_state is None  # delivered, not played yet
    # the daemon dies twice while playing the third: it is set aside, not tried for ever
    for _ in range(2):
        inbox.start_play(third.bundle_id)
    assert [s.bundle_id for s in inbox.crashed()] == [third.bundle_id]
    assert inbox.get(third.bundle_id).state == QUARANTINED and inbox.next_to_play() is None


def test_reconnect_reports_holes_most_urgent_first(ends, key):
    outbox, inbox = ends
    outbox.add_bundle(real_bundle(200, "bulk"), "ship", Priority.BULK)
    outbox.add_bundle(real_bundle(200, "flash"), "ship", Priority.FLASH)
    frags = [f for _, f in drain(outbox, key)]
    for f in frags:
        if f.index % 3 != 1:  # a third of everything lost in a fault
            inbox.receive(f)
    holes = inbox.holes()
    assert [h.state for h in holes] == [AckState.INCOMPLETE] * 2
    assert Manifest.unpack(next(f for f in frags if f.bundle_id == holes[0].bundle_id and f.index == 0).data
                           ).priority == Priority.FLASH
    assert outbox.poll_urgent_now() == 1  # the flash one; bulk waits for its timeout


def test_operator_cancel_and_bump(ends, key):
    outbox, _ = ends
    a = outbox.add_bundle(real_bundle(10, "a"), "ship", Priority.NORMAL)
    b = outbox.add_bundle(real_bundle(10, "b"), "ship", Priority.NORMAL)
    assert outbox.bump(b).id == b
    assert outbox.next_out(FRAG, key).id == b
    outbox.bump(a, Priority.FLASH)
    assert outbox.items()[0].id == a and outbox.get(a).priority == Priority.FLASH
    assert outbox.cancel(a).state == State.CANCELLED
    with pytest.raises(OutboxError, match="cancelled"):
        outbox.cancel(a)
    with pytest.raises(OutboxError, match="no queue entry 99"):
        outbox.get(99)
    with pytest.raises(OutboxError, match="already queued"):
        outbox.add_bundle(outbox_bundle := real_bundle(5), "ship")
        outbox.add_bundle(outbox_bundle, "ship")


def test_the_queue_refuses_bundles_an_edge_would_refuse(tmp_path):
    from relay.errors import BundleError

    outbox = Outbox(tmp_path / "g.db", limits=Limits(max_duration=5.0))
    with pytest.raises(BundleError, match="over the limit"):
        outbox.add_bundle(real_bundle(100), "ship")  # ~30 s of speech
    data = bytearray(real_bundle(20))
    data[-3] ^= 0xFF
    with pytest.raises(BundleError, match="integrity"):
        outbox.add_bundle(bytes(data), "ship")
    assert outbox.items() == []


def test_restart_resumes_from_the_database(tmp_path, key):
    path = tmp_path / "ground.db"
    first = Outbox(path)
    row = first.add_bundle(real_bundle(200), "ship")
    nxt = first.next_out(FRAG, key)
    first.sent(nxt, 60)
    audio = first.add_audio(tmp_path / "x.wav", "ship")
    assert first.claim_encoding().id == audio
    first.close()  # kill -9 here: nothing else was written
    again = Outbox(path)
    assert again.recover() == 1 and again.get(audio).state == State.QUEUED
    item = again.get(row)
    assert item.state == State.SENDING and item.pending == item.count - 1
    resumed = [o.index for o, _ in drain(again, key)]
    assert 0 not in resumed and len(resumed) == item.count - 1


def test_malformed_messages_are_link_errors(edge_key):
    for junk in (b"", b"\x20" + bytes(5), b"\x30" + bytes(20), b"\x2f" + bytes(20),
                 b"\x20" + bytes(8) + b"\x00\x05\x00\x05", b"\x20" + bytes(8) + b"\x00\x00\x00\x01",
                 b"\x21" + bytes(20), b"\x10" + bytes(20)):
        with pytest.raises(LinkError):
            parse_down(junk)
    with pytest.raises(LinkError, match="over the limit"):
        parse_down(b"\x20" + bytes(1000), max_size=500)
    good = Ack(bytes(8), AckState.ACCEPTED)
    for body in (b"\xc1", b"\x93\x01\x02\x03", good.body()[:-1], bytes(70)):
        signed = body + edge_key.sign(b"speech-relay ack v3\0", b"ship\0" + body)[1]
        with pytest.raises(LinkError):
            Ack.unpack(signed, edge_key.public, "ship")
    # a profile id of 2**40 used to allocate a terabyte before the broker ack
    import msgpack

    body = msgpack.packb([3, bytes(8), 1, [], "", [2**40], 0, 1, 0, 1, 0])
    with pytest.raises(LinkError, match="wrong types"):
        Ack.parse(body)
    for numbers in ([-1, 0, 1, 0], [2**32, 0, 1, 0], [1, 0, 2**63, 0], [1, 0, 1, 2**40]):
        with pytest.raises(LinkError, match="out of range"):
            Ack.parse(msgpack.packb([3, bytes(8), 1, [], "", [], 0, *numbers]))
    with pytest.raises(LinkError, match="shape or version"):  # an ack of protocol v2: no counter, refused
        Ack.parse(msgpack.packb([2, bytes(8), 1, [], "", [], 0]))


def test_keys_round_trip(tmp_path, key):
    key.save(tmp_path / "ground.key")
    assert oct((tmp_path / "ground.key").stat().st_mode & 0o777) == "0o600"
    again = SigningKey.load(tmp_path / "ground.key")
    assert again.public == key.public
    (tmp_path / "ground.pub").write_text(key.public.text() + "\n")
    assert VerifyKey.parse(str(tmp_path / "ground.pub")) == key.public == VerifyKey.parse(key.public.text())
    from relay.link.signing import SigningKeyError

    with pytest.raises(SigningKeyError, match="not an Ed25519 public key"):
        VerifyKey.parse("ed25519:AAAA")
    with pytest.raises(SigningKeyError, match="neither"):
        VerifyKey.parse(str(tmp_path / "missing.pub"))
    (tmp_path / "junk.key").write_bytes(os.urandom(64))
    with pytest.raises(SigningKeyError, match="not an unencrypted PEM"):
        SigningKey.load(tmp_path / "junk.key")
    with pytest.raises(SigningKeyError, match="already exists"):
        key.save(tmp_path / "ground.key")
    with pytest.raises(SigningKeyError, match="cannot write"):
        key.save(tmp_path / "no" / "such" / "folder.key")


def test_edge_names_profiles_it_lacks_and_the_ground_sends_them_again(tmp_path, key):
    """The edge lost its profile store: a bundle that only refers to a profile
    is accepted (and played with a stand-in voice), its ack names the profile,
    and the ground marks it unsent so the next bundle carries it in full."""
    rng = np.random.default_rng(3)
    profile = VoiceProfile.create(rng.standard_normal(192), 118.0, 4.0, 150.0)
    ground_store, edge_store = ProfileStore(tmp_path / "g.db"), ProfileStore(tmp_path / "e.db")
    ground_store.put(profile, sent=True)  # the ground believes the edge has it
    outbox = Outbox(tmp_path / "ground.db")
    inbox = Inbox(tmp_path / "edge.db", "ship", Keyring([key.public]), profiles=edge_store, link=SAME_CLOCK)

    def bundle(title: str, full: bool) -> bytes:
        doc = decode_bundle(real_bundle(80, title))
        speaker = Speaker("S1", profile.profile_id, profile if full else None)
        return encode_bundle(Bundle(doc.source, [speaker], doc.segments))

    def send(data: bytes) -> Ack:
        outbox.add_bundle(data, "ship")
        acks = [deliver(inbox, f).ack for _, f in drain(outbox, key)]
        return acks[-1]

    ack = send(bundle("ref only", full=False))
    # format v2 refers to a profile by its id's first 4 bytes
    assert ack.state == AckState.ACCEPTED and ack.missing_profiles == (profile.profile_id[:4],)
    outcome = outbox.on_ack(ack, "ship", 60)
    assert outcome.item.state == State.DELIVERED and outcome.delivered_profiles == []
    for pid in ack.missing_profiles:  # what the ground daemon does with them
        ground_store.mark_unsent(pid)
    assert not ground_store.was_sent(profile.profile_id)
    # the next bundle carries it in full; the edge learns it on acceptance, before playing
    assert send(bundle("full", full=True)).missing_profiles == ()
    assert edge_store.get(profile.profile_id) is not None
    first = inbox.bundles()[0].bundle_id
    assert inbox.status(first).missing_profiles == ()  # no longer reported once known


def test_an_assembly_that_does_not_match_its_digest_is_fetched_again_then_rejected(tmp_path, key):
    """Every part matched its hash but the whole does not match the signed digest
    (a ground bug): the parts are fetched again, not rejected for good at once."""
    inbox = Inbox(tmp_path / "e.db", "ship", Keyring([key.public]), link=SAME_CLOCK)
    data = real_bundle(100)
    t = OutgoingTransfer.create(os.urandom(8), data, "ship", Priority.NORMAL, FRAG, key, 1, int(time.time()))
    m = Manifest.unpack(t.part(0))
    bad = Manifest(m.priority, m.key_id, m.signed_at, m.seq, m.size, m.part_size, bytes(16), m.hashes, b"")
    sig = key.sign(b"speech-relay manifest v2\0", Manifest.signed_message("ship", t.bundle_id, t.count, bad.body()))[1]
    parts = [bad.body() + sig] + [t.part(i) for i in range(1, t.count)]
    for attempt in range(3):
        results = [deliver(inbox, Fragment(t.bundle_id, i, t.count, p)) for i, p in enumerate(parts) if
                   attempt == 0 or i > 0]
        final = results[-1]
        if attempt < 2:
            assert final.ack.state == AckState.INCOMPLETE and final.dropped == "assembly"
            assert final.ack.missing_indices() == set(range(1, t.count))
        else:
            assert final.decided.state == REJECTED and "digest" in final.decided.reason


def test_a_transfer_completed_just_before_a_crash_is_decided_after_the_restart(tmp_path, key):
    inbox = Inbox(tmp_path / "e.db", "ship", Keyring([key.public]), link=SAME_CLOCK)
    data = real_bundle(60)
    t = OutgoingTransfer.create(decode_bundle(data).bundle_id, data, "ship", Priority.NORMAL, FRAG, key, 1,
                                int(time.time()))
    completes = [inbox.receive(t.fragment(i)).complete for i in range(t.count)]
    assert completes[-1] == t.bundle_id  # complete, but the daemon dies before deciding
    inbox.close()
    again = Inbox(tmp_path / "e.db", "ship", Keyring([key.public]), link=SAME_CLOCK)
    assert [bid for bid, _ in again.complete()] == [t.bundle_id]
    assert again.finish(t.bundle_id).decided.state == ACCEPTED and again.complete() == []


# --- issue 24: replays, clocks, floods --------------------------------------------------------------


def test_a_replayed_ack_changes_nothing(ends, key, edge_key):
    """A genuine "incomplete" ack, captured and sent again every 20 s, kept a
    flash transfer from completing (581 fragments sent for 190 parts): now an
    ack no newer than one applied is ignored, and one about an earlier
    transfer of the bundle too."""
    outbox, inbox = ends
    row = outbox.add_bundle(real_bundle(200), "ship", Priority.FLASH)
    frags = [f for _, f in drain(outbox, key)]
    holes = Ack(frags[0].bundle_id, AckState.INCOMPLETE, ((2, 4),), seq=Manifest.unpack(frags[0].data).seq)
    wire = Ack.unpack(holes.pack(edge_key, "ship", inbox.next_counter()), edge_key.public, "ship")
    assert outbox.on_ack(wire, "ship", 60).note == "2 fragment(s) to resend"
    assert sorted(f.index for _, f in drain(outbox, key)) == [2, 3]
    for _ in range(5):  # the same ack, again and again
        again = outbox.on_ack(wire, "ship", 60)
        assert again.item is None and again.refused == "replay"
    assert drain(outbox, key) == [] and outbox.get(row).pending == 0
    other = dataclasses.replace(wire, seq=wire.seq + 7, counter=inbox.next_counter())
    assert outbox.on_ack(other, "ship", 60).refused == "old transfer"
    fresh = dataclasses.replace(wire, counter=inbox.next_counter())  # the edge really asks again
    assert outbox.on_ack(fresh, "ship", 60).note == "2 fragment(s) to resend"


def test_acks_manifests_and_polls_from_the_future_are_refused(ends, key, edge_key):
    outbox, inbox = ends
    row = outbox.add_bundle(real_bundle(20), "ship")
    frags = [f for _, f in drain(outbox, key)]
    ahead = Ack(frags[0].bundle_id, AckState.ACCEPTED, counter=inbox.next_counter(), at=int(time.time()) + 3600)
    refused = outbox.on_ack(ahead, "ship", 60, max_skew=600)
    assert refused.item is None and refused.refused == "future" and outbox.get(row).state == State.SENDING
    # a manifest dated ten years ahead (the ground's clock is wrong): refused, and the ground told why
    t = OutgoingTransfer.create(os.urandom(8), real_bundle(10), "ship", Priority.NORMAL, FRAG, key, 9,
                                int(time.time()) + 10 * 365 * 86400)
    got = inbox.receive(t.fragment(0))
    assert got.ack.state == AckState.REJECTED and got.ack.code == RejectCode.STALE and "future" in got.ack.reason
    assert inbox.partial() == []
    poll = Poll.create(frags[0].bundle_id, "ship", key, int(time.time()) + 10 * 365 * 86400, 1)
    assert inbox.poll(poll).dropped == "future"


def test_a_replayed_poll_is_not_answered(ends, key):
    outbox, inbox = ends
    outbox.add_bundle(real_bundle(20), "ship")
    drain(outbox, key, ack_timeout=0)
    poll = parse_down(outbox.next_out(FRAG, key, ack_timeout=30).payload)
    assert inbox.poll(poll).ack is not None
    inbox.receiver._replied.clear()  # however long after
    assert inbox.poll(poll).dropped == "replay"
    inbox.receiver.link = EdgeLink(max_clock_skew=60)  # (the next second may not have come yet)
    newer = Poll.create(poll.bundle_id, "ship", key, poll.signed_at + 1, poll.seq)
    assert inbox.poll(newer).ack is not None


def test_the_reorder_buffer_is_bounded_in_parts_as_well_as_bytes(tmp_path, key):
    """13-byte fragments with no data and random ids used to cost 334 bytes of
    memory each, never freed (the buffer counted data bytes only)."""
    inbox = Inbox(tmp_path / "e.db", "ship", Keyring([key.public]),
                  link=EdgeLink(max_clock_skew=0, buffer_bytes=1 << 20, buffer_parts=500))
    for _ in range(20_000):
        inbox.receive(parse_down(bytes([0x20]) + os.urandom(8) + (1).to_bytes(2, "big") + (2).to_bytes(2, "big")))
    buf = inbox.receiver._buffer
    assert buf.parts <= 500 and len(buf._parts) <= 500 and buf.size <= 1 << 20
    assert inbox.partial() == [] and inbox.stored_bytes() == 0


def test_no_answer_to_what_anyone_could_have_sent(ends, key):
    """A forged part naming a bundle already decided drew a signed ack up the
    thin link (120 forged messages, 75 acks); so did a forged copy of a
    transfer's last part. Only a genuine manifest or poll is answered."""
    outbox, inbox = ends
    outbox.add_bundle(real_bundle(60), "ship")
    frags = [f for _, f in drain(outbox, key)]
    results = [deliver(inbox, f) for f in frags]
    assert results[-1].decided.state == ACCEPTED
    bid = frags[0].bundle_id
    for index in range(1, frags[0].count):
        forged = Fragment(bid, index, frags[0].count, os.urandom(len(frags[index].data)))
        assert inbox.receive(forged).ack is None
        assert inbox.receive(Fragment(bid, index, frags[0].count, b"")).ack is None
    stranger = OutgoingTransfer.create(bid, real_bundle(60), "ship", Priority.FLASH, FRAG, SigningKey.generate(), 1,
                                       int(time.time()))
    assert inbox.receive(stranger.fragment(0)).ack is None  # a manifest no trusted key signed
    assert inbox.receive(frags[0]).ack is not None  # the ground's own: the decision again
    # a transfer in progress: a forged duplicate of its last part is not answered
    outbox.add_bundle(real_bundle(300, seed=5), "ship")
    more = [f for _, f in drain(outbox, key)]
    for f in more[:-1]:
        inbox.receive(f)
    last = more[-1]
    assert inbox.receive(last).complete is not None
    inbox.discard(last.bundle_id)
    for f in more[:3]:
        inbox.receive(f)
    inbox.receiver._replied.clear()
    assert inbox.receive(Fragment(last.bundle_id, last.index, last.count, os.urandom(len(last.data)))).ack is None


def test_a_part_published_as_its_transfer_ends_counts_for_nothing(ends, key):
    """The edge's stale refusal arrived while a part of that transfer was being
    published: sent() found the entry signed again (no count, no parts) and
    the ground's link task died on it (found by the deployment test)."""
    outbox, _ = ends
    row = outbox.add_bundle(real_bundle(300), "ship")
    out = outbox.next_out(FRAG, key, ["ship"])
    manifest = Manifest.unpack(parse_down(out.payload).data)
    stale = Ack(out.bundle_id, AckState.REJECTED, reason="stale", code=RejectCode.STALE, seq=manifest.seq)
    assert outbox.on_ack(stale, "ship", 60).item.state == State.READY
    outbox.sent(out, 60)  # the part the broker now has belongs to no transfer
    assert outbox.get(row).state == State.READY and outbox.get(row).fragments_sent == 0
    again = outbox.next_out(FRAG, key, ["ship"])  # signed afresh: every part still to send
    assert again.seq == manifest.seq + 1 and outbox.get(row).pending == outbox.get(row).count
    outbox.sent(out, 60)  # the old part, even now, takes nothing off the new transfer
    assert outbox.get(row).pending == outbox.get(row).count

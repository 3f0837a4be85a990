"""The link protocol, the ground's queue and the edge's store, without a broker:
fragments of real bundles, out of order, duplicated, lost, forged."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
from conftest import shared

from relay.bundle import Bundle, Segment, SourceInfo, Speaker, Word
from relay.inbox import ACCEPTED, REJECTED, Inbox
from relay.link import Ack, AckState, Fragment, LinkError, Poll, Priority, parse_down, payload_size
from relay.outbox import Outbox, OutboxError, State
from relay.profiles import ProfileStore, VoiceProfile
from relay.signing import Keyring, SigningKey, VerifyKey
from relay.wire import decode_bundle, encode_bundle

FRAG = 340


def _lj_words() -> list[str]:
    psv = shared("ljspeech", "transcripts.psv")
    return " ".join(line.split("|", 1)[1] for line in psv.read_text().splitlines() if "|" in line).split()


def real_bundle(words: int = 40, title: str = "call", seed: int = 0) -> bytes:
    """A bundle of real words: LJSpeech's transcripts from word ``seed`` on,
    with speech-like word timings."""
    text = _lj_words()
    rng = random.Random(seed)
    ws, t = [], 0.0
    for i in range(words):
        d = rng.uniform(0.15, 0.5)
        ws.append(Word(text[(seed + i) % len(text)], round(t, 2), round(t + d, 2)))
        t += d + rng.choice([0.0, 0.05, 0.1, 0.4])
    ws = tuple(ws)
    seg = Segment(0, ws[0].start, ws[-1].end, " ".join(w.text for w in ws), ws)
    return encode_bundle(Bundle(SourceInfo(title, ws[-1].end + 0.5, "en"), [Speaker("S1")], [seg]))


@pytest.fixture()
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture()
def ends(tmp_path, key):
    outbox = Outbox(tmp_path / "ground.db")
    inbox = Inbox(tmp_path / "edge.db", "ship", Keyring([key.public]))
    return outbox, inbox


def drain(outbox: Outbox, key: SigningKey, edges=("ship",), limit: int = 10_000, ack_timeout: float = 60):
    """Everything the sender would publish now, in order (as parsed by the edge)."""
    out = []
    for _ in range(limit):
        nxt = outbox.next_fragment(FRAG, key.sign, edges)
        if nxt is None:
            return out
        data = nxt.fragment.pack()
        assert len(data) <= FRAG
        outbox.sent(nxt, len(data), ack_timeout=ack_timeout)
        out.append((nxt, parse_down(data)))
    raise AssertionError("sender never ran dry")


def test_bundles_cross_in_order_with_duplicates_and_holes(ends, key):
    outbox, inbox = ends
    data = real_bundle(300)
    row = outbox.add_bundle(data, "ship", Priority.NORMAL)
    sent = drain(outbox, key)
    assert len(sent) > 3 and outbox.get(row).state == State.SENDING
    frags = [f for _, f in sent]
    lost = {1, 2}
    shuffled = [f for f in frags if f.index not in lost]
    random.Random(4).shuffle(shuffled)
    acks = [inbox.receive(f).ack for f in shuffled + shuffled[:2]]  # and two duplicates
    holes = [a for a in acks if a is not None]
    assert holes and holes[-1].state == AckState.INCOMPLETE and holes[-1].missing_indices() == lost
    outbox.on_ack(holes[-1], "ship", 60)
    resent = drain(outbox, key)
    assert sorted(f.index for _, f in resent) == sorted(lost)  # only the holes
    results = [inbox.receive(f) for _, f in resent]
    decided = [r.decided for r in results if r.decided]
    assert len(decided) == 1 and decided[0].state == ACCEPTED
    item, _ = outbox.on_ack(results[-1].ack, "ship", 60)
    assert item.state == State.ACKNOWLEDGED
    assert inbox.data(decided[0].bundle_id) == data
    # the broker redelivers an old fragment: acknowledged again, stored once
    again = inbox.receive(frags[0])
    assert again.ack.state == AckState.ACCEPTED and again.decided is None
    assert len(inbox.bundles()) == 1


def test_flash_overtakes_bulk_at_the_next_fragment(ends, key):
    outbox, _ = ends
    bulk = outbox.add_bundle(real_bundle(400, "bulk"), "ship", Priority.BULK)
    first = outbox.next_fragment(FRAG, key.sign)
    outbox.sent(first, FRAG, 60)
    assert first.id == bulk
    flash = outbox.add_bundle(real_bundle(30, "flash"), "ship", Priority.FLASH)
    order = [o.id for o, _ in drain(outbox, key)]
    n_flash = order.count(flash)
    assert order[:n_flash] == [flash] * n_flash and set(order[n_flash:]) == {bulk}


def test_forged_tampered_and_unsigned_bundles_are_rejected(tmp_path, key):
    outbox = Outbox(tmp_path / "g.db")
    inbox = Inbox(tmp_path / "e.db", "ship", Keyring([key.public]))
    stranger = SigningKey.generate()

    def tampered_sign(edge, prio, bundle):
        return key.sign(edge, Priority.BULK, bundle)  # signed as bulk, sent as flash

    cases = {
        "untrusted": (stranger.sign, Priority.NORMAL),
        "tampered": (tampered_sign, Priority.FLASH),
        "unsigned": (lambda e, p, b: (bytes(8), b""), Priority.NORMAL),
        "other edge": (lambda e, p, b: key.sign("another-ship", p, b), Priority.NORMAL),
    }
    reasons = {}
    for name, (sign, prio) in cases.items():
        row = outbox.add_bundle(real_bundle(20, name), "ship", prio)
        while (nxt := outbox.next_fragment(FRAG, sign)) is not None:
            outbox.sent(nxt, FRAG, 60)
            result = inbox.receive(parse_down(nxt.fragment.pack()))
        assert result.decided.state == REJECTED
        item, _ = outbox.on_ack(result.ack, "ship", 60)
        assert item.state == State.FAILED and "edge rejected it" in item.reason
        reasons[name] = result.decided.reason
        assert outbox.get(row).state == State.FAILED
    assert "untrusted key" in reasons["untrusted"] and "forged or tampered" in reasons["tampered"]
    assert reasons["unsigned"] == "unsigned" and "forged or tampered" in reasons["other edge"]
    assert inbox.next_to_play() is None


def test_a_corrupt_bundle_inside_a_good_envelope_is_rejected(ends, key):
    outbox, inbox = ends
    data = bytearray(real_bundle(20))
    data[-3] ^= 0xFF  # flips a byte of the body: the bundle's own hash no longer matches
    with pytest.raises(Exception, match="hash|corrupt|digest"):
        outbox.add_bundle(bytes(data), "ship")  # the queue refuses it up front
    good = real_bundle(20)
    outbox.add_bundle(good, "ship")
    sent = drain(outbox, key)
    env = b"".join(f.data for _, f in sent)
    bad_env = env[:-4] + bytes(b ^ 0x55 for b in env[-4:])  # flipped after signing: a forgery
    bid = sent[0][1].bundle_id
    step = payload_size(FRAG)
    frags = [Fragment(bid, i, len(sent), bad_env[i * step : (i + 1) * step]) for i in range(len(sent))]
    result = [inbox.receive(f) for f in frags][-1]
    assert result.decided.state == REJECTED and "forged or tampered" in result.decided.reason


def test_polls_back_off_and_unknown_resends_everything(ends, key):
    outbox, inbox = ends
    row = outbox.add_bundle(real_bundle(100), "ship")
    sent = drain(outbox, key, ack_timeout=0)  # every fragment out, the ack overdue at once
    due = outbox.due_poll(ack_timeout=30, max_interval=600)
    assert due is not None and due.fragment is None and due.id == row
    outbox.sent(due, 9, 30)
    assert outbox.due_poll(ack_timeout=30, max_interval=600) is None  # next one in 30 s, then 60, 120...
    assert outbox.get(row).polls == 1
    poll = Poll(sent[0][1].bundle_id)
    ack = inbox.poll(poll.bundle_id)  # the edge lost everything (say, a wiped store)
    assert ack.state == AckState.UNKNOWN
    outbox.on_ack(ack, "ship", 60)
    assert outbox.get(row).pending == len(sent)


def test_operator_cancel_and_bump(ends, key):
    outbox, _ = ends
    a = outbox.add_bundle(real_bundle(10, "a"), "ship", Priority.NORMAL)
    b = outbox.add_bundle(real_bundle(10, "b"), "ship", Priority.NORMAL)
    assert outbox.bump(b).id == b
    assert outbox.next_fragment(FRAG, key.sign).id == b
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


def test_restart_resumes_from_the_database(tmp_path, key):
    path = tmp_path / "ground.db"
    first = Outbox(path)
    row = first.add_bundle(real_bundle(200), "ship")
    nxt = first.next_fragment(FRAG, key.sign)
    first.sent(nxt, FRAG, 60)
    audio = first.add_audio(tmp_path / "x.wav", "ship")
    assert first.claim_encoding().id == audio
    first.close()  # kill -9 here: nothing else was written
    again = Outbox(path)
    assert again.recover() == 1 and again.get(audio).state == State.QUEUED
    item = again.get(row)
    assert item.state == State.SENDING and item.pending == item.count - 1
    resumed = [o.fragment.index for o, _ in drain(again, key)]
    assert 0 not in resumed and len(resumed) == item.count - 1


def test_malformed_messages_are_link_errors():
    for junk in (b"", b"\x10" + bytes(5), b"\x20" + bytes(20), b"\x1f" + bytes(20),
                 b"\x10" + bytes(8) + b"\x00\x05\x00\x05"):
        with pytest.raises(LinkError):
            parse_down(junk)
    for junk in (b"\xc1", b"\x93\x01\x02\x03", Ack(bytes(8), AckState.ACCEPTED).pack()[:-1]):
        with pytest.raises(LinkError):
            Ack.unpack(junk)


def test_keys_round_trip(tmp_path, key):
    key.save(tmp_path / "ground.key")
    assert oct((tmp_path / "ground.key").stat().st_mode & 0o777) == "0o600"
    again = SigningKey.load(tmp_path / "ground.key")
    assert again.public == key.public
    (tmp_path / "ground.pub").write_text(key.public.text() + "\n")
    assert VerifyKey.parse(str(tmp_path / "ground.pub")) == key.public == VerifyKey.parse(key.public.text())
    from relay.signing import SigningKeyError

    with pytest.raises(SigningKeyError, match="not an Ed25519 public key"):
        VerifyKey.parse("ed25519:AAAA")
    with pytest.raises(SigningKeyError, match="neither"):
        VerifyKey.parse(str(tmp_path / "missing.pub"))
    (tmp_path / "junk.key").write_bytes(os.urandom(64))
    with pytest.raises(SigningKeyError, match="not an unencrypted PEM"):
        SigningKey.load(tmp_path / "junk.key")



def test_edge_names_profiles_it_lacks_and_the_ground_sends_them_again(tmp_path, key):
    """The edge lost its profile store: a bundle that only refers to a profile
    is accepted (and played with a stand-in voice), its ack names the profile,
    and the ground marks it unsent so the next bundle carries it in full."""
    rng = np.random.default_rng(3)
    profile = VoiceProfile.create(rng.standard_normal(192), 118.0, 4.0, 150.0)
    ground_store, edge_store = ProfileStore(tmp_path / "g.db"), ProfileStore(tmp_path / "e.db")
    ground_store.put(profile, sent=True)  # the ground believes the edge has it
    outbox = Outbox(tmp_path / "ground.db")
    inbox = Inbox(tmp_path / "edge.db", "ship", Keyring([key.public]), profiles=edge_store)

    def bundle(title: str, full: bool) -> bytes:
        doc = decode_bundle(real_bundle(80, title))
        speaker = Speaker("S1", profile.profile_id, profile if full else None)
        return encode_bundle(Bundle(doc.source, [speaker], doc.segments))

    def deliver(data: bytes) -> Ack:
        outbox.add_bundle(data, "ship")
        acks = [inbox.receive(f).ack for _, f in drain(outbox, key)]
        return acks[-1]

    ack = Ack.unpack(deliver(bundle("ref only", full=False)).pack())
    assert ack.state == AckState.ACCEPTED and ack.missing_profiles == (profile.profile_id,)
    item, delivered = outbox.on_ack(ack, "ship", 60)
    assert item.state == State.ACKNOWLEDGED and delivered == []
    for pid in ack.missing_profiles:  # what the ground daemon does with them
        ground_store.mark_unsent(pid)
    assert not ground_store.was_sent(profile.profile_id)
    # the next bundle carries it in full; the edge learns it on acceptance, before playing
    assert deliver(bundle("full", full=True)).missing_profiles == ()
    assert edge_store.get(profile.profile_id) is not None
    first = inbox.bundles()[0].bundle_id
    assert inbox.poll(first).missing_profiles == ()  # no longer reported once known

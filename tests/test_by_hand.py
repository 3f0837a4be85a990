"""Bundles by hand (relay.link.by_hand): a transfer exported at the ground,
carried on a stick, imported at the edge through the link's own checks."""

from __future__ import annotations

import json
import time

import pytest

from edge.by_hand import import_transfer
from edge.store import ACCEPTED, REJECTED, Inbox
from ground.queue import Outbox, OutboxError, State
from relay.config import EdgeLink
from relay.link import by_hand
from relay.link.messages import LinkError, Priority
from relay.link.signing import Keyring, SigningKey
from relay.link.transfer import OutgoingTransfer
from relay.profiles import ProfileStore
from relay.testing.broker import LocalBroker, free_port, mosquitto_path
from relay.testing.bundles import real_bundle
from relay.testing.configs import SAME_CLOCK
from relay.testing.pair import Pair, wait_for
from relay.testing.web import call
from tests.test_daemons import one_line, run, write_configs

FRAG = 340


@pytest.fixture()
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture()
def ends(tmp_path, key):
    outbox = Outbox(tmp_path / "ground.db")
    inbox = Inbox(tmp_path / "edge.db", "ship", Keyring([key.public]), ProfileStore(tmp_path / "profiles.db"),
                  link=SAME_CLOCK)
    return outbox, inbox


def test_an_exported_transfer_is_stored_as_if_received_and_once(ends, key):
    outbox, inbox = ends
    data = real_bundle(400, title="orders")
    row = outbox.add_bundle(data, "ship", Priority.PRIORITY)
    file = by_hand.pack(outbox.export(row, key, FRAG), "ship")
    assert outbox.get(row).state == State.READY  # the entry is not changed: the edge's ack tells delivery
    done = import_transfer(inbox, file)
    assert done.outcome == "stored" and done.title == "orders"
    stored = inbox.get(done.bundle_id)
    assert stored is not None and stored.state == ACCEPTED and stored.priority == Priority.PRIORITY
    assert inbox.data(done.bundle_id) == data and inbox.next_to_play().bundle_id == done.bundle_id
    assert import_transfer(inbox, file).outcome == "known"  # again: nothing changes
    assert len(inbox.bundles()) == 1 and inbox.partial() == []


def test_the_link_and_the_stick_deliver_one_bundle_once(ends, key):
    """An entry the link has started is exported with the link's own signed manifest;
    the parts the link delivered and the file's complete each other."""
    outbox, inbox = ends
    row = outbox.add_bundle(real_bundle(300), "ship", Priority.NORMAL)
    first = outbox.next_out(FRAG, key, ["ship"], ack_timeout=60)
    assert first is not None and first.index == 0
    outbox.sent(first, ack_timeout=60)
    from relay.link.messages import parse_down

    assert inbox.receive(parse_down(first.payload)).dropped is None  # the manifest arrived by the link
    file = by_hand.pack(outbox.export(row, key, 4096), "ship")  # another size asked: the started transfer is kept
    fragments = by_hand.unpack(file)
    assert fragments[0].data == parse_down(first.payload).data and len(fragments) == outbox.get(row).count
    assert import_transfer(inbox, file).outcome == "stored"


def test_what_the_edge_would_refuse_from_the_link_it_refuses_from_a_file(tmp_path, ends, key):
    outbox, inbox = ends
    row = outbox.add_bundle(real_bundle(300), "ship", Priority.NORMAL)
    good = by_hand.pack(outbox.export(row, key, FRAG), "ship")
    # another ground's key; a transfer signed for another edge
    stranger = Inbox(tmp_path / "other.db", "ship", Keyring([SigningKey.generate().public]), link=SAME_CLOCK)
    with pytest.raises(LinkError, match="signature|key"):
        import_transfer(stranger, good)
    elsewhere = Inbox(tmp_path / "else.db", "tug", Keyring([key.public]), link=SAME_CLOCK)
    with pytest.raises(LinkError):
        import_transfer(elsewhere, good)
    # one byte changed in a data part, the file's checksum made again (anyone can): the part's signed
    # hash refuses it, and the half-made transfer is gone
    tampered = bytearray(good[:-by_hand.DIGEST])
    tampered[-5] ^= 0x40
    with pytest.raises(LinkError, match="hash"):
        import_transfer(inbox, bytes(tampered) + by_hand._checksum(bytes(tampered)))
    assert inbox.partial() == [] and inbox.bundles() == []
    # signed too long ago for this edge (max_age), or before the edge's store began
    bundle = real_bundle(50, seed=3)
    bid = bytes.fromhex(_bundle_id(bundle))
    old = OutgoingTransfer.create(bid, bundle, "ship", Priority.NORMAL, FRAG, key, 1, int(time.time()) - 40 * 86400)
    with pytest.raises(LinkError, match="days ago"):
        import_transfer(inbox, by_hand.pack(old, "ship"))
    strict = Inbox(tmp_path / "strict.db", "ship", Keyring([key.public]), link=EdgeLink(max_clock_skew=0, max_age=0))
    before = OutgoingTransfer.create(bid, bundle, "ship", Priority.NORMAL, FRAG, key, 1, int(time.time()) - 7200)
    with pytest.raises(LinkError, match="before this edge's store began"):
        import_transfer(strict, by_hand.pack(before, "ship"))
    # nothing of it was kept, and the good file still goes in
    assert import_transfer(inbox, good).outcome == "stored"


def test_an_authentic_but_unusable_bundle_is_kept_as_rejected(ends, key):
    outbox, inbox = ends
    bad = b"SRB" + bytes(40)  # signed by the ground, but not a bundle
    transfer = OutgoingTransfer.create(b"\x01" * 8, bad, "ship", Priority.NORMAL, FRAG, key, 1, int(time.time()))
    done = import_transfer(inbox, by_hand.pack(transfer, "ship"))
    assert done.outcome == "rejected" and done.reason
    assert inbox.get(done.bundle_id).state == REJECTED and inbox.next_to_play() is None


@pytest.mark.parametrize("damage", ["magic", "version", "short", "extra", "twice", "mixed", "poll", "huge",
                                    "byte", "name"])
def test_malformed_files_are_refused_before_anything_is_stored(ends, key, damage):
    outbox, inbox = ends
    row = outbox.add_bundle(real_bundle(200), "ship", Priority.NORMAL)
    transfer = outbox.export(row, key, FRAG)
    file = by_hand.pack(transfer, "ship")
    frags = [transfer.fragment(i).pack() for i in range(transfer.count)]

    def build(parts: list[bytes], count: int | None = None) -> bytes:
        head = by_hand.HEADER.pack(by_hand.MAGIC, 1, len(parts) if count is None else count)  # version 1: no checksum
        return head + b"".join(by_hand.LENGTH.pack(len(p)) + p for p in parts)

    other = OutgoingTransfer.create(b"\x02" * 8, real_bundle(200, seed=9), "ship", Priority.NORMAL, FRAG, key, 2,
                                    int(time.time()))
    files = {
        "magic": b"XXXX" + file[4:],
        "version": file[:4] + b"\x09" + file[5:],
        "short": file[:-7],
        "extra": file + b"\x00",
        "twice": build([*frags[:-1], frags[1]]),
        "mixed": build([*frags[:-1], other.fragment(transfer.count - 1).pack()]),
        "poll": build([frags[0], b"\x12" + bytes(80)]),
        "huge": build(frags, count=60_000),
        "byte": file[:20] + bytes([file[20] ^ 0x40]) + file[21:],  # one byte of the manifest, on a bad stick
        "name": file[:6] + b"x" + file[7:],
    }
    with pytest.raises(LinkError) as err:
        import_transfer(inbox, files[damage])
    if damage in ("byte", "name"):  # said as what it is: a damaged copy, not advice about fragment sizes
        assert "damaged" in str(err.value) and "fragment" not in str(err.value)
    assert inbox.bundles() == [] and inbox.partial() == []


def test_a_damaged_copy_of_a_bundle_held_is_refused_and_one_for_another_ship_is_named(ends, key):
    outbox, inbox = ends
    row = outbox.add_bundle(real_bundle(120), "ship", Priority.NORMAL)
    file = by_hand.pack(outbox.export(row, key, FRAG), "ship")
    assert import_transfer(inbox, file).outcome == "stored"
    damaged = file[:-30] + bytes([file[-30] ^ 1]) + file[-29:]
    with pytest.raises(LinkError, match="damaged"):  # not "already here"
        import_transfer(inbox, damaged)
    assert import_transfer(inbox, file).outcome == "known"
    other = outbox.add_bundle(real_bundle(120, seed=3), "ship2", Priority.NORMAL)
    for_ship2 = by_hand.pack(outbox.export(other, key, FRAG), "ship2")
    with pytest.raises(LinkError, match="exported for edge 'ship2'; this is 'ship'"):
        import_transfer(inbox, for_ship2)


def test_an_entry_without_a_bundle_cannot_be_exported(tmp_path, ends, key):
    outbox, _ = ends
    audio = tmp_path / "x.wav"
    audio.write_bytes(b"")
    row = outbox.add_audio(audio, "ship")
    with pytest.raises(OutboxError, match="no bundle to export yet"):
        outbox.export(row, key, FRAG)


def test_export_and_import_from_the_command_line(tmp_path):
    key = SigningKey.generate()
    ground, edge = write_configs(tmp_path, 1, 2, key, 100.0)
    bundle = tmp_path / "news.bundle"
    bundle.write_bytes(real_bundle(120, title="news"))
    assert run("edge", "ls", "-c", str(edge)).returncode == 0  # the edge is installed first (its store begins)
    added = run("ground", "queue", "add", str(bundle), "-c", str(ground))
    assert added.returncode == 0, added.stderr
    stick = tmp_path / "stick" / "news.transfer"
    out = run("ground", "export", "1", "-o", str(stick), "-c", str(ground))
    assert out.returncode == 0 and "fragments" in out.stdout and stick.is_file(), out.stderr
    got = run("edge", "import", str(stick), "-c", str(edge))
    assert got.returncode == 0 and "stored, to be played" in got.stdout, got.stderr
    again = run("edge", "import", str(stick), "-c", str(edge))
    assert again.returncode == 0 and "already here" in again.stdout, again.stderr
    listed = run("edge", "ls", "--json", "-c", str(edge))
    assert '"accepted"' in listed.stdout and "news" in listed.stdout
    # a damaged file, a missing one: one line each, exit 2
    damaged = tmp_path / "damaged.transfer"
    damaged.write_bytes(stick.read_bytes()[:-1])
    one_line(run("edge", "import", str(damaged), "-c", str(edge)), "damaged.transfer", "damaged")
    one_line(run("edge", "import", str(tmp_path / "nope.transfer"), "-c", str(edge)), "no such file")
    one_line(run("ground", "export", "7", "-o", str(stick), "-c", str(ground)), "no queue entry 7")


def _bundle_id(data: bytes) -> str:
    from relay.format.wire import decode_bundle

    return decode_bundle(data).bundle_id.hex()


@pytest.mark.slow
@pytest.mark.skipif(mosquitto_path() is None, reason="mosquitto is not installed (scripts/setup.sh)")
def test_a_running_edge_plays_an_imported_bundle_once_and_the_link_then_confirms_it(tmp_path):
    """The stick arrives before the link comes back: the daemon plays the
    imported bundle; when the ground then sends it, the edge acknowledges it
    without playing it again, and the ground sees it delivered and played
    (in its queue, and on its console: the link up, the edge's last ack)."""
    console = free_port()
    with LocalBroker(tmp_path / "broker") as broker:
        pair = Pair(tmp_path, broker, {"web": {"enabled": True, "listen": f"127.0.0.1:{console}"}})
        try:
            pair.start("edge")  # the edge exists (its store has begun) before the ground signs for it
            wait_for(lambda: (tmp_path / "edge" / "inbox.db").exists(), 600, "the edge's store")
            pair.queue(real_bundle(30, title="by hand"), "hand")
            stick = tmp_path / "hand.transfer"
            out = pair.relay("ground", "export", "1", "-o", str(stick), "-c", str(pair.ground_config))
            assert out.returncode == 0, out.stderr
            got = pair.relay("edge", "import", str(stick), "-c", str(pair.edge_config))
            assert got.returncode == 0 and "stored" in got.stdout, got.stderr
            wait_for(lambda: len(list((tmp_path / "played").glob("*.wav"))) == 1, 600, "the imported bundle played")
            pair.start("ground")
            wait_for(lambda: pair.entries()[0].get("play_state") == "played", 600, "the ground to hear it played")
            assert pair.entries()[0]["state"] == "delivered"
            listed = json.loads(pair.relay("edge", "ls", "--json", "-c", str(pair.edge_config)).stdout)
            assert [b["plays"] for b in listed["bundles"]] == [1]
            assert len(list((tmp_path / "played").glob("*.wav"))) == 1
            status = call(f"http://127.0.0.1:{console}/api/status").json()
            assert status["daemon"]["alive"] and status["daemon"]["connected"]
            (edge,) = status["edges"]
            assert edge["last_ack"] is not None and (edge["delivered"], edge["played"]) == (1, 1)
            assert "Traceback" not in pair.log("edge") + pair.log("ground")
        finally:
            pair.stop()

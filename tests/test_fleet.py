"""One ground, a fleet of edges: who ``--to`` names, one entry encoded once and
sent to each edge as its own signed transfer, per-edge delivery, play
reports, cancel and bump, profiles known per edge, and no edge starving
behind another's backlog. The queue and the edges' real stores, without a
broker (the daemons over mosquitto: test_daemons)."""

from __future__ import annotations

import dataclasses
import subprocess
import time

import pytest
import tomli_w

from edge.store import ACCEPTED, Inbox
from ground.fleet import check_groups, recipients
from ground.queue import Outbox, OutboxError, State
from ground.status import entries, fleet
from relay.config import ConfigError, GroundConfig
from relay.errors import UsageError
from relay.format.profile import VoiceProfile
from relay.link.messages import Ack, AckState, LinkError, Priority, parse_down
from relay.link.signing import Keyring, SigningKey
from relay.profiles import ProfileStore
from relay.testing.bundles import real_bundle
from relay.testing.configs import SAME_CLOCK
from tests.test_daemons import RELAY

SHIPS = ("north1", "north2", "south1")


def config(**groups: list[str]) -> GroundConfig:
    return GroundConfig.model_validate({
        "ground": {"default_edge": "north1"},
        "edges": {name: {"key": SigningKey.generate().public.text()} for name in SHIPS},
        "groups": groups or {"north": ["north1", "north2"], "all_ships": ["@north", "south1"]},
    })


def test_to_names_edges_groups_and_all():
    cfg = config()
    assert recipients(cfg, None) == ["north1"]  # the default edge
    assert recipients(cfg, "south1,north2") == ["south1", "north2"]
    assert recipients(cfg, "@north") == ["north1", "north2"]
    assert recipients(cfg, "@all_ships") == ["north1", "north2", "south1"]  # a group of a group
    assert recipients(cfg, "all") == sorted(SHIPS)
    assert recipients(cfg, "north1, @north") == ["north1", "north2"]  # a ship in two names hears it once


@pytest.mark.parametrize("to, needle", [
    ("ship9", "ship9: not an edge this ground serves"),
    ("@south", "@south: no such group"),
    ("north", "did you mean @north?"),
    ("north1,north1", "north1 named more than once"),
    ("north1,", "an empty name"),
    ("@empty", "@empty: the group has no edges"),
    ("@loop", "names itself (@loop -> @loop)"),
    ("@bad", "'ship9' is not an edge"),
])
def test_a_bad_to_is_one_line(to, needle):
    cfg = config(north=["north1", "north2"], empty=[], loop=["north1", "@loop"], bad=["ship9"])
    with pytest.raises(UsageError, match=None) as err:
        recipients(cfg, to)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_the_daemon_checks_every_group_at_start():
    assert check_groups(config(north=["north1"], empty=[])) == ["empty"]  # warned about, sending to it refused
    for groups, needle in [({"a": ["@b"], "b": ["@a"]}, "names itself"), ({"a": ["ship9"]}, "ship9")]:
        with pytest.raises(ConfigError, match=needle):
            check_groups(config(**groups))
    with pytest.raises(ConfigError, match="'all' means every edge"):
        check_groups(config(all=["north1"]))


@pytest.mark.slow  # runs the command a few times
def test_the_command_refuses_a_bad_to_with_exit_2_and_queues_nothing(tmp_path):
    cfg = {
        "ground": {"state_dir": str(tmp_path / "state"), "default_edge": "north1"},
        "edges": {name: {"key": SigningKey.generate().public.text()} for name in SHIPS},
        "groups": {"north": ["north1", "north2"], "empty": [], "loop": ["@loop"]},
    }
    path = tmp_path / "ground.toml"
    path.write_text(tomli_w.dumps(cfg))
    bundle = tmp_path / "brief.bundle"
    bundle.write_bytes(real_bundle(30))
    for to in ("ship9", "@empty", "@loop", "north1,north1", "@nowhere"):
        proc = subprocess.run([RELAY, "ground", "queue", "add", str(bundle), "--to", to, "-c", str(path)],
                              capture_output=True, text=True)
        assert proc.returncode == 2, (to, proc.stderr)
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: --to"), (to, proc.stderr)
    for flag in (["--priority", "urgent"],):
        proc = subprocess.run([RELAY, "ground", "queue", "add", str(bundle), *flag, "-c", str(path)],
                              capture_output=True, text=True)
        assert proc.returncode == 2 and "unknown priority" in proc.stderr, proc.stderr
    assert not Outbox(tmp_path / "state" / "queue.db").items()
    proc = subprocess.run([RELAY, "ground", "queue", "add", str(bundle), "--to", "@north", "-c", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "-> 2 edges (north1, north2)" in proc.stdout, proc.stderr
    listed = subprocess.run([RELAY, "ground", "queue", "ls", "--edges", "-c", str(path)], capture_output=True,
                            text=True)  # a pipe: the table is not cut to a terminal's width
    assert listed.returncode == 0 and "0/2 delivered" in listed.stdout and "  north2" in listed.stdout, listed.stdout
    assert "delive..." not in listed.stdout and "…" not in listed.stdout


@pytest.mark.slow  # runs the command a few times
def test_without_a_configuration_the_queue_commands_refuse(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run([RELAY, "ground", "queue", "ls"], capture_output=True, text=True, env=env)
    assert proc.returncode == 1 and "no ground configuration" in proc.stderr and "-c FILE" in proc.stderr
    (tmp_path / "empty.toml").write_text("")
    proc = subprocess.run([RELAY, "ground", "status", "-c", str(tmp_path / "empty.toml")], capture_output=True,
                          text=True, env=env)
    assert proc.returncode == 1 and "empty" in proc.stderr, proc.stderr


@pytest.fixture()
def fleet_ends(tmp_path):
    key = SigningKey.generate()
    outbox = Outbox(tmp_path / "ground.db")
    inboxes = {name: Inbox(tmp_path / f"{name}.db", name, Keyring([key.public]), link=SAME_CLOCK) for name in SHIPS}
    return key, outbox, inboxes


def pump(outbox: Outbox, key: SigningKey, inboxes: dict[str, Inbox], sizes: dict[str, int] | int = 340,
         reachable: set[str] | None = None, limit: int = 5000) -> dict[str, list[int]]:
    """Send until nothing is due, each message to the edge it names (those not ``reachable`` lose it);
    acks go back. Returns each edge's fragment sizes."""
    seen: dict[str, list[int]] = {}
    for _ in range(limit):
        out = outbox.next_out(sizes, key, list(inboxes), ack_timeout=3600)
        if out is None:
            return seen
        outbox.sent(out, 3600)
        if reachable is not None and out.edge not in reachable:
            continue
        inbox = inboxes[out.edge]
        msg = parse_down(out.payload)
        got = inbox.poll(msg) if out.index is None else inbox.receive(msg)
        if out.index is not None:
            seen.setdefault(out.edge, []).append(len(out.payload))
        if got.complete:
            got = inbox.finish(got.complete)
        if got.ack is not None:
            ack = dataclasses.replace(got.ack, counter=inbox.next_counter(), at=int(time.time()))
            outbox.on_ack(ack, out.edge, 3600)
    raise AssertionError("the sender never ran dry")


def test_one_entry_is_encoded_once_and_signed_for_each_edge(fleet_ends, tmp_path):
    key, outbox, inboxes = fleet_ends
    entry = outbox.add_audio(tmp_path / "brief.wav", list(SHIPS), Priority.PRIORITY, "morning brief")
    claimed = outbox.claim_encoding()
    assert claimed is not None and claimed.entry == entry and outbox.claim_encoding() is None  # once, not 3 times
    assert outbox.encoding_for(entry) == list(SHIPS)
    outbox.cancel_entry(entry, "south1")  # meanwhile: that ship is not to have it
    data = real_bundle(200, "morning brief")
    assert outbox.encoded(entry, data)
    assert outbox._db.execute("SELECT count(*) FROM bundles").fetchone()[0] == 1  # kept once
    sizes = pump(outbox, key, inboxes, {"north1": 340, "north2": 1200, "south1": 340})
    assert max(sizes["north1"]) <= 340 and max(sizes["north2"]) > 340  # each ship's link its own fragments
    assert "south1" not in sizes
    e = outbox.entry(entry)
    assert {i.edge: i.state for i in e.edges} == {"north1": State.DELIVERED, "north2": State.DELIVERED,
                                                  "south1": State.CANCELLED}
    assert len({i.seq for i in e.edges if i.seq}) >= 1 and e.state == "finished"
    for name in ("north1", "north2"):
        assert inboxes[name].get(e.edges[0].bundle_id).state == ACCEPTED


def test_a_transfer_signed_for_one_ship_is_refused_by_another(fleet_ends):
    key, outbox, inboxes = fleet_ends
    outbox.add_bundle(real_bundle(30), ["north1"])
    out = outbox.next_out(340, key, ["north1"])
    assert out is not None
    got = inboxes["north2"].receive(parse_down(out.payload))  # the signature covers the edge's name
    assert got.dropped == "signature" and inboxes["north2"].partial() == []


def test_each_edge_is_delivered_and_heard_on_its_own(fleet_ends):
    key, outbox, inboxes = fleet_ends
    entry = outbox.add_bundle(real_bundle(60, "brief"), list(SHIPS), Priority.NORMAL)
    pump(outbox, key, inboxes, reachable={"north1", "north2"})  # south1 is out of reach: the others go on
    e = outbox.entry(entry)
    assert e.count(State.DELIVERED) == 2 and e.state == "sending"
    south = next(i for i in e.edges if i.edge == "south1")
    assert south.state == State.SENDING
    # north1 plays it: its play report, signed by north1, counts for north1 alone
    inbox = inboxes["north1"]
    inbox.played(south.bundle_id, "auto", None)
    (report,) = inbox.reports()
    outbox.on_ack(dataclasses.replace(report, counter=inbox.next_counter(), at=int(time.time())), "north1", 60)
    e = outbox.entry(entry)
    assert e.played == 1 and e.unheard() == ["north2", "south1"]
    (view,) = fleet(outbox, config())
    assert view["played"] == 1 and view["not_yet"] == ["north2", "south1"]
    rows = entries(outbox, config())
    assert rows[0].entry.id == entry and [q.item.edge for q in rows[0].edges] == list(SHIPS)


def test_cancel_and_bump_for_one_edge_or_all(fleet_ends):
    key, outbox, inboxes = fleet_ends
    first = outbox.add_bundle(real_bundle(30, seed=1), list(SHIPS), Priority.BULK)
    second = outbox.add_bundle(real_bundle(30, seed=2), list(SHIPS), Priority.BULK)
    (bumped,) = outbox.bump_entry(second, "south1")
    assert bumped.edge == "south1"
    order = [(i.entry, i.edge) for i in outbox.items() if i.edge == "south1"]
    assert order[0] == (second, "south1")  # first for that ship only
    assert [(i.entry) for i in outbox.items() if i.edge == "north1"][0] == first
    moved = outbox.bump_entry(second, priority=Priority.FLASH)
    assert {i.priority for i in moved} == {Priority.FLASH} and len(moved) == 3
    assert [i.edge for i in outbox.cancel_entry(first, "north2")] == ["north2"]
    assert len(outbox.cancel_entry(first)) == 2  # the rest
    with pytest.raises(OutboxError, match="cancelled"):
        outbox.cancel_entry(first)
    with pytest.raises(OutboxError, match="does not go to ship9"):
        outbox.cancel_entry(second, "ship9")
    row_of_north2 = next(i.id for i in outbox.entry(second).edges if i.edge == "north2")
    with pytest.raises(OutboxError, match=f"north2's part of entry {second}"):
        outbox.entry(row_of_north2)


def test_no_edge_waits_behind_another_edges_backlog(fleet_ends):
    key, outbox, _ = fleet_ends
    for s in range(20):
        outbox.add_bundle(real_bundle(40, seed=s), ["north1"], Priority.NORMAL)
    late = outbox.add_bundle(real_bundle(40, seed=99), ["south1"], Priority.NORMAL)
    # the daemon lists the edge it served least recently first: north1 was just served
    firsts = []
    for _ in range(4):
        out = outbox.next_out(340, key, ["south1", "north1"] if not firsts or firsts[-1] == "north1" else
                              ["north1", "south1"])
        assert out is not None
        outbox.sent(out, 60)
        firsts.append(out.edge)
    assert firsts[:2] == ["south1", "north1"] and outbox.entry(late).edges[0].fragments_sent >= 1


def test_a_profile_goes_by_reference_only_to_the_edges_that_have_it(tmp_path):
    store = ProfileStore(tmp_path / "profiles.db")
    p = VoiceProfile(bytes(range(96)), 120.0, 4.0, 150.0)
    store.put(p, sent=False)
    store.mark_sent(p.profile_id, "north1")
    assert store.was_sent(p.profile_id, ["north1"]) and not store.was_sent(p.profile_id, ["north1", "north2"])
    assert not store.was_sent(p.profile_id)  # no bundle carrying it was written to a file
    store.mark_unsent(p.profile_id[:4], "north1")  # north1 says it lacks it (v2 names it by 4 bytes)
    assert not store.was_sent(p.profile_id, ["north1"])
    store.mark_sent(p.profile_id, "north1")
    store.mark_sent(p.profile_id, "north2")
    assert store.was_sent(p.profile_id, ["north1", "north2"]) and store.sent_to(p.profile_id) == ["north1", "north2"]
    store.put(p, sent=False)  # changed (a fitted voice): every ship gets it in full again
    assert store.sent_to(p.profile_id) == []


def test_one_ships_play_report_does_not_verify_as_another_ships():
    north1, north2 = SigningKey.generate(), SigningKey.generate()
    report = Ack(b"\x01" * 8, AckState.PLAYED, seq=1)
    wire = report.pack(north1, "north1", 7)
    assert Ack.unpack(wire, north1.public, "north1").state == AckState.PLAYED
    for key, name in ((north2.public, "north2"), (north1.public, "north2")):  # its key, or its name, is another's
        with pytest.raises(LinkError):
            Ack.unpack(wire, key, name)


def test_a_queue_from_before_fleets_is_brought_up_to_date(tmp_path):
    """A queue written before entries had edges of their own: each row its own entry, its bundle
    moved to the shared table, a transfer in flight resumed where it stopped."""
    key = SigningKey.generate()
    outbox = Outbox(tmp_path / "q.db")
    first = outbox.add_bundle(real_bundle(200, seed=1), "ship", Priority.NORMAL)
    outbox.add_bundle(real_bundle(30, seed=2), "ship", Priority.BULK)
    out = outbox.next_out(340, key, ["ship"])
    outbox.sent(out, 60)
    db = outbox._db  # as version 2 kept it: the bundle in the row, no entry, one index on the bundle id
    db.execute("UPDATE outbox SET bundle = (SELECT data FROM bundles b WHERE b.bundle_id = outbox.bundle_id), "
               "batch = NULL, size = NULL")
    db.execute("DROP TABLE bundles")
    db.execute("DROP INDEX outbox_bundle_edge")
    db.execute("CREATE UNIQUE INDEX outbox_bundle ON outbox (bundle_id) WHERE bundle_id IS NOT NULL")
    db.execute("PRAGMA user_version = 2")
    outbox.close()
    again = Outbox(tmp_path / "q.db")
    assert [(e.id, e.state) for e in again.entries()] == [(first, "sending"), (first + 1, "ready")]
    assert again._db.execute("SELECT count(*) FROM outbox WHERE bundle IS NOT NULL").fetchone()[0] == 0
    assert again.entry(first).bundle_size == len(again.bundle_of(first) or b"")
    nxt = again.next_out(340, key, ["ship"])
    assert nxt is not None and nxt.id == first and nxt.index == 1  # the part after the one already sent

"""Live capture: real speech cut at its pauses into a stream of parts; the
edge's store plays a stream's parts in order and waits (a bounded time) for
a missing one; the player holds the sound card open from part to part, so
the parts follow each other on one timeline."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time

import numpy as np
import pytest

from edge.store import Inbox
from ground.capture import Cutter, speech_spans
from relay.audio.io import SAMPLE_RATE, load_audio
from relay.format.bundle import SourceInfo, StreamPart
from relay.format.wire import decode_bundle, encode_bundle
from relay.link.messages import Priority
from relay.link.signing import Keyring, SigningKey
from relay.link.transfer import OutgoingTransfer
from relay.testing.bundles import real_bundle
from relay.testing.configs import SAME_CLOCK
from tests.conftest import shared

GAP = 1.2  # seconds of silence between the joined clips


@pytest.fixture(scope="module")
def joined() -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Six LJSpeech clips (2-10 s each) with GAP s of silence between: the audio and each clip's span."""
    clips, spans, t = [], [], 0.0
    for i in range(1, 7):
        audio = load_audio(shared("ljspeech", f"LJ001-{i:04d}.flac"))
        clips += [audio, np.zeros(int(GAP * SAMPLE_RATE), np.float32)]
        spans.append((t, t + len(audio) / SAMPLE_RATE))
        t += len(audio) / SAMPLE_RATE + GAP
    lead = np.zeros(2 * SAMPLE_RATE, np.float32)  # the line was quiet when the capture began
    return np.concatenate([lead, *clips]), [(a + 2.0, b + 2.0) for a, b in spans]


def cut(audio: np.ndarray, cutter: Cutter) -> list:
    parts = []
    block = int(0.1 * SAMPLE_RATE)
    for a in range(0, len(audio), block):
        parts += list(cutter.feed(audio[a:a + block]))
    return parts + [cutter.flush()]


def test_parts_are_cut_in_pauses_and_cover_all_the_speech(joined):
    audio, clips = joined
    parts = cut(audio, Cutter(max_seconds=12.0))
    assert [p.seq for p in parts] == list(range(len(parts))) and parts[-1].last and not any(p.last for p in parts[:-1])
    assert all(p.duration <= 12.0 + 1e-6 for p in parts)
    assert parts[0].start >= 1.0  # the quiet lead-in was not sent
    for p, q in zip(parts, parts[1:]):
        assert q.start >= p.start + p.duration - 1e-6  # in order, never overlapping
    # every cut falls in a pause between clips, not inside a sentence's speech
    speech = [(a, b) for a, b in clips]
    for p in parts[:-1]:
        end = p.start + p.duration
        assert not any(a + 0.3 < end < b - 0.3 for a, b in speech), (end, speech)
    # and all the speech went out: each clip's middle is inside a part
    for a, b in speech:
        mid = (a + b) / 2
        assert any(p.start <= mid <= p.start + p.duration for p in parts), (a, b)


def test_speech_that_never_pauses_is_cut_at_the_limit(joined):
    audio, _ = joined
    tight = Cutter(max_seconds=3.0, min_seconds=3.0, pause=5.0)  # no pause is long enough to end a part early
    parts = cut(audio, tight)
    assert len(parts) >= 8 and all(p.duration <= 3.0 + 1e-6 for p in parts)
    assert all(speech_spans(p.audio) for p in parts if len(p.audio))


def test_silence_alone_sends_nothing_but_the_end():
    parts = cut(np.zeros(8 * SAMPLE_RATE, np.float32), Cutter(max_seconds=5.0))
    assert len(parts) == 1 and parts[0].last and len(parts[0].audio) == 0


def test_a_bad_chunk_length_is_one_line():
    from ground.capture import CaptureError

    for bad in (0.5, 601.0):
        with pytest.raises(CaptureError, match="--chunk"):
            Cutter(max_seconds=bad)


# --- the edge: in order, waiting a bounded time for a missing part --------------------------------


def stream_part(seq: int, sid: bytes = b"live", last: bool = False) -> bytes:
    b = decode_bundle(real_bundle(15, title="live", seed=seq))
    source = dataclasses.replace(b.source, stream=StreamPart(sid, seq, 10.0 * seq, last))
    return encode_bundle(dataclasses.replace(b, source=source))


@pytest.fixture()
def inbox(tmp_path):
    key = SigningKey.generate()
    store = Inbox(tmp_path / "inbox.db", "ship", Keyring([key.public]), link=SAME_CLOCK)

    def deliver(data: bytes) -> bytes:
        bid = decode_bundle(data).bundle_id
        t = OutgoingTransfer.create(bid, data, "ship", Priority.PRIORITY, 340, key, 1, int(time.time()))
        for i in range(t.count):
            store.receive(t.fragment(i))
        assert store.finish(bid).decided.state == "accepted"
        return bid

    store.deliver = deliver  # type: ignore[attr-defined]
    return store


def test_parts_play_in_order_whatever_order_they_arrive_in(inbox):
    ids = {seq: inbox.deliver(stream_part(seq, last=seq == 2)) for seq in (2, 0, 1)}
    other = inbox.deliver(real_bundle(10, title="memo"))
    order = []
    while (item := inbox.next_to_play(stream_wait=60)) is not None:
        order.append(item.bundle_id)
        inbox.start_play(item.bundle_id)
        inbox.played(item.bundle_id, "auto", None)
    assert order == [ids[0], ids[1], ids[2], other]  # the stream in order, then what came after it
    got = inbox.stream(b"live")
    assert [s.stream.seq for s in got] == [0, 1, 2] and got[-1].stream.last and all(s.started for s in got)


def test_a_missing_part_is_waited_for_then_skipped(inbox):
    first, third = inbox.deliver(stream_part(0)), inbox.deliver(stream_part(2))
    assert inbox.next_to_play(stream_wait=30).bundle_id == first
    inbox.played(first, "auto", None)
    now = time.time()
    assert inbox.next_to_play(stream_wait=30, now=now) is None  # part 1 may still come
    assert inbox.next_to_play(stream_wait=30, now=now + 31).bundle_id == third  # it did not: go on
    late = inbox.deliver(stream_part(1))
    assert inbox.next_to_play(stream_wait=30, now=now).bundle_id == late  # a late part is still played


# --- the player: one device, held from part to part ---------------------------------------------------


def test_a_streams_parts_share_one_device_and_one_timeline(tmp_path, monkeypatch):
    from edge import player as player_mod
    from edge.playback import RecordingOutput
    from relay.config import EdgeConfig

    opened: list[RecordingOutput] = []

    def device(rate, target=None):  # the sound card is absent hardware: a recording stands in for it
        opened.append(RecordingOutput(rate))
        return opened[-1]

    monkeypatch.setattr(player_mod, "DeviceOutput", device)
    cfg = EdgeConfig.model_validate({"edge": {"state_dir": str(tmp_path), "voice": "espeak:en-us+m3"}})
    p = player_mod.Player(cfg)
    parts = [decode_bundle(stream_part(i, last=i == 2)) for i in range(3)]
    for b in parts:
        p.to_device(p.prepare(b))
    assert len(opened) == 1 and not p.live  # one device for the stream; closed after its last part
    total = sum(b.source.duration for b in parts)
    assert len(opened[0].audio) == pytest.approx(total * opened[0].sample_rate, abs=opened[0].sample_rate * 0.05)
    # a bundle that is not part of the stream gets a device of its own
    p.to_device(p.prepare(decode_bundle(real_bundle(10, title="memo"))))
    assert len(opened) == 2


@pytest.mark.slow
def test_capture_from_the_command_line(tmp_path):
    """`relay ground capture --input`: the recording, as if it came from a
    line-in, queued as a stream whose parts carry its words in order."""
    from relay.testing.broker import free_port
    from tests.test_daemons import RELAY, write_configs

    ground, _ = write_configs(tmp_path, free_port(), free_port(), SigningKey.generate(), 100.0)
    audio = shared("pyannote", "sample.wav")
    done = subprocess.run([RELAY, "ground", "capture", "--input", str(audio), "--fast", "--chunk", "8", "-c",
                           str(ground), "--title", "radio"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    entries = json.loads(subprocess.run([RELAY, "ground", "queue", "ls", "--json", "-c", str(ground)],
                                        capture_output=True, text=True, timeout=60).stdout)
    assert len(entries) >= 3 and all(e["title"] == "radio" and e["priority"] == "priority" for e in entries)
    from ground.queue import Outbox

    outbox = Outbox(tmp_path / "ground" / "queue.db")
    bundles = [decode_bundle(outbox.bundle_of(e["id"])) for e in entries]
    parts = [b.source.stream for b in bundles]
    assert [p.seq for p in parts] == list(range(len(parts))) and parts[-1].last
    assert len({p.stream_id for p in parts}) == 1
    assert all(b.source.duration <= 8.0 + 0.05 for b in bundles)
    words = " ".join(s.text for b in bundles for s in b.segments).lower()
    assert len(words.split()) > 50 and words.startswith("hello")  # the call, from its first word


def test_a_parts_speakers_are_the_streams():
    """Each part measures its speakers afresh; the one who spoke before is
    sent as a reference to the stream's profile, under the stream's label."""
    from ground.capture import StreamSpeakers
    from relay.format.bundle import Bundle, Segment, Speaker, Word
    from relay.format.profile import VoiceProfile, quantize

    rng = np.random.default_rng(3)
    alice, bob = rng.normal(size=192), rng.normal(size=192)

    def voice(base: np.ndarray, noise: float, name: str | None = None) -> VoiceProfile:
        v = base + noise * rng.normal(size=192)
        return VoiceProfile(quantize(v / np.linalg.norm(v)), 180.0, 6.0, 150.0, name=name)

    def part(*speakers: Speaker) -> Bundle:
        segs = [Segment(i, float(i), i + 0.5, "word", (Word("word", float(i), i + 0.5),)) for i in range(len(speakers))]
        return Bundle(SourceInfo("live", 3.0, "en"), list(speakers), segs)

    linker = StreamSpeakers(0.5)
    first = voice(alice, 0.3)
    out, dropped = linker.link(part(Speaker("S1", first.profile_id, first)))
    assert [s.label for s in out.speakers] == ["S1"] and out.speakers[0].profile is first and not dropped
    # part two: Alice again (measured afresh, a different id) and Bob, whom the part also calls S1
    again, new = voice(alice, 0.3), voice(bob, 0.3)
    out, dropped = linker.link(part(Speaker("S1", new.profile_id, new), Speaker("S2", again.profile_id, again)))
    assert [(s.label, s.profile_id, s.profile) for s in out.speakers] == [
        ("S2", new.profile_id, new), ("S1", first.profile_id, None)]
    assert dropped == {again.profile_id}
    # an enrolled speaker keeps the name; a stored speaker sent by reference stays one
    named = voice(rng.normal(size=192), 0.0, name="Sasha")
    out, _ = linker.link(part(Speaker("Sasha", named.profile_id, named), Speaker("S9", b"\x01" * 8, None)))
    assert [s.label for s in out.speakers] == ["Sasha", "S9"] and out.speakers[1].profile is None
    assert encode_bundle(out)  # still a bundle an edge accepts


@pytest.mark.slow
def test_stopping_the_capture_ends_the_stream_with_its_last_part(tmp_path):
    """`systemctl stop` (SIGTERM) mid-stream: what was heard is sent, the last part says so, exit 0."""
    import signal

    import soundfile as sf

    from ground.queue import Outbox
    from relay.testing.broker import free_port
    from tests.test_daemons import RELAY, write_configs

    ground, _ = write_configs(tmp_path, free_port(), free_port(), SigningKey.generate(), 100.0)
    long = tmp_path / "watch.wav"  # eight minutes of the call, so the stop comes long before its end
    sf.write(long, np.tile(load_audio(shared("pyannote", "sample.wav")), 16), SAMPLE_RATE)
    proc = subprocess.Popen([RELAY, "ground", "capture", "--input", str(long), "--chunk", "4", "-c", str(ground)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if line.startswith("part 0"):
                break
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0 and "Traceback" not in err, err
    outbox = Outbox(tmp_path / "ground" / "queue.db")
    parts = [decode_bundle(outbox.bundle_of(i.id)).source.stream for i in sorted(outbox.items(), key=lambda i: i.id)]
    assert [p.seq for p in parts] == list(range(len(parts))) and parts[-1].last and len(parts) >= 2
    assert parts[-1].start < 8 * 60 - 30  # it ended when told, not with the input

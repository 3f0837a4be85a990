"""What a listener takes away from a bundle: subtitles and transcripts
(edge.subtitles) and search across everything received (edge.search)."""

from __future__ import annotations

import re
import time

import pytest

from edge.by_hand import import_transfer
from edge.search import SearchError, TranscriptIndex, fts_query
from edge.store import Inbox
from edge.subtitles import LINE_CHARS, MAX_CUE_SECONDS, cues, render, srt, transcript, webvtt
from relay.format.bundle import Bundle, Segment, SourceInfo, Speaker, Word
from relay.format.wire import decode_bundle, encode_bundle
from relay.link import by_hand
from relay.link.messages import Priority
from relay.link.signing import Keyring, SigningKey
from relay.link.transfer import OutgoingTransfer
from relay.testing.bundles import conversation
from relay.testing.configs import SAME_CLOCK
from tests.test_daemons import one_line, run, write_configs

pytestmark = pytest.mark.slow  # decodes through Whisper's text model

VTT_TIMING = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} --> \d\d:\d\d:\d\d\.\d{3}$")
SRT_TIMING = re.compile(r"^\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}$")


def test_cues_keep_every_word_in_order_within_subtitle_limits():
    bundle = conversation(20)
    all_cues = list(cues(bundle))
    said = [w.text for s in bundle.segments for w in s.words]
    assert " ".join(c.text for c in all_cues).split() == said  # every word once, in order
    for c in all_cues:
        lines = c.lines()
        assert len(lines) <= 2 and all(len(line) <= LINE_CHARS or " " not in line for line in lines)
        assert 0 < c.end - c.start <= MAX_CUE_SECONDS + 0.5  # a cue closes before a word would take it past 6 s
        assert c.speaker in ("Alice", "S2")
    starts = [c.start for c in all_cues]
    assert starts == sorted(starts)
    assert any(len(c.lines()) == 2 for c in all_cues)  # long phrases do need two lines


def test_webvtt_and_srt_are_well_formed_and_hostile_text_stays_text():
    bundle = conversation(6)
    hostile = Segment(1, 40.0, 41.5, "<script>alert(1)</script> a --> b \x07bell & co",
                      (Word("<script>alert(1)</script>", 40.0, 40.6), Word("a", 40.6, 40.7), Word("-->", 40.7, 40.8),
                       Word("b", 40.8, 40.9), Word("\x07bell", 40.9, 41.2), Word("&", 41.2, 41.3),
                       Word("co", 41.3, 41.5)))
    bundle = Bundle(bundle.source, [bundle.speakers[0], Speaker("Bob <b>")], [*bundle.segments, hostile])
    vtt = webvtt(bundle)
    blocks = vtt.strip().split("\n\n")
    assert blocks[0] == "WEBVTT"
    for block in blocks[1:]:
        lines = block.split("\n")
        assert VTT_TIMING.match(lines[0]) and lines[1].startswith("<v ") and 2 <= len(lines) <= 3
        assert all("-->" not in line for line in lines[1:])  # a cue's text never reads as a timing line
    assert "<script>" not in vtt and "&lt;script&gt;" in vtt and "<v Bob &lt;b&gt;>" in vtt and "\x07" not in vtt
    numbered = srt(bundle).strip().split("\n\n")
    for i, block in enumerate(numbered, 1):
        lines = block.split("\n")
        assert lines[0] == str(i) and SRT_TIMING.match(lines[1]) and ": " in lines[2]
        assert all("-->" not in line for line in lines[2:])
    text = transcript(bundle)
    assert text.startswith("watch change (") and "[0:40] Bob <b>: <script>" in text  # plain text: shown as is
    assert render(bundle, "txt") == text
    with pytest.raises(ValueError):
        render(bundle, "doc")


def test_times_over_an_hour_and_words_without_timings():
    seg = Segment(0, 3725.25, 3727.0, "long watch", ())
    bundle = Bundle(SourceInfo("night", 3730.0, "en"), [Speaker("S1")], [seg])
    assert "01:02:05.250 --> 01:02:07.000" in webvtt(bundle)
    assert "01:02:05,250 --> 01:02:07,000" in srt(bundle)
    assert "[1:02:05] S1: long watch" in transcript(bundle)


@pytest.fixture()
def edge(tmp_path):
    key = SigningKey.generate()
    inbox = Inbox(tmp_path / "inbox.db", "ship", Keyring([key.public]), link=SAME_CLOCK)

    def receive(bundle: Bundle) -> bytes:
        data = encode_bundle(bundle)
        t = OutgoingTransfer.create(bundle.bundle_id, data, "ship", Priority.NORMAL, 340, key, 1, int(time.time()))
        assert import_transfer(inbox, by_hand.pack(t, "ship")).outcome == "stored"
        return bundle.bundle_id

    return inbox, receive


def test_search_finds_the_phrase_its_speaker_and_time_across_bundles(tmp_path, edge):
    inbox, receive = edge
    first, second = conversation(12, seed=0, title="monday"), conversation(12, seed=5, title="tuesday")
    receive(first)
    receive(second)
    index = TranscriptIndex(tmp_path / "transcripts.db")
    assert index.sync(inbox) == 2 and index.sync(inbox) == 0 and len(index) == 2  # once each
    target = second.segments[7]
    word = max(target.text.split(), key=len).strip(".,;:!?\"'()")
    hits = index.search(word)
    assert hits, word
    # format v2 keeps times on an 80 ms grid
    found = [h for h in hits if h.bundle_id == second.bundle_id and h.start == pytest.approx(target.start, abs=0.041)]
    assert found and found[0].title == "tuesday" and found[0].speaker == ("S2" if target.speaker else "Alice")
    assert f"[{word.lower()}]" in found[0].snippet.lower()
    # every hit really has every word asked for (as the start of a word)
    two = [w.strip(".,;:!?\"'()").lower() for w in target.text.split()[:2]]
    hits = index.search(" ".join(two), 200)
    assert hits
    for h in hits:
        assert all(f"[{w}" in h.snippet.lower() for w in two), h.snippet
    # a speaker's name finds their phrases; a prefix finds the word
    assert {h.speaker for h in index.search("alice", 200)} == {"Alice"}
    assert any(h.start == pytest.approx(target.start, abs=0.041) for h in index.search(word[:-1], 200))
    # a lost index is rebuilt from the store
    index.close()
    (tmp_path / "transcripts.db").unlink()
    rebuilt = TranscriptIndex(tmp_path / "transcripts.db")
    assert rebuilt.sync(inbox) == 2 and rebuilt.search(word)


@pytest.mark.parametrize("query", ['"', "NEAR(", "a OR", "*", "col:x", "x AND NOT y", "'; DROP TABLE phrases; --",
                                   "é", "\x00"])
def test_any_query_is_words_never_syntax(tmp_path, edge, query):
    inbox, receive = edge
    receive(conversation(4))
    index = TranscriptIndex(tmp_path / "t.db")
    index.sync(inbox)
    try:
        assert isinstance(index.search(query), list)
    except SearchError as e:
        assert "give a word" in str(e)
    assert len(index) == 1


def test_query_words_are_quoted_and_bounded():
    assert fts_query('storm "NEAR(x") ship') == '"storm"* "near"* "x"* "ship"*'
    assert fts_query(" ".join(f"w{i}" for i in range(50))).count('"') == 32
    with pytest.raises(SearchError):
        fts_query("?!")


def test_search_and_text_from_the_command_line(tmp_path):
    key = SigningKey.generate()
    _, edge_cfg = write_configs(tmp_path, 1, 2, key, 100.0)
    assert run("edge", "ls", "-c", str(edge_cfg)).returncode == 0  # the edge's store begins before the signing
    bundle = conversation(10, title="ice report")
    data = encode_bundle(bundle)
    t = OutgoingTransfer.create(bundle.bundle_id, data, "ship", Priority.NORMAL, 340, key, 1, int(time.time()))
    (tmp_path / "r.transfer").write_bytes(by_hand.pack(t, "ship"))
    assert run("edge", "import", str(tmp_path / "r.transfer"), "-c", str(edge_cfg)).returncode == 0
    word = max(bundle.segments[3].text.split(), key=len).strip(".,;:!?\"'()")
    found = run("edge", "search", word, "--json", "-c", str(edge_cfg))
    assert found.returncode == 0 and bundle.bundle_id.hex() in found.stdout, found.stderr
    assert "no phrase has" in run("edge", "search", "zzzyqx", "-c", str(edge_cfg)).stdout
    one_line(run("edge", "search", "?!", "-c", str(edge_cfg)), "give a word")
    bid = bundle.bundle_id.hex()[:6]
    vtt = run("edge", "text", bid, "--format", "vtt", "-c", str(edge_cfg))
    assert vtt.returncode == 0 and vtt.stdout.startswith("WEBVTT") and "<v Alice>" in vtt.stdout, vtt.stderr
    out = tmp_path / "subs" / "r.srt"
    written = run("edge", "text", bid, "-f", "srt", "-o", str(out), "-c", str(edge_cfg))
    assert written.returncode == 0 and out.read_text() == srt(decode_bundle(data)), written.stderr
    one_line(run("edge", "text", bid, "-f", "doc", "-c", str(edge_cfg)), "--format")
    one_line(run("edge", "text", "ffff00", "-c", str(edge_cfg)), "no bundle ffff00")

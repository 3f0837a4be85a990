"""Who spoke, the parts without models: levelling, speech regions, time mapping,
phrase fitting, word spans and the segmentation's speaker bound (issue 13)."""

from __future__ import annotations

import numpy as np
from conftest import shared

from ground.attribute import fit_spans
from ground.clustering import local_speaker_bound
from ground.diarize import Turn
from ground.evaluate import word_spans
from ground.frontend import MAX_GAIN_DB, TARGET_DB, Region, gain_curve, level, merge, speech_regions
from ground.transcribe import _restore
from relay.audio.io import frame_db, load_audio
from relay.format.bundle import Segment, Word


def _speech_level(audio: np.ndarray) -> float:
    db = frame_db(audio, 0.02)
    loud = db > np.percentile(db, 10) + 10
    return float(10 * np.log10(np.mean(10 ** (db[loud] / 10))))


def test_levelling_lifts_far_speech_to_the_target_without_clipping():
    audio = load_audio(shared("pyannote", "sample.wav"))
    far = audio * 10 ** (-20 / 20)  # the same talkers 20 dB further away
    out = level(far)
    assert len(out) == len(far) and out.dtype == np.float32
    # levelled, near and far sound the same: the distance is taken out
    assert abs(_speech_level(out) - _speech_level(level(audio))) < 1.5
    assert _speech_level(out) - _speech_level(far) > 15
    assert abs(_speech_level(out) - TARGET_DB) < 10  # (this measure counts lifted pauses as speech too)
    assert np.abs(out).max() <= 1.0
    # the pauses keep their distance below the speech beside them (no pumping of the noise floor)
    db_in, db_out = frame_db(far, 0.02), frame_db(out, 0.02)
    n = min(len(db_in), len(db_out))
    quiet = db_in[:n] < np.percentile(db_in, 20)
    speech = db_in[:n] > np.percentile(db_in, 80)
    assert abs((db_out[:n][speech].mean() - db_out[:n][quiet].mean())
               - (db_in[:n][speech].mean() - db_in[:n][quiet].mean())) < 6.0


def test_levelling_bounds_its_gain_and_leaves_silence_alone():
    rng = np.random.default_rng(0)
    hiss = (rng.standard_normal(16000 * 3) * 1e-5).astype(np.float32)
    gain = gain_curve(hiss)
    assert gain.max() <= MAX_GAIN_DB + 1e-6
    assert level(np.zeros(0, np.float32)).size == 0
    loud = np.clip(load_audio(shared("pyannote", "sample.wav")) * 20, -1, 1)
    assert np.abs(level(loud)).max() <= 1.0


def test_regions_are_the_union_padded_and_joined():
    vad = [Region(1.0, 2.0), Region(2.3, 3.0), Region(10.0, 11.0)]
    turns = [Region(5.0, 6.0), Region(10.5, 12.0)]
    got = speech_regions(vad, turns, duration=11.9)
    assert got == [Region(0.8, 3.2), Region(4.8, 6.2), Region(9.8, 11.9)]
    assert merge([]) == []


def test_times_in_the_joined_speech_map_back_to_the_recording():
    spans = [(16000, 32000), (80000, 96000)]  # 1-2 s and 5-6 s, joined into 0-2 s
    words = (Word("a", 0.1, 0.5), Word("b", 0.9, 1.3), Word("c", 1.5, 1.9))
    out = _restore(words, spans)
    assert [(w.start, w.end) for w in out] == [(1.1, 1.5), (5.0, 5.3), (5.5, 5.9)]
    # "b" straddles the cut: it goes to the stretch its middle is in and never spans the silence
    assert all(not (w.start < 2.0 and w.end > 5.0) for w in out)


def _seg(speaker: int, *words: tuple[str, float, float]) -> Segment:
    ws = tuple(Word(t, a, b) for t, a, b in words)
    return Segment(speaker, ws[0].start, ws[-1].end, " ".join(w.text for w in ws), ws)


def test_phrases_meet_their_speakers_turn_edges_but_no_further():
    turns = [Turn(1.0, 4.0, 0), Turn(4.1, 8.0, 1), Turn(9.0, 12.0, 0)]
    segs = [_seg(0, ("hello", 1.3, 1.6), ("there", 1.7, 3.6)),
            _seg(1, ("yes", 4.4, 4.6), ("indeed", 4.7, 6.5)),  # ends 1.5 s before its turn: too far to move
            _seg(0, ("so", 9.2, 9.4), ("then", 9.5, 11.8))]
    out = fit_spans(segs, turns)
    assert (out[0].start, out[0].end) == (1.0, 4.0)
    assert (out[1].start, out[1].end) == (4.1, 6.5)
    assert (out[2].start, out[2].end) == (9.0, 12.0)
    assert [s.text for s in out] == [s.text for s in segs]
    assert [w.start for w in out[0].words[1:]] == [w.start for w in segs[0].words[1:]]  # inner words untouched
    # a phrase never reaches over its neighbour
    crowded = fit_spans([_seg(0, ("a", 1.2, 1.5)), _seg(1, ("b", 1.6, 1.9))], [Turn(0.0, 3.0, 0), Turn(0.0, 3.0, 1)])
    assert crowded[0].end <= crowded[1].start


def test_word_spans_bridge_short_gaps_of_one_speaker():
    segs = [_seg(0, ("a", 0.0, 0.5), ("b", 0.7, 1.0), ("c", 1.5, 2.0)), _seg(1, ("d", 2.1, 2.5))]
    d = word_spans(segs, duration=3.0)
    assert [(t.start, t.end, t.speaker) for t in d.turns] == [(0.0, 1.0, 0), (1.5, 2.0, 0), (2.1, 2.5, 1)]
    assert d.num_speakers == 2
    assert word_spans([], duration=3.0).turns == []


def test_segmentation_bound_counts_people_heard_alone_in_one_window():
    frames, step = 589, 10.0 / 589
    seg = np.zeros((5, frames, 3))
    seg[:, :200, 0] = 1  # 3.4 s alone
    seg[:, 300:450, 1] = 1  # 2.5 s alone
    assert local_speaker_bound(seg, step) == 2
    seg[:, 150:250, 1] = 1  # overlapping 150-200: each still talks alone for over 2 s
    assert local_speaker_bound(seg, step) == 2
    one = np.zeros((5, frames, 3))
    one[:, :400, 0] = 1
    one[2, 450:560, 1] = 1  # a second voice under 2 s, in one window only
    assert local_speaker_bound(one, step) == 1
    slip = np.zeros((5, frames, 3))
    slip[:, :300, 0] = 1
    slip[3, 300:589, 1] = 1  # two people in a single window: one slip is not enough
    assert local_speaker_bound(slip, step) == 1
    assert local_speaker_bound(np.zeros((3, frames, 3)), step) == 1


def test_long_speech_is_decoded_in_bounded_batches():
    from ground.transcribe import _batches

    sr = 16000
    spans = [(0, 400 * sr), (500 * sr, 1300 * sr), (1400 * sr, 1401 * sr)]  # 400 s, 800 s, 1 s of speech
    batches = list(_batches(spans, limit=600))
    assert [sum(b - a for a, b in batch) / sr for batch in batches] == [600, 600, 1]
    assert [p for batch in batches for p in batch][0] == (0, 400 * sr)
    covered = sorted(p for batch in batches for p in batch)
    assert sum(b - a for a, b in covered) == sum(b - a for a, b in spans)  # nothing lost, nothing twice
    assert list(_batches([])) == []


def test_speaker_changes_cost_a_switch_but_not_across_pauses():
    from ground.resegment import _viterbi

    # speaker 0 clearly, then one frame that leans to 1, then 1 clearly
    scores = np.array([[1, 0], [1, 0], [0.4, 0.6], [1, 0], [0, 1], [0, 1], [0, 1]], float) * 10
    frames = np.arange(7)
    assert list(_viterbi(scores, frames, switch=3.0)) == [0, 0, 0, 0, 1, 1, 1]  # a one-frame blip is not a turn
    assert list(_viterbi(scores, frames, switch=0.0)) == [0, 0, 1, 0, 1, 1, 1]
    # across a pause (frames not contiguous) a change is free
    gap = np.array([0, 1, 2, 10, 11])
    leaning = np.array([[1, 0], [1, 0], [1, 0], [0.45, 0.55], [0.45, 0.55]]) * 10
    assert list(_viterbi(leaning, gap, 3.0)) == [0, 0, 0, 1, 1]
    assert list(_viterbi(leaning, np.arange(5), 3.0)) == [0, 0, 0, 0, 0]


def test_relabelled_speakers_are_numbered_by_first_appearance():
    from ground.diarize import Diarization
    from ground.resegment import _renumbered

    old = Diarization([], [], np.eye(3, dtype=np.float32), 10.0)
    turns = [Turn(0.0, 1.0, 2), Turn(2.0, 3.0, 0)]  # speaker 1 lost all its speech
    new = _renumbered(old, turns, turns)
    assert [(t.start, t.speaker) for t in new.turns] == [(0.0, 0), (2.0, 1)]
    assert new.num_speakers == 3  # kept, last: a count the caller asked for stays
    assert np.array_equal(new.embeddings, np.eye(3, dtype=np.float32)[[2, 0, 1]])


def test_vad_in_blocks_finds_the_same_speech(monkeypatch):
    import ground.frontend as frontend

    audio = level(load_audio(shared("pyannote", "sample.wav")))
    whole = merge(frontend.vad_regions(audio), duration=30.0)
    monkeypatch.setattr(frontend, "VAD_BLOCK", 7.0)
    blocks = merge(frontend.vad_regions(audio), duration=30.0)
    assert whole and blocks

    def covered(regions):
        mask = np.zeros(3000, bool)
        for r in regions:
            mask[int(r.start * 100) : int(r.end * 100)] = True
        return mask

    a, b = covered(whole), covered(blocks)
    assert (a & b).sum() / max(1, (a | b).sum()) > 0.9


def test_a_speakers_pauses_inside_their_turn_are_spoken_through():
    from ground.attribute import cover_turns

    turns = [Turn(0.0, 6.0, 0), Turn(6.5, 9.0, 1), Turn(9.5, 14.0, 0)]
    segs = [_seg(0, ("so", 0.2, 0.35), ("we", 0.35, 0.5), ("had", 0.5, 0.8), ("a", 1.5, 1.6),  # 0.7 s pause
                 ("long", 1.7, 2.0), ("problem", 2.1, 2.5)),
            _seg(1, ("right", 6.6, 7.0)),
            _seg(0, ("so", 9.6, 9.8), ("then", 12.0, 12.3))]  # 2.2 s between two short words: too slow to fill
    out = cover_turns(segs, turns)
    assert out[0].words[2].end == 1.5  # "had" runs to "a": one phrase through the pause
    assert [w.start for w in out[0].words[1:]] == [w.start for w in segs[0].words[1:]]  # inner starts stay
    assert [s.text for s in out] == [s.text for s in segs]
    assert out[2].words[0].end < 12.0  # "so ... then" would be spoken at a crawl: the pause stays
    # the edges reach toward the turn, no further than the phrase can be spoken, never into another's turn
    assert out[0].start == 0.0 and out[0].end <= 6.0
    assert 6.5 <= out[1].start and out[1].end <= 9.0
    # a pause outside any turn of theirs is a real pause, and so is one with someone else's word in it
    apart = cover_turns([_seg(0, ("a", 0.0, 0.4), ("b", 1.0, 1.4))], [Turn(0.0, 0.5, 0), Turn(0.9, 1.5, 0)])
    assert apart[0].words[0].end == 0.4
    crossed = cover_turns([_seg(0, ("yes", 0.0, 0.4), ("well", 1.4, 1.8)), _seg(1, ("no", 0.8, 1.0))],
                          [Turn(0.0, 2.0, 0), Turn(0.7, 1.1, 1)])
    assert crossed[0].words[0].end == 0.4


def test_unheard_stretches_are_turns_without_their_speakers_words():
    from ground.relisten import unheard

    turns = [Turn(0.0, 5.0, 0), Turn(3.0, 6.0, 1), Turn(8.0, 8.6, 1)]
    segs = [_seg(0, ("one", 0.5, 1.0), ("two", 1.2, 2.0))]
    got = unheard(turns, segs)
    # speaker 0 is silent in the words from 2.2 s to the end of the turn; speaker 1 never got a word
    assert [(s.speaker, s.start, s.end) for s in got] == [(0, 2.2, 5.0), (1, 3.0, 6.0)]
    assert all(s.duration >= 1.0 for s in got)  # the 0.6 s turn is too short to be worth a second listen
    assert unheard([], segs) == []


def test_a_second_listen_distrusts_loops_and_copies():
    from ground.relisten import _repeats

    w = [Word(t, i * 0.3, i * 0.3 + 0.2) for i, t in enumerate("the the the end".split())]
    assert _repeats(w)
    assert not _repeats([Word("the", 0, 0.2), Word("end", 0.3, 0.5), Word("the", 0.6, 0.8)])
    from ground.relisten import _copied

    said = "so we should go north now".split()
    assert _copied("we should go north".split(), said) == {0, 1, 2, 3}  # the first voice again
    assert _copied("i think the weather".split(), said + ["the"]) == set()  # one shared word is not a copy
    assert _copied(["north"], said) == {0} and _copied(["yes"], said) == set()

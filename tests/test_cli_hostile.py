"""Ordinary content and odd arguments never crash the CLI (issue 24): a title
with ``[/`` (rich markup), a word longer than a subtitle line, an id beyond
SQLite's integers, a file that is no file, a ship named like the ground."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from relay.format.bundle import Bundle, Segment, SourceInfo, Speaker, Word
from relay.format.wire import encode_bundle
from relay.link import by_hand
from relay.link.messages import Priority
from relay.link.signing import SigningKey
from relay.link.transfer import OutgoingTransfer
from tests.conftest import ROOT
from tests.test_daemons import one_line, run, write_configs

pytestmark = pytest.mark.slow  # runs the commands with the speech models

MARKUP = "Ops [/] brief [bold]x[/bold] :smile: [link=http://evil]y"
URL = "https://example.org/" + "very-long-path/" * 6 + "index.html"


def hostile_bundle() -> Bundle:
    words = (Word("see", 0.2, 0.5), Word(URL, 0.6, 2.0), Word("[/]", 2.1, 2.4))
    return Bundle(SourceInfo(MARKUP, 4.0, "en"), [Speaker("Cpt [/b] Ahab")],
                  [Segment(0, 0.2, 2.4, " ".join(w.text for w in words), words)])


def no_crash(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "MarkupError" not in proc.stderr
    return proc


def test_markup_and_long_words_in_content_are_text(tmp_path):
    key = SigningKey.generate()
    ground, edge = write_configs(tmp_path, 1, 2, key, 100.0)
    no_crash(run("edge", "ls", "-c", str(edge)))  # the edge's store begins before anything is signed for it
    bundle = hostile_bundle()
    data = encode_bundle(bundle, 1)
    path = tmp_path / "brief.bundle"
    path.write_bytes(data)
    shown = no_crash(run("inspect", str(path))).stdout
    assert MARKUP in shown and "Cpt [/b] Ahab" in shown
    no_crash(run("ground", "queue", "add", str(path), "--title", MARKUP, "-c", str(ground)))
    assert "Ops [/]" in no_crash(run("ground", "queue", "ls", "-c", str(ground))).stdout  # a table, wrapped
    assert MARKUP in no_crash(run("ground", "queue", "ls", "--json", "-c", str(ground))).stdout
    t = OutgoingTransfer.create(bundle.bundle_id, data, "ship", Priority.NORMAL, 340, key, 1, int(time.time()))
    (tmp_path / "b.transfer").write_bytes(by_hand.pack(t, "ship"))
    no_crash(run("edge", "import", str(tmp_path / "b.transfer"), "-c", str(edge)))
    assert "[/]" in no_crash(run("edge", "ls", "-c", str(edge))).stdout
    for fmt in ("vtt", "srt", "txt"):
        text = no_crash(run("edge", "text", bundle.id_hex, "-f", fmt, "-c", str(edge))).stdout
        assert "[/]" in text and "Cpt [/b] Ahab" in text
        if fmt != "txt":  # a subtitle line holds 42 characters: the address is cut, not a crash
            pieces = [line.split(">")[-1].split(": ")[-1] for line in text.splitlines() if "very-long" in line]
            assert len(pieces) >= 2 and all(len(p) <= 42 for p in pieces) and URL not in text
    no_crash(run("edge", "search", "see", "-c", str(edge)))


@pytest.mark.parametrize("command", [["queue", "cancel"], ["queue", "bump"], ["export"]])
@pytest.mark.parametrize("entry", ["100000000000000000000", "-3", "0"])
def test_ids_out_of_range_are_usage_errors(tmp_path, command, entry):
    ground, _ = write_configs(tmp_path, 1, 2, SigningKey.generate(), 100.0)
    extra = ["-o", str(tmp_path / "x.transfer")] if command == ["export"] else []
    proc = run("ground", *command, entry, *extra, "-c", str(ground))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "OverflowError" not in proc.stderr, proc.stderr


def test_files_that_are_no_files_or_too_big_are_refused_unread(tmp_path):
    _, edge = write_configs(tmp_path, 1, 2, SigningKey.generate(), 100.0)
    huge = tmp_path / "huge.transfer"
    with huge.open("wb") as f:  # 3 GB, sparse: reading it whole would take all the memory there is
        f.truncate(3 * 1024**3)
    one_line(run("edge", "import", str(huge), "-c", str(edge)), "huge.transfer", "over the")
    zero = tmp_path / "zero.transfer"
    zero.symlink_to("/dev/zero")
    one_line(run("edge", "import", str(zero), "-c", str(edge)), "not a regular file")
    fifo = tmp_path / "pipe.bundle"
    os.mkfifo(fifo)  # opening it would wait for a writer for ever
    one_line(run("inspect", str(fifo)), "not a regular file")
    big = tmp_path / "big.bundle"
    with big.open("wb") as f:
        f.truncate(17 * 1024**2)
    one_line(run("inspect", str(big)), "over the")


def test_make_certs_refuses_a_ship_named_like_the_ground(tmp_path):
    script = str(ROOT / "scripts" / "make-certs.sh")
    for name in ("ground", "server", "ca", "bad.name", "x" * 40):
        proc = subprocess.run(["bash", script, str(tmp_path / "c"), "ground.example", "ship1", name],
                              capture_output=True, text=True)
        assert proc.returncode == 2 and "make-certs:" in proc.stderr, (name, proc.stderr)
        assert not (tmp_path / "c").exists()  # nothing made when any name is refused
    proc = subprocess.run(["bash", script, str(tmp_path / "c"), "ground.example", "hq"], capture_output=True,
                          text=True, env={**os.environ, "GROUND_NAME": "hq"})
    assert proc.returncode == 2 and "'hq'" in proc.stderr
    ok = subprocess.run(["bash", script, str(tmp_path / "c"), "ground.example", "ship1"], capture_output=True,
                        text=True)
    assert ok.returncode == 0 and Path(tmp_path / "c" / "ship1.crt").is_file(), ok.stderr

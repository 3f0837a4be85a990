"""The station console (edge.web) in a real browser: Debian's chromium,
driven by Playwright, against `relay edge web` over a real edge store.

Nothing here waits a fixed time: each step waits for the page to reach a
state (a generous timeout only stops a hung test)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from relay.format.bundle import Bundle, Segment, SourceInfo, Speaker, StreamPart, Word
from relay.format.wire import encode_bundle
from relay.link import by_hand
from relay.link.messages import Priority
from relay.link.signing import SigningKey
from relay.link.transfer import OutgoingTransfer
from relay.testing.broker import free_port
from relay.testing.bundles import conversation, real_bundle
from relay.testing.web import call, console
from relay.web.auth import hash_password
from tests.conftest import shared
from tests.test_daemons import RELAY, one_line, run, write_configs

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,  # drives chromium against both consoles
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/test.sh)"),
]
WAIT = 60_000  # ms: only a hung page takes this long
SHOTS = os.environ.get("SPEECH_RELAY_SCREENSHOTS")
PASSWORD = "station two"  # a folder: the README's screenshots are taken here


def with_long_pause() -> Bundle:
    """Alice, five seconds of silence, then S2: for "shorten pauses" and per-speaker volume."""
    a = [Word(w, 0.5 + 0.4 * i, 0.8 + 0.4 * i) for i, w in enumerate("the ice has not moved since monday".split())]
    b = [Word(w, 8.0 + 0.4 * i, 8.3 + 0.4 * i) for i, w in enumerate("send the spare parts with the flight".split())]
    segments = [Segment(0, a[0].start, a[-1].end, " ".join(w.text for w in a), tuple(a)),
                Segment(1, b[0].start, b[-1].end, " ".join(w.text for w in b), tuple(b))]
    return Bundle(SourceInfo("long pause", 11.5, "en"), [Speaker("Alice"), Speaker("Bob")], segments)


class Station:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.key = SigningKey.generate()
        _, self.config = write_configs(tmp, 1, 2, self.key, 100.0)
        from edge.store import Inbox
        from relay.config import load_edge

        Inbox.of(load_edge(self.config)).close()  # the station's store begins before anything is signed for it
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def receive(self, bundle: Bundle, priority: Priority = Priority.NORMAL) -> str:
        t = OutgoingTransfer.create(bundle.bundle_id, encode_bundle(bundle), "ship", priority, 340, self.key, 1,
                                    int(time.time()))
        path = self.tmp / f"{bundle.bundle_id.hex()}.transfer"
        path.write_bytes(by_hand.pack(t, "ship"))
        done = run("edge", "import", str(path), "-c", str(self.config))
        assert done.returncode == 0, done.stderr
        return bundle.bundle_id.hex()

    def start(self) -> None:
        log = (self.tmp / "web.log").open("wb")
        self.proc = subprocess.Popen([RELAY, "edge", "web", "-c", str(self.config), "--listen",
                                      f"127.0.0.1:{self.port}"], stdout=log, stderr=subprocess.STDOUT)
        end = time.monotonic() + 60
        while time.monotonic() < end:
            try:
                urllib.request.urlopen(self.url + "/api/bundles", timeout=5)
                return
            except OSError:
                assert self.proc.poll() is None, (self.tmp / "web.log").read_text()
                time.sleep(0.2)
        raise AssertionError("the console did not start")

    def stop(self) -> str:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
        return (self.tmp / "web.log").read_text()


@pytest.fixture()
def station(tmp_path):
    s = Station(tmp_path)
    s.first = s.receive(conversation(10, seed=1, title="morning watch"))
    s.second = s.receive(with_long_pause())
    s.start()
    yield s
    log = s.stop()
    assert "Traceback" not in log, log


@pytest.fixture()
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--autoplay-policy=no-user-gesture-required"])
        yield b
        b.close()


def audio(page, expr: str):
    return page.evaluate(f"(() => {{ const a = document.getElementById('audio'); return {expr}; }})()")


def test_listen_read_and_search_in_the_browser(station, browser):
    page = browser.new_page(viewport={"width": 1200, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(station.url)
    # the list, newest first, then live: a bundle imported now appears without a reload
    page.wait_for_selector("#bundles li")
    assert page.locator("#bundles li .title").all_inner_texts() == ["long pause", "morning watch"]
    station.receive(conversation(6, seed=4, title="ice report"), Priority.FLASH)
    page.wait_for_function("document.querySelectorAll('#bundles li').length === 3", timeout=WAIT)
    assert page.locator("#bundles li .title").first.inner_text() == "ice report"
    assert page.locator("#bundles li .pri").first.inner_text() == "flash"  # priority 0 is a priority, not none
    assert page.locator("#bundles li .pri").last.inner_text() == "normal"

    # play: the highlight follows the audio
    page.click(f"#bundles li[data-id='{station.first}']")
    page.wait_for_selector("#transcript .w")
    words = page.locator("#transcript .w").all_inner_texts()
    assert len(words) > 40 and set(page.locator("#transcript .who").all_inner_texts()) == {"Alice", "S2"}
    page.wait_for_function("document.getElementById('audio').readyState >= 3", timeout=WAIT)
    audio(page, "a.play()")
    page.wait_for_function("(() => { const w = [...document.querySelectorAll('#transcript .w')];"
                           " return w.findIndex(x => x.classList.contains('now')) >= 3; })()", timeout=WAIT)
    assert page.locator("#transcript .w.now").count() == 1
    # click a word late in the transcript: the audio goes there, the highlight with it
    target = page.locator("#transcript .w").nth(len(words) - 5)
    start = float(target.get_attribute("data-start"))
    target.click()
    page.wait_for_function(f"Math.abs(document.getElementById('audio').currentTime - {start}) < 0.5", timeout=WAIT)
    page.wait_for_function("(() => { const w = [...document.querySelectorAll('#transcript .w')];"
                           f" return w.findIndex(x => x.classList.contains('now')) >= {len(words) - 6}; }})()",
                           timeout=WAIT)
    # speed, with the pitch kept
    page.select_option("#speed", "1.5")
    assert audio(page, "[a.playbackRate, a.preservesPitch]") == [1.5, True]
    audio(page, "a.pause()")
    if SHOTS:
        page.screenshot(path=str(Path(SHOTS) / "console-edge.png"))

    # search: a word of the first bundle; the hit opens it at the phrase
    page.fill("#q", "gutenberg")
    page.wait_for_selector("#hits li.hit", timeout=WAIT)
    hit = page.locator("#hits li.hit").first
    assert "gutenberg" in hit.inner_text().lower()
    hit.click()
    page.wait_for_function("document.getElementById('audio').currentTime > 1", timeout=WAIT)
    page.fill("#q", "zzqxv")
    page.wait_for_selector("#hits li.none", timeout=WAIT)
    assert errors == []


def test_shorter_pauses_and_a_speaker_turned_down(station, browser):
    page = browser.new_page()
    page.goto(station.url)
    page.click(f"#bundles li[data-id='{station.second}']")
    page.wait_for_selector("#transcript .w")
    page.wait_for_function("document.getElementById('audio').readyState >= 3", timeout=WAIT)
    # Bob at a fifth: while one of his words is current, the audio plays at that volume
    page.locator("#volumes input[data-speaker='1']").fill("0.2")
    audio(page, "a.currentTime = 9.0")
    page.wait_for_function("document.getElementById('audio').volume === 0.2", timeout=WAIT)
    audio(page, "a.currentTime = 1.0")
    page.wait_for_function("document.getElementById('audio').volume === 1", timeout=WAIT)
    # "shorten pauses": playing into Alice's five-second pause, the player jumps to Bob
    page.check("#shorten")
    jumped_to = page.evaluate("""new Promise((resolve) => {
        const a = document.getElementById('audio');
        a.currentTime = 3.4;
        a.addEventListener('seeked', () => {
          a.addEventListener('seeked', () => resolve(a.currentTime), { once: true });
          a.play();
        }, { once: true });
    })""")
    assert 7.7 <= jumped_to <= 8.0  # next word at 8.0 s, less 0.15 s of lead-in


def test_downloads_tokens_and_errors(station, browser):
    page = browser.new_page()
    page.goto(station.url)
    api = page.request
    vtt = api.get(f"{station.url}/api/bundles/{station.first}/text.vtt")
    assert vtt.ok and vtt.text().startswith("WEBVTT") and "<v Alice>" in vtt.text()
    assert "attachment" in vtt.headers["content-disposition"]
    srt = api.get(f"{station.url}/api/bundles/{station.first}/text.srt")
    assert srt.ok and srt.text().startswith("1\n")
    wav = api.get(f"{station.url}/api/bundles/{station.second}/audio.wav")
    assert wav.ok and wav.headers["content-type"] == "audio/wav" and wav.body()[:4] == b"RIFF"
    part = api.get(f"{station.url}/api/bundles/{station.second}/audio.wav", headers={"Range": "bytes=100-199"})
    assert part.status == 206 and len(part.body()) == 100  # the browser seeks by byte ranges
    # the one action needs the page's token, and refuses another site's origin
    play = f"{station.url}/api/bundles/{station.first}/play"
    assert api.post(play).status == 403
    token = page.locator('meta[name="relay-token"]').get_attribute("content")
    assert api.post(play, headers={"X-Relay-Token": token, "Origin": "http://evil.example"}).status == 403
    # with the token: no sound card here, so one clear refusal (the station's speakers are absent hardware)
    played = api.post(play, headers={"X-Relay-Token": token})
    assert played.status in (200, 409), played.text()
    # what the caller got wrong: one JSON line each
    for url, status in [("/api/bundles/zz", 404), ("/api/bundles/0011223344556677", 404),
                        (f"/api/bundles/{station.first}/text.doc", 404), ("/api/search?q=%22%28", 400)]:
        got = api.get(station.url + url)
        assert got.status == status and "error" in got.json(), url


def stream_part(seq: int, last: bool = False) -> Bundle:
    """A part of one live stream: a few sentences of LJSpeech's words."""
    b = conversation(4, seed=20 + seq, title="radio watch")
    return dataclasses.replace(b, source=dataclasses.replace(b.source, stream=StreamPart(b"live", seq, 8.0 * seq,
                                                                                           last)))


def test_a_live_stream_is_one_item_that_grows(station, browser):
    page = browser.new_page(viewport={"width": 1200, "height": 800})
    page.goto(station.url)
    page.wait_for_selector("#bundles li")
    first = stream_part(0)
    station.receive(first)
    station.receive(stream_part(1))
    page.wait_for_function("(() => { const li = document.querySelector('#bundles li.live');"
                           " return li && li.innerText.includes('2 parts'); })()", timeout=WAIT)
    assert page.locator("#bundles li").count() == 3  # the two bundles, and the stream once
    live = page.locator("#bundles li.live")
    assert live.locator(".title").inner_text() == "radio watch"
    live.click()
    page.wait_for_selector("#transcript .w")
    page.wait_for_function("document.getElementById('audio').readyState >= 1", timeout=WAIT)
    both = first.source.duration + stream_part(1).source.duration
    assert audio(page, "a.duration") == pytest.approx(both, abs=0.1)  # the parts back to back
    words = page.locator("#transcript .w")
    assert words.count() == sum(len(s.words) for p in (first, stream_part(1)) for s in p.segments)
    assert float(words.last.get_attribute("data-start")) > first.source.duration  # the second part's words after
    # the last part comes: still one item, now ended
    station.receive(stream_part(2, last=True))
    page.wait_for_function("(() => { const li = document.querySelector('#bundles li.ended');"
                           " return li && li.innerText.includes('3 parts'); })()", timeout=WAIT)
    assert page.locator("#bundles li").count() == 3
    # downloads of the whole stream
    vtt = page.request.get(f"{station.url}/api/bundles/s-{b'live'.hex()}/text.vtt")
    assert vtt.ok and vtt.text().startswith("WEBVTT")


def test_a_restarted_console_lists_its_bundles_at_once(station):
    from relay.testing.pair import wait_for

    def listed() -> list[dict]:
        return call(station.url + "/api/bundles").json()

    # read in the background (decoded once, into the transcript index), not before the list answers
    wait_for(lambda: all(b["speakers"] is not None for b in listed()), 600, "the speakers to be read")
    station.stop()
    station.start()
    first = listed()  # the first answer after a restart already has them: nothing is decoded again
    assert all(b["speakers"] is not None for b in first)
    assert {"Alice", "S2"} <= {name for b in first for name in b["speakers"]}


def test_the_page_fits_a_phone(station, browser):
    page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
    page.goto(station.url)
    page.click(f"#bundles li[data-id='{station.first}']")
    page.wait_for_selector("#transcript .w")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    # the player is brought into view, not left below the list the listener scrolled
    top = page.evaluate("document.getElementById('player').getBoundingClientRect().top")
    assert 0 <= top < page.evaluate("window.innerHeight") - 80, top
    if SHOTS:
        page.screenshot(path=str(Path(SHOTS) / "console-edge-phone.png"))


def test_the_console_stays_on_loopback_until_it_has_a_login(tmp_path):
    _, config = write_configs(tmp_path, 1, 2, SigningKey.generate(), 100.0)
    one_line(run("edge", "web", "-c", str(config), "--listen", "0.0.0.0:8750"), "needs a login")
    one_line(run("edge", "web", "-c", str(config), "--listen", "nonsense"), "HOST:PORT")


# --- the ground's page ---------------------------------------------------------------------------


@pytest.fixture()
def ground(tmp_path):
    cfg, _ = write_configs(tmp_path, free_port(), free_port(), SigningKey.generate(), 100.0)
    cfg.write_text(cfg.read_text() + f'\n[web]\npassword_hash = "{hash_password(PASSWORD)}"\n')
    with console("ground", cfg, free_port(), tmp_path / "ground-web.log", RELAY) as url:
        yield url, tmp_path


def log_in(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("#password")
    page.fill("#password", "wrong")
    page.click("button[type=submit]")
    page.wait_for_selector(".bad[role=alert]")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("#right")


def test_queue_a_recording_from_the_ground_page(ground, browser, tmp_path):
    url, _ = ground
    page = browser.new_page(viewport={"width": 1200, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    log_in(page, url)
    page.wait_for_selector(".edge[data-edge='ship']")
    assert "100 B/s" in page.inner_text(".edge[data-edge='ship']")
    assert "no ground daemon" in page.inner_text("#daemon")
    # a recording chosen (the drop zone's own file input), flash, with a title: it is queued and listed
    page.select_option("#priority", "flash")
    page.fill("#title", "ice report")
    page.set_input_files("#file", str(shared("ljspeech", "LJ001-0001.flac")))
    page.wait_for_selector("#sent.good", timeout=WAIT)
    assert "ice report" in page.inner_text("#sent")
    row = page.locator("#queue tbody tr").first
    assert row.locator("td.title").inner_text().splitlines()[0] == "ice report"  # its size below it
    assert row.locator("td.st").inner_text() == "queued" and "flash" in row.inner_text()
    # a bundle dropped on the page: ready at once, with an ETA at the link's 100 B/s
    data = list(real_bundle(60, title="dropped"))
    page.evaluate("""([bytes, name]) => {
        const dt = new DataTransfer();
        dt.items.add(new File([new Uint8Array(bytes)], name));
        document.getElementById('drop').dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true,
                                                                             cancelable: true }));
    }""", [data, "dropped.bundle"])
    page.wait_for_function("document.querySelectorAll('#queue tbody tr').length === 2", timeout=WAIT)
    ready = page.locator("#queue tbody tr.ready")
    assert ready.locator("td.title").inner_text().splitlines()[0] == "dropped" and " s" in ready.inner_text()
    # something that is not audio, dropped: refused in one line, nothing queued, the title typed kept
    page.fill("#title", "minutes of the meeting")
    page.evaluate("""() => {
        const dt = new DataTransfer();
        dt.items.add(new File(["meeting notes"], "notes.txt"));
        document.getElementById('drop').dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true,
                                                                             cancelable: true }));
    }""")
    page.wait_for_selector("#sent.bad", timeout=WAIT)
    assert "Not queued" in page.inner_text("#sent") and "notes.txt" in page.inner_text("#sent")
    assert page.input_value("#title") == "minutes of the meeting"
    assert page.locator("#queue tbody tr").count() == 2
    if SHOTS:
        page.screenshot(path=str(Path(SHOTS) / "console-ground.png"))
    # bump the bundle ahead of... its own class, then cancel the recording
    ready.get_by_role("button", name="Bump").click()
    flash = page.locator("#queue tbody tr", has_text="ice report")
    flash.get_by_role("button", name="Cancel").click()
    # finished entries leave the live list for the "Finished" box
    page.wait_for_selector("#done tbody tr.cancelled", state="attached", timeout=WAIT)
    assert "ice report" in page.locator("#done tbody tr.cancelled td.title").text_content()
    assert page.locator("#queue tbody tr").count() == 1
    # log out (the page's own form): the session is over, even for the cookie the browser may still hold
    session = next(c for c in page.context.cookies() if c["name"] == "relay_session")
    page.get_by_role("button", name="Log out").click()
    page.wait_for_selector("#password")
    assert call(url + "/api/queue", headers={"Cookie": f"relay_session={session['value']}"}).status == 401
    assert errors == []


FITS = """() => {
    const wide = document.documentElement.scrollWidth <= window.innerWidth;
    const buttons = [...document.querySelectorAll('#queue button')].filter((b) => b.offsetParent !== null);
    const box = document.getElementById('right').getBoundingClientRect();
    const inside = buttons.every((b) => { const r = b.getBoundingClientRect(); return r.left >= 0
        && r.right <= window.innerWidth && r.right <= box.right; });
    return { wide, inside, buttons: buttons.length };
}"""


@pytest.fixture()
def fleet_ground(tmp_path):
    import tomli_w

    cfg = {
        "ground": {"state_dir": str(tmp_path / "ground"), "signing_key": str(tmp_path / "ground.key"),
                   "default_edge": "north1"},
        "edges": {name: {"key": SigningKey.generate().public.text(), "rate": 40.0}
                  for name in ("north1", "north2", "south-station-longname")},
        "groups": {"north": ["north1", "north2"]},
        "link": {"rate": 40.0},
    }
    SigningKey.generate().save(tmp_path / "ground.key")
    path = tmp_path / "ground.toml"
    path.write_text(tomli_w.dumps(cfg) + f'\n[web]\npassword_hash = "{hash_password(PASSWORD)}"\n')
    with console("ground", path, free_port(), tmp_path / "ground-web.log", RELAY) as url:
        yield url, path


@pytest.mark.parametrize("size", [(1280, 900), (390, 844)], ids=["desktop", "phone"])
def test_a_briefing_for_the_fleet_from_the_ground_page(fleet_ground, browser, size):
    url, config = fleet_ground
    width, height = size
    page = browser.new_page(viewport={"width": width, "height": height}, is_mobile=width < 500)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    log_in(page, url)
    page.wait_for_selector(".edge[data-edge='north2']")
    options = page.locator("#to option").all_inner_texts()
    assert "@north (2 edges)" in options and "all (3 edges)" in options
    # a long title and two more entries for single ships: the table must still fit, actions in view
    for n, (to, title) in enumerate([("@north", "Morning briefing for the northern fleet, all hands"),
                                     ("north1", "ice report"), ("south-station-longname", "weather")]):
        page.select_option("#to", to)
        page.fill("#title", title)
        data = list(real_bundle(40 + n, title=title, seed=n))
        page.evaluate("""([bytes, name]) => {
            const dt = new DataTransfer();
            dt.items.add(new File([new Uint8Array(bytes)], name));
            document.getElementById('drop').dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true,
                                                                                 cancelable: true }));
        }""", [data, f"b{n}.bundle"])
        page.wait_for_function(f"document.querySelectorAll('#queue tbody.entry').length === {n + 1}", timeout=WAIT)
        if to == "@north":
            assert "2 edges" in page.inner_text("#sent")
    if SHOTS:
        page.screenshot(path=str(Path(SHOTS) / f"console-ground-fleet-{width}.png"))
    fits = page.evaluate(FITS)
    assert fits["wide"] and fits["inside"] and fits["buttons"] >= 6, fits  # Bump and Cancel on each entry
    briefing = page.locator("#queue tbody.entry", has_text="Morning briefing")
    if width > 500:  # a title wraps at words, not a word a line
        title_box = briefing.locator("td.title .name").bounding_box()
        line = page.evaluate("parseFloat(getComputedStyle(document.querySelector('td.title')).lineHeight)")
        assert title_box is not None and title_box["height"] <= 3.2 * line, (title_box, line)  # 50 characters
    # its row opens into one row per ship, each with its own actions
    briefing.get_by_role("button", name="2 edges").click()
    page.wait_for_selector("tr.part[data-edge='north2']")
    fits = page.evaluate(FITS)
    assert fits["wide"] and fits["inside"], fits
    if SHOTS:
        page.screenshot(path=str(Path(SHOTS) / f"console-ground-fleet-{width}-open.png"))
    page.locator("tr.part[data-edge='north2']").get_by_role("button", name="Cancel").click()
    page.wait_for_selector("tr.part.cancelled[data-edge='north2']", timeout=WAIT)
    assert "ready" in page.locator("tr.part[data-edge='north1']").inner_text()  # the other ship still gets it
    assert errors == []


def test_the_ground_page_fits_a_phone(ground, browser):
    url, _ = ground
    page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
    log_in(page, url)
    page.wait_for_selector(".edge[data-edge='ship']")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    if SHOTS:
        page.screenshot(path=str(Path(SHOTS) / "console-ground-phone.png"))

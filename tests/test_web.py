"""The consoles' shell (relay.web) and the ground's console API, against the
real command (`relay ground web`) over a real queue: uploads checked as a
file queued from the shell, cancel and bump, the link's status, the login,
and no state change from another site. The pages in a browser: test_console."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from urllib.parse import quote

import pytest

from relay.link.signing import SigningKey
from relay.testing.broker import free_port
from relay.testing.bundles import real_bundle
from relay.testing.web import call, console
from relay.web.auth import Gate, PasswordHashError, cross_site_refusal, hash_password, parse_hash, verify_password
from tests.conftest import shared
from tests.test_daemons import RELAY, one_line, run, write_configs

PASSWORD = "correct horse battery"


def token(url: str, cookie: str = "") -> str:
    page = call(url + "/", headers={"Cookie": cookie} if cookie else {})
    assert page.status == 200, page.status
    found = re.search(rb'name="relay-token" content="([^"]+)"', page.body)
    assert found
    return found[1].decode()


def upload(url: str, data: bytes, name: str, tok: str, **query: str) -> object:
    q = "&".join(f"{k}={quote(v)}" for k, v in {"name": name, **query}.items())
    return call(f"{url}/api/queue?{q}", "POST", data, {"X-Relay-Token": tok,
                                                      "Content-Type": "application/octet-stream"})


@pytest.fixture()
def ground(tmp_path):
    cfg, _ = write_configs(tmp_path, free_port(), free_port(), SigningKey.generate(), 100.0)
    cfg.write_text(cfg.read_text() + "\n[web]\nmax_upload_mb = 1.0\n")
    with console("ground", cfg, free_port(), tmp_path / "web.log", RELAY) as url:
        yield url, tmp_path


# --- the password and the gate -----------------------------------------------------------------


def test_password_hashes_verify_and_bad_ones_are_refused():
    h = hash_password(PASSWORD)
    assert verify_password(PASSWORD, h) and not verify_password(PASSWORD + "!", h)
    assert h != hash_password(PASSWORD)  # salted
    for bad in ["", "sha256$abc", "scrypt$3$8$1$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA==",  # N not a power of two
                "scrypt$16384$8$1$not base64$AAAA", h.replace("scrypt$32768", "scrypt$4194304")]:
        with pytest.raises(PasswordHashError):
            parse_hash(bad)
    with pytest.raises(PasswordHashError):
        hash_password("")


def test_sessions_expire_and_cannot_be_forged():
    gate = Gate(hash_password(PASSWORD), session_seconds=60)
    cookie = gate.session(now=1000.0)
    assert gate.valid_session(cookie, now=1030.0) and not gate.valid_session(cookie, now=1061.0)
    expires, sid, mac = cookie.split(".")
    assert not gate.valid_session(f"{int(expires) + 9999}.{sid}.{mac}", now=1030.0)  # a later expiry, same MAC
    gate.end(cookie)  # logged out: over for good, whoever kept a copy of the cookie
    assert not gate.valid_session(cookie, now=1030.0)
    cookie = gate.session(now=1000.0)
    assert not Gate(gate.password_hash).valid_session(cookie, now=1030.0)  # another server's key (a restart)
    for junk in [None, "", "x", "." * 300, "12.zz"]:
        assert not gate.valid_session(junk, now=1030.0)
    assert gate.check_login(f"password={quote(PASSWORD)}".encode())
    assert not gate.check_login(b"password=nope") and not gate.check_login(b"\xff\xfe")
    assert not gate.check_login(b"password=" + b"a" * 5000)
    for _ in range(5):
        gate.failed("10.0.0.9", now=2000.0)
    assert gate.throttled("10.0.0.9", now=2030.0) and not gate.throttled("10.0.0.9", now=2061.0)
    assert not gate.throttled("10.0.0.8", now=2030.0)


def test_state_changes_need_the_token_and_this_origin():
    h = {"host": "ground:8751", "x-relay-token": "t0k"}
    assert cross_site_refusal("GET", {}, "t0k") is None
    assert cross_site_refusal("POST", h, "t0k") is None
    assert "token" in (cross_site_refusal("POST", {**h, "x-relay-token": "other"}, "t0k") or "")
    assert "token" in (cross_site_refusal("DELETE", {"host": "ground:8751"}, "t0k") or "")
    assert "cross-site" in (cross_site_refusal("POST", {**h, "origin": "http://evil.example"}, "t0k") or "")
    assert cross_site_refusal("POST", {**h, "origin": "http://ground:8751"}, "t0k") is None
    # DNS rebinding: the page's own name, pointed at this console, is "same origin" with itself: refused
    # unless it is one of the console's names
    rebound = {"host": "evil.example:8751", "x-relay-token": "t0k", "origin": "http://evil.example:8751"}
    assert cross_site_refusal("POST", rebound, "t0k", {"ground", "localhost"}) is not None
    assert cross_site_refusal("POST", {**h, "origin": "http://ground:8751"}, "t0k", {"ground"}) is None
    gate = Gate(None, hosts={"localhost", "127.0.0.1", "ground"})
    assert gate.host_ok("127.0.0.1:8751") and gate.host_ok("GROUND") and gate.host_ok("localhost")
    for bad in ("evil.example:8751", "127.0.0.1.evil.example", "", None, "[::1", "a" * 400):
        assert not gate.host_ok(bad), bad


def test_beyond_loopback_only_with_a_login(tmp_path):
    from relay.config import ConfigError, GroundWeb, Web
    from relay.web.server import check_listen

    with pytest.raises(ConfigError, match="needs a login"):
        check_listen(Web(), "0.0.0.0:8750")
    assert check_listen(Web(password_hash=hash_password(PASSWORD)), "0.0.0.0:8750") == ("0.0.0.0", 8750)
    assert check_listen(GroundWeb(), None) == ("127.0.0.1", 8751)
    ground, edge = write_configs(tmp_path, free_port(), free_port(), SigningKey.generate(), 100.0)
    one_line(run("ground", "web", "-c", str(ground), "--listen", "0.0.0.0:8751"), "needs a login", "password_hash")
    one_line(run("ground", "web", "-c", str(ground), "--listen", "ground"), "HOST:PORT")
    ground.write_text(ground.read_text() + '\n[web]\npassword_hash = "sha1$x"\n')
    one_line(run("ground", "web", "-c", str(ground)), "web.password_hash", "scrypt")
    # `relay web password` makes a hash the configuration takes
    made = subprocess.run([RELAY, "web", "password", "--stdin"], input=PASSWORD + "\n", capture_output=True,
                          text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    assert verify_password(PASSWORD, made.stdout.strip())  # the hash alone, for a script
    empty = subprocess.run([RELAY, "web", "password", "--stdin"], input="\n", capture_output=True, text=True,
                           timeout=60)
    assert empty.returncode != 0 and "empty" in empty.stderr and "Traceback" not in empty.stderr


# --- the ground's console ----------------------------------------------------------------------


def test_uploads_are_checked_and_queued(ground):
    url, tmp = ground
    tok = token(url)
    audio = shared("ljspeech", "LJ001-0001.flac").read_bytes()
    got = upload(url, audio, "LJ001-0001.flac", tok, priority="flash", title="first reading")
    assert got.status == 201, got.body
    item = got.json()
    assert (item["state"], item["priority"], item["rows"][0]["edge"], item["title"]) == ("queued", "flash", "ship",
                                                                                         "first reading")
    # a bundle is ready at once: its ETA is its bytes at the configured 100 B/s
    bundle = real_bundle(60)
    got = upload(url, bundle, "call.bundle", tok)
    assert got.status == 201 and got.json()["state"] == "ready", got.body
    rows = {r["id"]: r for r in call(url + "/api/queue").json()["active"]}
    (ready,) = rows[got.json()["id"]]["rows"]
    assert ready["bytes_left"] > len(bundle) and ready["eta_s"] == pytest.approx(ready["bytes_left"] / 100, rel=0.01)
    assert rows[got.json()["id"]]["eta_s"] == ready["eta_s"]  # an entry for one edge is through when its row is
    assert rows[item["id"]]["eta_s"] is None  # audio not yet encoded has no size, so no ETA (not "0 s")
    # refused, one line each, and nothing kept
    for data, name, query, status, needle in [
        (b"meeting notes\n" * 40, "notes.wav", {}, 422, "notes.wav"),  # named as sent, not by where it was kept
        (bundle[:-3], "cut.bundle", {}, 422, "truncated"),
        (audio, "a.flac", {"to": "ship9"}, 422, "not an edge"),
        (audio, "a.flac", {"priority": "urgent"}, 422, "unknown priority"),
        (b"", "empty.wav", {}, 400, "empty"),
        (b"\0" * (2**20 + 1), "big.wav", {}, 413, "larger"),
        (audio, "", {}, 400, "no file name"),
    ]:
        got = upload(url, data, name, tok, **query)
        assert got.status == status and needle in got.json()["error"], (name, got.status, got.body)
        assert str(tmp) not in got.json()["error"]
    kept = sorted(p.name for p in (tmp / "ground" / "uploads").iterdir())
    assert len(kept) == 1 and kept[0].endswith("-LJ001-0001.flac")
    # a name that tries to leave the folder stays in it
    got = upload(url, audio, "../../etc/cron.d/x.flac", tok)
    assert got.status == 201 and Path(got.json()["source"]).parent == tmp / "ground" / "uploads"


def test_cancel_bump_and_status(ground):
    url, tmp = ground
    tok = token(url)
    ids = [upload(url, real_bundle(30, seed=s), f"b{s}.bundle", tok, priority="bulk").json()["id"] for s in (1, 2)]
    act = {"X-Relay-Token": tok}
    bumped = call(f"{url}/api/queue/{ids[1]}/bump", "POST", headers=act)
    assert bumped.status == 200
    assert [r["id"] for r in call(url + "/api/queue").json()["active"]][:2] == [ids[1], ids[0]]
    assert call(f"{url}/api/queue/{ids[1]}/bump?priority=flash", "POST", headers=act).json()[0]["priority"] == "flash"
    assert call(f"{url}/api/queue/{ids[0]}/cancel", "POST", headers=act).json()[0]["state"] == "cancelled"
    assert [r["id"] for r in call(url + "/api/queue").json()["finished"]] == [ids[0]]  # apart from the live ones
    again = call(f"{url}/api/queue/{ids[0]}/cancel", "POST", headers=act)
    assert again.status == 409 and "cancelled" in again.json()["error"]
    assert call(f"{url}/api/queue/999/cancel", "POST", headers=act).status == 404
    assert call(f"{url}/api/queue/x/cancel", "POST", headers=act).status == 404
    # without the token, or from another site: refused, nothing changed
    assert call(f"{url}/api/queue/{ids[1]}/cancel", "POST").status == 403
    assert call(f"{url}/api/queue/{ids[1]}/cancel", "POST",
                headers={**act, "Origin": "http://evil.example"}).status == 403
    assert upload(url, real_bundle(30, seed=3), "c.bundle", "forged").status == 403
    status = call(url + "/api/status").json()
    assert status["daemon"] is None  # no ground daemon has run on this queue
    (edge,) = status["edges"]
    assert edge["edge"] == "ship" and edge["budget_bytes_per_s"] == 100.0 and edge["backlog_entries"] == 1
    assert edge["eta_s"] == pytest.approx(edge["backlog_bytes"] / 100, rel=0.01) and edge["window_opens_in_s"] == 0


def test_the_live_view_hears_a_change(ground):
    url, _ = ground
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1]), timeout=60)
    conn.request("GET", "/api/events")
    stream = conn.getresponse()
    assert stream.status == 200 and stream.getheader("content-type").startswith("text/event-stream")

    def next_event() -> bytes:  # keep-alive comments may come between events on a slow machine
        while (line := stream.readline()).startswith(b":") or line == b"\n":
            pass
        stream.readline()  # its data line
        return line

    assert next_event() == b"event: queue\n"  # the first look
    upload(url, real_bundle(20), "d.bundle", token(url))
    assert next_event() == b"event: queue\n"  # the upload, without asking
    conn.close()


def test_the_login(tmp_path):
    cfg, _ = write_configs(tmp_path, free_port(), free_port(), SigningKey.generate(), 100.0)
    cfg.write_text(cfg.read_text() + f'\n[web]\npassword_hash = "{hash_password(PASSWORD)}"\n')
    with console("ground", cfg, free_port(), tmp_path / "web.log", RELAY) as url:
        assert call(url + "/").status == 303 and call(url + "/").headers["location"] == "/login"
        assert call(url + "/api/queue").status == 401
        assert call(url + "/login").status == 200 and b'type="password"' in call(url + "/login").body
        form = {"Content-Type": "application/x-www-form-urlencoded", "Origin": url}
        wrong = call(url + "/login", "POST", b"password=nope", form)
        assert wrong.status == 303 and "failed" in wrong.headers["location"] and "set-cookie" not in wrong.headers
        # another site's form posting the right password: refused
        assert call(url + "/login", "POST", f"password={quote(PASSWORD)}".encode(),
                    {**form, "Origin": "http://evil.example"}).status == 403
        good = call(url + "/login", "POST", f"password={quote(PASSWORD)}".encode(), form)
        assert good.status == 303 and good.headers["location"] == "/"
        cookie = good.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie
        session = cookie.split(";")[0]
        assert call(url + "/api/queue", headers={"Cookie": session}).status == 200
        tok = token(url, session)
        assert b"Log out" in call(url + "/", headers={"Cookie": session}).body
        # the session does not lift the cross-site guard
        made = call(f"{url}/api/queue?name=x.bundle", "POST", real_bundle(20),
                    {"Cookie": session, "Origin": "http://evil.example", "X-Relay-Token": tok})
        assert made.status == 403
        # guessing: after five misses a minute, even the right password waits
        for _ in range(5):
            call(url + "/login", "POST", b"password=guess", form)
        late = call(url + "/login", "POST", f"password={quote(PASSWORD)}".encode(), form)
        assert "failed" in late.headers["location"] and "set-cookie" not in late.headers


def test_other_names_old_sessions_and_huge_ids_are_refused(tmp_path):
    """DNS rebinding: a page on evil.example whose name now points at
    127.0.0.1 is "same origin" with itself, so it used to read the page's
    token and cancel, bump and upload on a loopback console with no login.
    A session used to outlive its logout. An id over 2**63 gave a 500."""
    cfg, _ = write_configs(tmp_path, free_port(), free_port(), SigningKey.generate(), 100.0)
    with console("ground", cfg, free_port(), tmp_path / "open.log", RELAY) as url:
        port = url.rsplit(":", 1)[1]
        evil = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}
        for path in ("/", "/api/queue", "/api/status", "/login", "/static/app.js"):
            got = call(url + path, headers=evil)
            assert got.status == 421 and b"{{token}}" not in got.body and b"X-Relay-Token" not in got.body, path
        tok = token(url)
        assert tok.encode() not in call(url + "/", headers=evil).body
        row = upload(url, real_bundle(20), "a.bundle", tok).json()["id"]
        assert call(f"{url}/api/queue/{row}/cancel", "POST", headers={**evil, "X-Relay-Token": tok}).status == 421
        assert call(f"{url}/api/queue?name=x.bundle", "POST", real_bundle(20, seed=4),
                    {**evil, "X-Relay-Token": tok}).status == 421
        assert call(f"{url}/api/queue", headers={"Host": f"localhost:{port}"}).status == 200  # its own names
        act = {"X-Relay-Token": tok}
        for huge in (2**63, 2**64, 10**20):
            got = call(f"{url}/api/queue/{huge}/cancel", "POST", headers=act)
            assert got.status == 404 and "error" in got.json(), huge
        assert call(f"{url}/api/queue/{row}/cancel", "POST", headers=act).json()[0]["state"] == "cancelled"
    cfg.write_text(cfg.read_text() + f'\n[web]\npassword_hash = "{hash_password(PASSWORD)}"\n')
    with console("ground", cfg, free_port(), tmp_path / "login.log", RELAY) as url:
        form = {"Content-Type": "application/x-www-form-urlencoded", "Origin": url}
        good = call(url + "/login", "POST", f"password={quote(PASSWORD)}".encode(), form)
        session = good.headers["set-cookie"].split(";")[0]
        assert call(url + "/api/queue", headers={"Cookie": session}).status == 200
        assert call(url + "/logout", "POST", b"", {"Cookie": session, "Origin": "http://evil.example"}).status == 403
        out = call(url + "/logout", "POST", b"", {"Cookie": session, "Origin": url})  # the page's form: no token
        assert out.status == 303
        assert call(url + "/api/queue", headers={"Cookie": session}).status == 401  # a kept copy is no use


# --- the edge's audio, served while it renders --------------------------------------------------


def test_a_growing_wav_is_exactly_as_long_as_declared_and_readable_as_it_grows(tmp_path):
    import os
    import threading

    import numpy as np
    import soundfile as sf

    from edge.web.growing import GrowingWav, byte_range, wav_size

    g = GrowingWav(tmp_path / "b.wav", 16000, frames=16000)
    assert g.size == wav_size(16000) == 44 + 32000 and g.written == 44  # the header first, with its final sizes
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.extend(g.read(0, g.size)))
    reader.start()
    g.write(np.full(4000, 0.5, np.float32))
    assert g.wait_for(44 + 8000, timeout=10) >= 44 + 8000
    g.write(np.full(20000, 0.25, np.float32))  # more than declared: cut
    g.close()
    reader.join(10)
    data = b"".join(got)
    assert len(data) == g.size and (tmp_path / "b.wav").stat().st_size == g.size
    audio, rate = sf.read(tmp_path / "b.wav")
    assert rate == 16000 and len(audio) == 16000 and abs(audio[0] - 0.5) < 1e-3 and abs(audio[-1] - 0.25) < 1e-3
    short = GrowingWav(tmp_path / "c.wav", 16000, frames=800)
    short.write(np.ones(100, np.float32))
    short.close()  # less than declared: padded with silence
    assert sf.read(tmp_path / "c.wav")[0].shape == (800,)
    failed = GrowingWav(tmp_path / "d.wav", 16000, frames=800)
    failed.abort("the voice failed")
    with pytest.raises(OSError, match="voice failed"):
        failed.wait_for(100)
    assert not (tmp_path / "d.wav").exists()
    # the rendering finishes between a reader's look at `done` and its open: the whole file is read instead
    racing = GrowingWav(tmp_path / "e.wav", 16000, frames=800)
    racing.write(np.full(800, 0.5, np.float32))
    racing._file.close()
    os.replace(racing.partial, racing.path)  # close()'s rename, before it sets `done`
    assert len(b"".join(racing.read(0, racing.size))) == racing.size
    size = 1000
    assert byte_range("bytes=0-", size) == (0, 1000) and byte_range("bytes=100-199", size) == (100, 200)
    assert byte_range("bytes=-100", size) == (900, 1000) and byte_range("bytes=900-5000", size) == (900, 1000)
    for bad in [None, "", "items=0-1", "bytes=a-b", "bytes=5-1", "bytes=0-1,5-6", "bytes=2000-", "bytes=-0"]:
        assert byte_range(bad, size) is None, bad


def test_the_edge_console_reuses_the_daemons_wav_and_keeps_to_its_own_threads(tmp_path):
    """The edge console used to render a bundle the daemon had already spoken
    into a WAV, holding a lock for the whole rendering in the threads the
    daemon decodes and plays in (a flash bundle waited 2 s -> 14 s). Now it
    serves the daemon's WAV, works in its own lower-priority threads, and
    refuses a rendering [retention] would not let it keep."""
    import os
    import threading
    import time

    from edge.store import Inbox
    from edge.web.app import Console
    from relay.config import EdgeConfig
    from relay.format.bundle import Bundle, Segment, SourceInfo, Speaker, Word
    from relay.format.wire import encode_bundle
    from relay.link.messages import Priority
    from relay.link.transfer import OutgoingTransfer
    from relay.testing.configs import SAME_CLOCK
    from relay.web.server import Refused

    key = SigningKey.generate()
    cfg = EdgeConfig.model_validate({
        "edge": {"name": "ship", "state_dir": str(tmp_path / "edge"), "output_dir": str(tmp_path / "played"),
                 "voice": "espeak:en-us+m3", "trusted_keys": [key.public.text()]},
        "link": SAME_CLOCK.model_dump(), "retention": {"wav_mb": 10}})
    inbox = Inbox.of(cfg)
    stored = []
    for title, seconds in (("spoken", 4.0), ("long", 3600.0)):
        words = (Word("hello", 0.5, 0.9),)
        b = Bundle(SourceInfo(title, seconds, "en"), [Speaker("S1")], [Segment(0, 0.5, 0.9, "hello", words)])
        t = OutgoingTransfer.create(b.bundle_id, encode_bundle(b, 1), "ship", Priority.NORMAL, 340, key, 1,
                                    int(time.time()))
        for i in range(t.count):
            inbox.receive(t.fragment(i))
        stored.append(inbox.finish(b.bundle_id).decided)
    wav = cfg.edge.played_dir / f"20261203-000000-{stored[0].bundle_id.hex()}.wav"
    wav.parent.mkdir(parents=True)
    wav.write_bytes(b"RIFF")
    inbox.start_play(stored[0].bundle_id)
    inbox.played(stored[0].bundle_id, "auto", str(wav))
    console = Console(cfg, inbox, None)  # type: ignore[arg-type]
    assert console.render(inbox.get(stored[0].bundle_id)) == wav  # the daemon's own, not rendered again
    with pytest.raises(Refused, match="wav_mb"):
        console.render(inbox.get(stored[1].bundle_id))  # an hour at 22 kHz: over 10 MB
    assert not (cfg.edge.state_dir / "web").exists() or not list((cfg.edge.state_dir / "web").glob("*.wav"))
    nice, name = console.pool.submit(lambda: (os.getpriority(os.PRIO_PROCESS, threading.get_native_id()),
                                              threading.current_thread().name)).result()
    assert nice == 10 and name.startswith("console")

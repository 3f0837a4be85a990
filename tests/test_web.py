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
    line = next(ln for ln in made.stdout.splitlines() if ln.startswith("password_hash"))
    assert verify_password(PASSWORD, line.split('"')[1])
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
    assert (item["state"], item["priority"], item["edge"], item["title"]) == ("queued", "flash", "ship",
                                                                              "first reading")
    # a bundle is ready at once: its ETA is its bytes at the configured 100 B/s
    bundle = real_bundle(60)
    got = upload(url, bundle, "call.bundle", tok)
    assert got.status == 201 and got.json()["state"] == "ready", got.body
    rows = {r["id"]: r for r in call(url + "/api/queue").json()}
    ready = rows[got.json()["id"]]
    assert ready["bytes_left"] > len(bundle) and ready["eta_s"] == pytest.approx(ready["bytes_left"] / 100, rel=0.01)
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
    assert [r["id"] for r in call(url + "/api/queue").json()][:2] == [ids[1], ids[0]]
    assert call(f"{url}/api/queue/{ids[1]}/bump?priority=flash", "POST", headers=act).json()["priority"] == "flash"
    assert call(f"{url}/api/queue/{ids[0]}/cancel", "POST", headers=act).json()["state"] == "cancelled"
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


# --- the edge's audio, served while it renders --------------------------------------------------


def test_a_growing_wav_is_exactly_as_long_as_declared_and_readable_as_it_grows(tmp_path):
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
    size = 1000
    assert byte_range("bytes=0-", size) == (0, 1000) and byte_range("bytes=100-199", size) == (100, 200)
    assert byte_range("bytes=-100", size) == (900, 1000) and byte_range("bytes=900-5000", size) == (900, 1000)
    for bad in [None, "", "items=0-1", "bytes=a-b", "bytes=5-1", "bytes=0-1,5-6", "bytes=2000-", "bytes=-0"]:
        assert byte_range(bad, size) is None, bad

"""The station console's figures: page weight, and time to first
audio in the browser for a bundle nobody has listened to yet.

A station is made in a temporary folder (an edge store with a 30-second
two-speaker bundle of LJSpeech's words, imported as if received), `relay
edge web` serves it, and Debian's chromium (through Playwright) opens the
page, clicks the bundle and waits for the audio element's first "playing"
event. The voice bank is measured before the clock starts (a new edge
measures its voices once, about a minute, on its first bundle).

    .venv/bin/python benchmarks/console.py [--voice auto|espeak:en-us+m3|piper:...]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--voice", default="auto", help="the edge's voice (default: auto, a voice per speaker)")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the bundle")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from relay.format.wire import encode_bundle
    from relay.link import by_hand
    from relay.link.messages import Priority
    from relay.link.signing import SigningKey
    from relay.link.transfer import OutgoingTransfer
    from relay.testing.broker import free_port
    from relay.testing.bundles import conversation

    relay = str(Path(sys.executable).with_name("relay"))
    tmp = Path(tempfile.mkdtemp(prefix="console-bench-"))
    key = SigningKey.generate()
    key.save(tmp / "edge.key")
    config = tmp / "edge.toml"
    config.write_text(f"""
[edge]
name = "ship"
state_dir = "{tmp}/edge"
play = false
voice = "{args.voice}"
signing_key = "{tmp}/edge.key"
trusted_keys = ["{key.public.text()}"]
""")

    def receive(seed: int, title: str) -> str:
        phrases, bundle = 2, conversation(2, seed=seed, title=title)
        while bundle.source.duration < args.seconds:
            phrases += 1
            bundle = conversation(phrases, seed=seed, title=title)
        t = OutgoingTransfer.create(bundle.bundle_id, encode_bundle(bundle), "ship", Priority.NORMAL, 340, key, 1,
                                    int(time.time()))
        path = tmp / f"{title}.transfer"
        path.write_bytes(by_hand.pack(t))
        subprocess.run([relay, "edge", "import", str(path), "-c", str(config)], check=True, capture_output=True)
        return bundle.bundle_id.hex()

    warm = receive(11, "warm-up")
    target = receive(12, "thirty seconds")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([relay, "edge", "web", "-c", str(config), "--listen", f"127.0.0.1:{port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(url + "/api/bundles", timeout=5)
                break
            except OSError:
                time.sleep(0.2)
        started = time.monotonic()
        urllib.request.urlopen(f"{url}/api/bundles/{warm}/audio.wav", timeout=600).read()  # the voice bank, once
        print(f"warm-up (voice bank measured, models loaded): {time.monotonic() - started:.1f} s")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"),
                                        args=["--autoplay-policy=no-user-gesture-required"])
            page = browser.new_page()
            weights: dict[str, int] = {}
            page.on("response", lambda r: weights.__setitem__(r.url, len(r.body())) if "/api/" not in r.url else None)
            page.goto(url, wait_until="networkidle")
            print(f"page weight: {sum(weights.values()):,} bytes in {len(weights)} files, no external requests "
                  f"({', '.join(f'{u.rsplit(chr(47), 1)[-1] or chr(47)} {n:,}' for u, n in weights.items())})")
            page.evaluate("""() => { window.firstAudio = new Promise((resolve) => {
                document.getElementById('audio').addEventListener('playing', () => resolve(performance.now()),
                                                                  { once: true }); }); }""")
            clicked = page.evaluate("performance.now()")
            page.click(f"#bundles li[data-id='{target}']")
            page.wait_for_function(f"document.getElementById('audio').src.includes('{target}')")
            page.evaluate("document.getElementById('audio').play()")
            playing = page.evaluate("window.firstAudio")
            duration = page.evaluate("document.getElementById('audio').duration")
            print(f"time to first audio, a {duration:.0f}-s bundle not heard before ({args.voice}): "
                  f"{(playing - clicked) / 1000:.2f} s")
            browser.close()
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

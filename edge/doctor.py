"""One screen an operator reads on a new node: is this edge ready to work?

``relay edge doctor`` runs every check here and exits non-zero when
something the configuration needs is missing; the daemon runs the same
checks at start (without timing the voices again or dialling the broker,
which it is about to do anyway) and logs one line per problem. A check is a
:class:`Finding`: what was looked at, what was found, and whether it is fine
(``ok``), worth knowing (``warn``) or a reason this edge cannot do its job
(``fail``).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from typing import Literal

from relay.config import EdgeConfig
from relay.errors import RelayError

Level = Literal["ok", "warn", "fail"]
MIN_FREE_MB = 512  # below this the state or output disk fills within days of traffic


@dataclass(frozen=True, slots=True)
class Finding:
    what: str
    level: Level
    detail: str


def _voices(config: EdgeConfig) -> list[Finding]:
    from relay.voice.catalog import Catalog

    catalog = Catalog(config.voices)
    out = []
    usable = 0
    for engine, status in catalog.statuses.items():
        if status.available:
            usable += 1
            out.append(Finding(f"voices: {engine}", "ok", status.detail))
        elif engine in ("piper", "kokoro"):
            out.append(Finding(f"voices: {engine}", "warn", status.detail))
    kokoro = catalog.backends.get("kokoro")
    problem = getattr(kokoro, "problem", None) if kokoro is not None else None
    if problem:
        out.append(Finding("voices: Kokoro v1.0 styles", "warn", f"{problem}; the packaged styles serve"))
    if config.edge.voice != "auto":
        try:
            catalog.find(config.edge.voice)
        except RelayError as exc:
            out.append(Finding("voices: edge.voice", "fail", str(exc)))
    if config.edge.speak and not usable:
        out.append(Finding("voices", "fail", "no engine can speak here (edge.speak = true)"))
    return out


def _speed(config: EdgeConfig, measure: bool) -> list[Finding]:
    from edge import speed
    from relay.voice.catalog import Catalog

    path = config.edge.state_dir / "speed.json"
    profile = speed.profile(Catalog(config.voices), path) if measure else speed.load(path)
    if profile is None:
        return [Finding("speed", "warn", "not measured yet (the daemon measures at start; relay edge doctor does)")]
    fast = speed.fast_engines(profile)
    rates = ", ".join(f"{k} RTF {v:.2f}" for k, v in sorted(profile.rtf.items(), key=lambda kv: kv[1]))
    if not fast:
        return [Finding("speed", "warn", f"{profile.device}: {rates or 'no engine'}; none keeps ahead of a live "
                                         "stream here: stored bundles render ahead, live parts may pause")]
    return [Finding("speed", "ok", f"{profile.device}: {rates}; live and flash speak with {', '.join(sorted(fast))}")]


def _text_model() -> Finding:
    try:
        from relay.format.textmodel import text_model

        start = time.perf_counter()
        text_model()
        took = time.perf_counter() - start
        return Finding("text model", "ok", f"Whisper tiny.en decoder, checked, loaded in {took:.1f} s")
    except RelayError as exc:
        return Finding("text model", "fail", f"{exc}: format v2 bundles cannot be decoded")


def _sound(config: EdgeConfig) -> Finding:
    if not (config.edge.speak and config.edge.play):
        return Finding("sound card", "ok", "not used (edge.play or edge.speak is false): WAVs go to "
                                           f"{config.edge.played_dir}")
    try:
        import sounddevice as sd

        info = sd.query_devices(config.edge.device, "output")
        return Finding("sound card", "ok", f"{info['name']} ({int(info['default_samplerate'])} Hz)")
    except Exception as exc:  # noqa: BLE001 - PortAudio missing, no device, a bad name: all one answer
        return Finding("sound card", "warn", f"none usable ({str(exc).splitlines()[0][:120]}); bundles are written "
                                             f"as WAVs to {config.edge.played_dir}")


def _disk(config: EdgeConfig) -> list[Finding]:
    out = []
    for what, path in (("state disk", config.edge.state_dir), ("output disk", config.edge.played_dir)):
        probe = path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        try:
            free = shutil.disk_usage(probe).free / 1e6
        except OSError as exc:
            out.append(Finding(what, "fail", f"{path}: {exc.strerror}"))
            continue
        level: Level = "ok" if free >= MIN_FREE_MB else "warn"
        out.append(Finding(what, level, f"{path}: {free:,.0f} MB free"))
    return out


def _keys(config: EdgeConfig) -> list[Finding]:
    from relay.link.signing import SigningKey, VerifyKey

    out = []
    try:
        key = SigningKey.load(config.edge.signing_key)
        out.append(Finding("signing key", "ok", f"{config.edge.signing_key} ({key.public.text()[:24]}...)"))
    except RelayError as exc:
        out.append(Finding("signing key", "fail", str(exc)))
    if not config.edge.trusted_keys:
        out.append(Finding("trusted ground keys", "fail", "none: edge.trusted_keys needs the ground's public key"))
    for i, text in enumerate(config.edge.trusted_keys):
        try:
            VerifyKey.parse(text, f"edge.trusted_keys[{i}]")
            out.append(Finding("trusted ground key", "ok", text if len(text) < 60 else text[:56] + "..."))
        except RelayError as exc:
            out.append(Finding("trusted ground key", "fail", str(exc)))
    return out


def _broker(config: EdgeConfig, timeout: float) -> Finding:
    import asyncio

    import aiomqtt

    from relay.link.mqtt import ConnectionSettings, client

    b = config.broker
    where = f"{b.host}:{b.port}" + (" (TLS)" if b.tls else "")
    try:
        settings = ConnectionSettings(b, config.username)
    except RelayError as exc:
        return Finding("broker", "fail", str(exc))

    async def connect() -> None:
        async with client(settings, f"{config.username}-doctor"):
            pass

    try:
        asyncio.run(asyncio.wait_for(connect(), timeout))
        return Finding("broker", "ok", f"{where}: connected as {config.username!r}")
    except TimeoutError:
        return Finding("broker", "fail", f"{where}: no answer in {timeout:.0f} s")
    except aiomqtt.MqttError as exc:
        return Finding("broker", "fail", f"{where}: {exc}")
    except OSError as exc:
        return Finding("broker", "fail", f"{where}: {exc.strerror or exc}")


def _clock(config: EdgeConfig) -> Finding:
    import sqlite3

    db = config.edge.inbox_db
    if not db.exists():
        return Finding("clock", "ok", "nothing received yet to compare with")
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as c:
            row = c.execute("SELECT received, signed_at FROM bundles WHERE signed_at IS NOT NULL "
                            "ORDER BY received DESC LIMIT 1").fetchone()
    except sqlite3.Error as exc:
        return Finding("clock", "warn", f"{db}: {exc}")
    if row is None:
        return Finding("clock", "ok", "nothing received yet to compare with")
    received, signed = float(row[0]), float(row[1])
    lag = received - signed  # the link's delay, plus how far this clock is ahead of the ground's
    when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(received))
    if lag < -config.link.max_clock_skew:
        return Finding("clock", "fail", f"the last bundle ({when} UTC) was signed {-lag:.0f} s after this clock "
                                        "says it arrived: this clock is behind the ground's (set NTP or the RTC)")
    if lag < 0:  # a transfer signed again is dated ahead, within max_clock_skew (relay.link.receiver)
        return Finding("clock", "ok", f"the last bundle ({when} UTC) was signed {-lag:.0f} s ahead of this clock, "
                                      f"within max_clock_skew ({config.link.max_clock_skew:.0f} s)")
    return Finding("clock", "ok", f"the last bundle ({when} UTC) arrived {lag:.0f} s after it was signed "
                                  "(the link's delay plus any skew)")


def examine(config: EdgeConfig, *, measure: bool = True, broker: bool = True, timeout: float = 10.0) -> list[Finding]:
    """Every check, in the order an operator reads them. ``measure`` times the voices
    (once, cached); ``broker`` connects with this edge's credentials."""
    findings = _voices(config) + _speed(config, measure) + [_text_model(), _sound(config)] + _disk(config)
    findings += _keys(config)
    if broker:
        findings.append(_broker(config, timeout))
    findings.append(_clock(config))
    return findings


def problems(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.level != "ok"]

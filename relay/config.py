"""The daemons' configuration: TOML files validated at start (pydantic).

``config/ground.toml`` and ``config/edge.toml`` document every option. A bad
file stops the daemon before it does anything, with one line naming the
file and the key: ``config/edge.toml: link.fragment_size: must be >= 340``.
Unknown keys are errors too, so a typo is never silently ignored, and types
are strict: ``play = "yes"`` is an error, not a guess.
"""

from __future__ import annotations

import re
import tomllib
from datetime import time as dtime
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from relay.errors import RelayError
from relay.format.limits import Limits
from relay.link.messages import MAX_FRAGMENT, MIN_FRAGMENT

WINDOW = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")


class ConfigError(RelayError):
    """A configuration file is missing, not TOML, or has a bad or unknown key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


FilePath = Annotated[Path, Field(strict=False)]  # TOML has no path type: a string is one


class Broker(_Strict):
    host: str = "localhost"
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    username: str | None = None  # default: the daemon's name (the broker's ACL keys on it)
    password_file: FilePath | None = None  # read at start; keeps the secret out of the config
    tls: bool = False
    ca_file: FilePath | None = None
    cert_file: FilePath | None = None
    key_file: FilePath | None = None
    keepalive: Annotated[int, Field(ge=5, le=3600)] = 60
    # seconds to wait for the broker's answer to a connect or a publish: a link that died
    # mid-handshake is given up this fast and tried again
    timeout: Annotated[float, Field(gt=0, le=600)] = 15.0
    topic_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_\-/]+$")] = "relay"


class Link(_Strict):
    fragment_size: Annotated[int, Field(ge=MIN_FRAGMENT, le=MAX_FRAGMENT)] = 340
    rate: Annotated[float, Field(ge=0)] = 0.0  # bytes per second the ground may send; 0 = no limit
    windows: list[str] = []  # daily UTC windows "HH:MM-HH:MM" when sending is allowed; empty = always
    ack_timeout: Annotated[float, Field(gt=0)] = 120.0  # seconds before a silent edge is polled
    max_poll_interval: Annotated[float, Field(gt=0)] = 3600.0

    @field_validator("windows")
    @classmethod
    def _windows(cls, value: list[str]) -> list[str]:
        for w in value:
            m = WINDOW.match(w)
            if not m or int(m[1]) > 23 or int(m[3]) > 24 or int(m[2]) > 59 or int(m[4]) > 59:
                raise ValueError(f"window {w!r} is not HH:MM-HH:MM")
        return value

    def parsed_windows(self) -> list[tuple[dtime, dtime]]:
        out = []
        for w in self.windows:
            m = WINDOW.match(w)
            end = dtime(23, 59, 59) if m[3] == "24" else dtime(int(m[3]), int(m[4]))
            out.append((dtime(int(m[1]), int(m[2])), end))
        return out


NAME = Annotated[str, Field(pattern=r"^[A-Za-z0-9_\-]{1,32}$")]


class GroundSection(_Strict):
    name: NAME = "ground"
    state_dir: FilePath = Path("/var/lib/speech-relay")
    spool_dir: FilePath | None = None  # audio dropped here is queued for default_edge
    spool_settle: Annotated[float, Field(ge=0)] = 2.0  # seconds a spool file must be unchanged
    signing_key: FilePath = Path("/etc/speech-relay/ground.key")
    default_edge: NAME | None = None
    model: str = "tiny.en"  # Whisper: tiny.en, base, a CTranslate2 folder or a hub name
    diarize: bool = True


class EdgeEntry(_Strict):
    """An edge the ground serves: ``[edges.<name>]``."""

    key: str  # the edge's public key, "ed25519:<base64>" or a file holding it (relay keys init on the edge)


class EdgeSection(_Strict):
    name: NAME = "edge"
    state_dir: FilePath = Path("/var/lib/speech-relay")
    output_dir: FilePath = Path("/var/lib/speech-relay/played")
    play: bool = True  # through the default audio device; False (or no device): WAV files in output_dir
    speak: bool = True  # False: store and acknowledge only (an archive, or play on demand: relay edge play)
    device: str | None = None
    voice: str = "auto"  # "auto": a voice per speaker from the voice bank; or a voice key
    signing_key: FilePath = Path("/etc/speech-relay/edge.key")  # signs this edge's acks and play reports
    # "ed25519:<base64>" or paths of files holding one: the grounds whose bundles are played
    trusted_keys: Annotated[list[str], Field(min_length=1)]


class EdgeLink(_Strict):
    """What an edge accepts from the link, before anything is stored (``[link]`` in edge.toml)."""

    max_fragment: Annotated[int, Field(ge=MIN_FRAGMENT, le=MAX_FRAGMENT)] = 65536  # bytes per MQTT message
    max_partial: Annotated[int, Field(ge=1, le=100_000)] = 32  # transfers in progress at once
    partial_quota: Annotated[int, Field(ge=1024)] = 128 * 1024 * 1024  # bytes those may declare, in all
    partial_ttl: Annotated[float, Field(gt=0)] = 3 * 86400.0  # seconds a transfer may sit idle before it is dropped
    buffer_bytes: Annotated[int, Field(ge=0)] = 4 * 1024 * 1024  # parts held in memory until their hash arrives
    max_age: Annotated[float, Field(ge=0)] = 30 * 86400.0  # refuse transfers signed longer ago (0: no limit)
    max_clock_skew: Annotated[float, Field(ge=0)] = 600.0  # seconds the ground's clock may be ahead or behind
    reply_interval: Annotated[float, Field(ge=0)] = 5.0  # the same ack is sent at most once in this many seconds
    max_play_attempts: Annotated[int, Field(ge=1, le=100)] = 2  # playbacks the daemon may die in before quarantine


class Codecs(_Strict):
    lyra_models: FilePath | None = None  # folder with Lyra v2's three .tflite models
    encodec_checkpoint: FilePath | None = None  # encodec_24khz-d7cc33bc.th; EnCodec is off without it

    def settings(self):
        from relay.audio.codecs import CodecSettings

        def text(p: Path | None) -> str | None:
            return str(p) if p else None

        return CodecSettings(text(self.lyra_models), text(self.encodec_checkpoint))


class Tiers(_Strict):
    tier: str = "text"  # text, hybrid, or an audio tier (codec2-700C .. opus-12k, or codec2/lyra/opus)
    codec: str = "codec2-3200"  # the audio tier hybrid uses for what stays audio
    min_logprob: Annotated[float, Field(le=0)] = -0.8  # hybrid: segments Whisper is less sure of go as audio
    max_no_speech: Annotated[float, Field(ge=0, le=1)] = 0.6
    budget: Annotated[float, Field(gt=0)] | None = None  # bit/s: the richest tier that fits; unset = `tier`
    reference_clips: str = ""  # an audio tier: <= 5 s of each new speaker's voice in their profile; "" = none

    @field_validator("tier", "codec", "reference_clips")
    @classmethod
    def _known(cls, value: str) -> str:
        from relay.audio.codecs import resolve_tier

        return resolve_tier(value) if value else value


class GroundConfig(_Strict):
    ground: GroundSection = GroundSection()
    edges: dict[NAME, EdgeEntry] = {}  # the edges served, each with its public key
    broker: Broker = Broker()
    link: Link = Link()
    tiers: Tiers = Tiers()
    codecs: Codecs = Codecs()
    limits: Limits = Limits()

    @property
    def username(self) -> str:
        return self.broker.username or self.ground.name


class EdgeConfig(_Strict):
    edge: EdgeSection
    broker: Broker = Broker()
    link: EdgeLink = EdgeLink()
    codecs: Codecs = Codecs()
    limits: Limits = Limits()

    @property
    def username(self) -> str:
        return self.broker.username or self.edge.name


def _describe(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        return f"{where}: unknown key"
    if first["type"] == "missing":
        return f"{where}: required" + (" (relay keys init prints a ground's key)" if "trusted_keys" in where else "")
    return f"{where}: {first['msg'].removeprefix('Value error, ')}"


def load(path: str | Path, model: type[BaseModel]):
    """``path`` parsed and validated as ``model``, or one :class:`ConfigError` line."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    try:
        return model.model_validate(doc)
    except ValidationError as e:
        raise ConfigError(f"{path}: {_describe(e)}") from None


def load_ground(path: str | Path) -> GroundConfig:
    return load(path, GroundConfig)


def load_edge(path: str | Path) -> EdgeConfig:
    return load(path, EdgeConfig)

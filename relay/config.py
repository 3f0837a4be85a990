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
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from relay.env import environment
from relay.errors import RelayError
from relay.format.limits import Limits
from relay.link.messages import MAX_FRAGMENT, MIN_FRAGMENT
from relay.paths import cache_dir, state_dir

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
    rate: Annotated[float, Field(ge=0)] = 0.0  # link bytes per second the ground may send; 0 = no limit
    # bytes the link adds to each message on the wire (MQTT framing and topic, TLS record), counted against
    # the rate: the rate is of the link, not of the payload, so the link's queue does not grow (its acks
    # and PUBACKs, which travel back behind it, would wait in it)
    overhead: Annotated[int, Field(ge=0, le=4096)] = 60
    windows: list[str] = []  # daily UTC windows "HH:MM-HH:MM" when sending is allowed; empty = always
    ack_timeout: Annotated[float, Field(gt=0)] = 120.0  # seconds before a silent edge is polled
    max_poll_interval: Annotated[float, Field(gt=0)] = 3600.0
    max_clock_skew: Annotated[float, Field(ge=0)] = 600.0  # an ack signed further in the future is refused

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
            assert m is not None  # checked by _windows
            end = dtime(23, 59, 59) if m[3] == "24" else dtime(int(m[3]), int(m[4]))
            out.append((dtime(int(m[1]), int(m[2])), end))
        return out


NAME = Annotated[str, Field(pattern=r"^[A-Za-z0-9_\-]{1,32}$")]


class GroundSection(_Strict):
    name: NAME = "ground"
    # queue.db and profiles.db; default: $SPEECH_RELAY_HOME/ground or ~/.local/share/speech-relay/ground
    state_dir: FilePath = Field(default_factory=lambda: state_dir("ground"))
    spool_dir: FilePath | None = None  # audio dropped here is queued for default_edge
    spool_settle: Annotated[float, Field(ge=0)] = 2.0  # seconds a spool file must be unchanged
    signing_key: FilePath = Path("/etc/speech-relay/ground.key")
    default_edge: NAME | None = None
    model: str = "tiny.en"  # Whisper: tiny.en, base, a CTranslate2 folder or a hub name
    language: str | None = None  # a language code; default: detect (English for .en models)
    beam_size: Annotated[int, Field(ge=1, le=10)] = 5
    threads: Annotated[int, Field(ge=0, le=256)] = 0  # CPU threads for Whisper; 0 = all cores
    diarize: bool = True
    pipeline: str = "offline"  # diarization: "offline" (the packaged models) or a pyannote hub pipeline name
    # listen again to a diarizer turn that got no words (ground.relisten): far-field and overlapped speech
    relisten: bool = True
    profile_bits: Literal[4, 8] = 4  # voice embedding width on the wire
    # fit a Kokoro voice to each new speaker (ground.fit_voice; about 45 s each, needs Kokoro here):
    # `relay ground encode` fits before writing the bundle; the daemon fits after sending, in the background,
    # and the fitted voice travels with the speaker's next bundle. On unless set false (or
    # $SPEECH_RELAY_FIT_VOICES=0); without Kokoro here, a warning, unless set true here (then an error).
    fit_voices: bool = Field(default_factory=lambda: environment().fit_voices)

    @property
    def queue_db(self) -> Path:
        return self.state_dir / "queue.db"

    @property
    def profiles_db(self) -> Path:
        return self.state_dir / "profiles.db"


class EdgeEntry(_Strict):
    """An edge the ground serves: ``[edges.<name>]``. Each ship has its own
    thin link, so its fragment size, rate and windows may differ from
    ``[link]``'s, which are the default for every edge."""

    key: str  # the edge's public key, "ed25519:<base64>" or a file holding it (relay edge keys init on the edge)
    fragment_size: Annotated[int, Field(ge=MIN_FRAGMENT, le=MAX_FRAGMENT)] | None = None
    rate: Annotated[float, Field(ge=0)] | None = None  # link bytes per second to this edge; 0 = no limit
    windows: list[str] | None = None  # this edge's daily UTC windows

    @field_validator("windows")
    @classmethod
    def _windows(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else Link._windows(value)


class EdgeSection(_Strict):
    name: NAME = "edge"
    # inbox.db and profiles.db (received profiles, voice assignments); default: $SPEECH_RELAY_HOME/edge
    state_dir: FilePath = Field(default_factory=lambda: state_dir("edge"))
    output_dir: FilePath | None = None  # WAVs when not playing; default: state_dir/played
    play: bool = True  # through the default audio device; False (or no device): WAV files in output_dir
    speak: bool = True  # False: store and acknowledge only (an archive, or play on demand: relay edge play)
    device: str | None = None
    voice: str = "auto"  # "auto": a voice per speaker from the voice bank; or a voice key
    match_pitch: bool = True  # move each voice toward its speaker's pitch and range
    match_colour: bool = True  # equalise each voice to its speaker's long-term spectrum (relay.audio.colour)
    # seconds a live stream's part waits for the part before it (the link may reorder them) before playing
    stream_wait: Annotated[float, Field(ge=0, le=3600)] = 30.0
    # true: the text model (300 MB) is let go once a bundle is decoded, and loaded again for the next one
    # (seconds each time): the voices then render without it in memory, for a board with 1 GB or less
    low_memory: bool = False
    signing_key: FilePath = Path("/etc/speech-relay/edge.key")  # signs this edge's acks and play reports
    # "ed25519:<base64>" or paths of files holding one: the grounds whose bundles are played (the daemon needs one)
    trusted_keys: list[str] = []

    @property
    def inbox_db(self) -> Path:
        return self.state_dir / "inbox.db"

    @property
    def profiles_db(self) -> Path:
        return self.state_dir / "profiles.db"

    @property
    def transcripts_db(self) -> Path:
        return self.state_dir / "transcripts.db"  # edge.search: rebuilt from the inbox if lost

    @property
    def played_dir(self) -> Path:
        return self.output_dir or self.state_dir / "played"


class EdgeLink(_Strict):
    """What an edge accepts from the link, before anything is stored (``[link]`` in edge.toml)."""

    max_fragment: Annotated[int, Field(ge=MIN_FRAGMENT, le=MAX_FRAGMENT)] = 65536  # bytes per MQTT message
    max_partial: Annotated[int, Field(ge=1, le=100_000)] = 32  # transfers in progress at once
    partial_quota: Annotated[int, Field(ge=1024)] = 128 * 1024 * 1024  # bytes those may declare, in all
    partial_ttl: Annotated[float, Field(gt=0)] = 3 * 86400.0  # seconds a transfer may sit idle before it is dropped
    buffer_bytes: Annotated[int, Field(ge=0)] = 4 * 1024 * 1024  # parts held in memory until their hash arrives
    buffer_parts: Annotated[int, Field(ge=0, le=1_000_000)] = 4096  # and at most this many of them
    max_age: Annotated[float, Field(ge=0)] = 30 * 86400.0  # refuse transfers signed longer ago (0: no limit)
    max_clock_skew: Annotated[float, Field(ge=0)] = 600.0  # seconds the ground's clock may be ahead or behind
    reply_interval: Annotated[float, Field(ge=0)] = 5.0  # the same ack is sent at most once in this many seconds
    max_play_attempts: Annotated[int, Field(ge=1, le=100)] = 2  # playbacks the daemon may die in before quarantine


Days = Annotated[float, Field(gt=0, le=36500)]
MB = Annotated[float, Field(gt=0, le=10_000_000)]


class EdgeRetention(_Strict):
    """What the edge keeps, and for how long (``[retention]`` in edge.toml): a
    node at sea runs for a year with nobody to empty its disk. The daemon
    prunes every ``every`` seconds and before it waits for space; ``relay edge
    prune [--dry-run]`` does the same by hand. Nothing not yet played is ever
    removed, and a bundle's id is kept as long as a replay of it could still
    be fresh (``link.max_age``), so it is never played twice."""

    played_days: Days = 30.0  # output WAVs (output_dir) older than this are removed
    played_mb: MB = 4096.0  # and the oldest beyond this much in all
    wav_mb: MB = 512.0  # one bundle's WAV at most (22 kHz: about 3 h); a longer one is quarantined, not written
    cache_days: Days = 7.0  # the console's renderings (state_dir/web), by age
    cache_mb: MB = 1024.0  # and in all
    bundles_days: Days = 90.0  # a played (or refused) bundle's data is kept this long (relay edge play, the console)
    bundles_max: Annotated[int, Field(ge=1, le=10_000_000)] = 10_000  # and at most this many bundles' data
    transcripts_mb: MB = 256.0  # the search index (transcripts.db) keeps the newest transcripts within this
    every: Annotated[float, Field(ge=1, le=86400)] = 600.0  # seconds between prunings in the daemon


class GroundRetention(_Strict):
    """What the ground keeps (``[retention]`` in ground.toml): files taken from
    the spool and uploaded on the console once their bundle is delivered (or
    failed, or cancelled), finished queue entries, refused spool files."""

    files_days: Days = 7.0  # spool/.taken, uploads: after the entry is finished
    rejected_days: Days = 30.0  # spool/.rejected and its .reason files
    queue_days: Days = 90.0  # finished entries (delivered, failed, cancelled) leave the queue
    every: Annotated[float, Field(ge=1, le=86400)] = 600.0  # seconds between prunings in the daemon


class Codecs(_Strict):
    """Where the model-based codecs find their weights (``[codecs]``, both ends)."""

    # folder with Lyra v2's three .tflite models; default $SPEECH_RELAY_LYRA, else <cache>/lyra
    lyra_models: FilePath | None = Field(default_factory=lambda: environment().lyra)
    encodec_checkpoint: FilePath | None = None  # encodec_24khz-d7cc33bc.th; EnCodec is off without it

    def lyra_dir(self) -> Path:
        return self.lyra_models.expanduser() if self.lyra_models else cache_dir() / "lyra"


class Voices(_Strict):
    """Where the edge finds voices beyond the packaged ones (``[voices]`` in edge.toml)."""

    dirs: list[FilePath] = Field(default_factory=lambda: list(environment().voices))  # Piper .onnx + .onnx.json
    kokoro_model: FilePath | None = Field(default_factory=lambda: environment().kokoro_model)
    kokoro_voices: FilePath | None = Field(default_factory=lambda: environment().kokoro_voices)
    # Kokoro v1.0's 54 styles (relay.voice.voiceset); unset: where setup installs them. Missing: one line, not fatal.
    kokoro_styles: Path | None = None
    coqui_model: str | None = Field(default_factory=lambda: environment().coqui_model)  # a name or a checkpoint
    coqui_config: FilePath | None = Field(default_factory=lambda: environment().coqui_config)


class Tiers(_Strict):
    """Which stretches travel as text and which as coded audio (``[tiers]``; ground.tiers explains)."""

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

    @model_validator(mode="after")
    def _audio_where_audio_is_needed(self) -> Tiers:
        if self.codec in ("text", "hybrid"):
            raise ValueError("codec: the hybrid codec must be an audio tier")
        if self.reference_clips in ("text", "hybrid"):
            raise ValueError("reference_clips: reference clips need an audio tier")
        return self


class Web(_Strict):
    """A station console (edge.web, ground.web): ``[web]`` in either file."""

    enabled: bool = False  # served by the daemon too (relay edge web / relay ground web serve it alone)
    listen: str = "127.0.0.1:8750"  # HOST:PORT; beyond loopback only with a password_hash
    # names and addresses the console is reached by beyond localhost and the listen address (every request's
    # Host is checked: a page elsewhere cannot point a name of its own at this console, DNS rebinding)
    hosts: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9.:\-\[\]]{1,253}$")]] = []
    # scrypt hash of the console's password (`relay web password` makes one); a login is asked whenever set
    password_hash: str | None = None
    session_hours: Annotated[float, Field(gt=0, le=24 * 30)] = 12.0  # a login lasts this long (or to a restart)

    @field_validator("listen")
    @classmethod
    def check_listen(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{value!r} is not HOST:PORT")
        return value

    @field_validator("password_hash")
    @classmethod
    def _hash(cls, value: str | None) -> str | None:
        from relay.web.auth import parse_hash

        if value is not None:
            parse_hash(value)
        return value

    @property
    def address(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


class GroundWeb(Web):
    """The ground's console: also takes uploads."""

    listen: str = "127.0.0.1:8751"
    max_upload_mb: Annotated[float, Field(gt=0, le=16384)] = 512.0  # a recording uploaded on the page, at most


GROUP_MEMBER = Annotated[str, Field(pattern=r"^@?[A-Za-z0-9_\-]{1,32}$")]


class GroundConfig(_Strict):
    ground: GroundSection = Field(default_factory=GroundSection)
    edges: dict[NAME, EdgeEntry] = {}  # the edges served, each with its public key
    # named sets of edges: members are edge names or "@group"; `--to @north` sends to all of them
    # (what members name is checked when a group is used, and by the daemon at start: ground.fleet)
    groups: dict[NAME, list[GROUP_MEMBER]] = {}
    broker: Broker = Broker()
    link: Link = Link()
    tiers: Tiers = Field(default_factory=Tiers)
    codecs: Codecs = Field(default_factory=Codecs)
    limits: Limits = Limits()
    web: GroundWeb = Field(default_factory=GroundWeb)
    retention: GroundRetention = GroundRetention()

    @property
    def username(self) -> str:
        return self.broker.username or self.ground.name

    def link_for(self, edge: str) -> Link:
        """``[link]`` with ``[edges.<edge>]``'s own fragment size, rate and windows over it."""
        entry = self.edges.get(edge)
        if entry is None:
            return self.link
        changes = {k: v for k in ("fragment_size", "rate", "windows") if (v := getattr(entry, k)) is not None}
        return self.link.model_copy(update=changes) if changes else self.link


class EdgeConfig(_Strict):
    edge: EdgeSection = Field(default_factory=EdgeSection)
    web: Web = Field(default_factory=Web)
    broker: Broker = Broker()
    link: EdgeLink = EdgeLink()
    voices: Voices = Field(default_factory=Voices)
    codecs: Codecs = Field(default_factory=Codecs)
    limits: Limits = Limits()
    retention: EdgeRetention = EdgeRetention()

    @property
    def username(self) -> str:
        return self.broker.username or self.edge.name


def _describe(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        return f"{where}: unknown key"
    if first["type"] == "missing":
        return f"{where}: required"
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
    if not doc:  # a file emptied by mistake must not silently become the packaged defaults
        raise ConfigError(f"{path}: empty (config/ground.toml and config/edge.toml document every key)")
    try:
        return model.model_validate(doc)
    except ValidationError as e:
        raise ConfigError(f"{path}: {_describe(e)}") from None


def load_ground(path: str | Path) -> GroundConfig:
    return load(path, GroundConfig)


def load_edge(path: str | Path) -> EdgeConfig:
    return load(path, EdgeConfig)


SYSTEM_CONFIG = {"ground": Path("/etc/speech-relay/ground.toml"), "edge": Path("/etc/speech-relay/edge.toml")}


def config_path(role: str, path: str | Path | None) -> Path | None:
    """Which file a command reads: ``-c PATH``, else ``$SPEECH_RELAY_<ROLE>_CONFIG``, else the
    system one (``/etc/speech-relay/<role>.toml``) if it exists; None: the packaged defaults."""
    if path is not None:
        return Path(path)
    env = environment()
    named = env.ground_config if role == "ground" else env.edge_config
    if named is not None:
        return named
    return SYSTEM_CONFIG[role] if SYSTEM_CONFIG[role].exists() else None


def _required(role: str) -> ConfigError:
    return ConfigError(f"no {role} configuration: pass -c FILE, set $SPEECH_RELAY_{role.upper()}_CONFIG, or install "
                       f"{SYSTEM_CONFIG[role]} (config/{role}.toml documents it)")


def ground_config(path: str | Path | None = None, required: bool = False) -> GroundConfig:
    """The ground's configuration as every command and the daemon see it (:func:`config_path`).
    ``required``: a command that works on a station's state (its queue, its daemon) refuses
    the packaged defaults, which would show it an empty queue of its own."""
    found = config_path("ground", path)
    if found is None and required:
        raise _required("ground")
    return load_ground(found) if found else GroundConfig()


def edge_config(path: str | Path | None = None, required: bool = False) -> EdgeConfig:
    """The edge's configuration as every command and the daemon see it (:func:`config_path`;
    ``required`` as for :func:`ground_config`)."""
    found = config_path("edge", path)
    if found is None and required:
        raise _required("edge")
    return load_edge(found) if found else EdgeConfig()


M = TypeVar("M", bound=BaseModel)


def override(settings: M, section: str, /, **values: object) -> M:
    """``settings`` with ``section``'s keys replaced by the given values (None: keep),
    validated again, so a command-line flag is checked exactly as the file's key."""
    changes = {k: v for k, v in values.items() if v is not None}
    if not changes:
        return settings
    doc = settings.model_dump()
    doc[section] = {**doc[section], **changes}
    try:
        return type(settings).model_validate(doc, strict=False)
    except ValidationError as e:
        raise ConfigError(_describe(e)) from None

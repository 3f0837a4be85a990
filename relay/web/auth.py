"""Who may use a console, and which requests may change anything.

A console on loopback is as open as the machine's shell (anyone who can
reach 127.0.0.1 can already run ``relay``). Bound anywhere else it needs a
login: ``[web] password_hash`` holds a scrypt hash of the station's password
(``relay web password`` makes one), never the password. A good login gets a
session cookie, ``HttpOnly`` and ``SameSite=Strict``: a random session id,
its expiry and an HMAC over both with a key made when the server starts (a
restart logs everyone out). The server keeps the ids of live sessions, so
logging out ends the session for good, even for a copy of the cookie.
Failed logins are slowed down per client address.

Which names the console answers to: every request's ``Host`` must be one of
the console's own (the listen address, localhost, and ``[web] hosts``).
Otherwise a web page on any site could point a name of its own at 127.0.0.1
(DNS rebinding) and, being "same origin" with itself, read the page's token
and act on a console that has no login.

Cross-site requests: every request that changes state (any method but GET
and HEAD) must carry the page's token in ``X-Relay-Token``, which a page on
another site cannot read nor send without this server agreeing to it (it
never does: no CORS), and, when the browser sends an ``Origin``, it must be
this server under one of its own names. The login form itself, which has no
token yet, is checked by its Origin (or Referer).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

# scrypt's cost: 2^15 x 8 x 1 takes ~32 MB and ~0.1 s here, the figure RFC 7914 and OWASP suggest
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
SCRYPT_MAXMEM = 64 * 1024 * 1024
COOKIE = "relay_session"
TOKEN_HEADER = "X-Relay-Token"
MAX_FORM = 4096  # bytes: the login form is a password, not an upload
FAILURES_PER_MINUTE = 5  # from one address; more are refused until the minute is over
MAX_SESSIONS = 1000  # live logins kept; beyond, the one closest to expiry ends first
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class PasswordHashError(ValueError):
    pass


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$salt$hash`` (base64), for ``[web] password_hash``."""
    if not password:
        raise PasswordHashError("the password is empty")
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, maxmem=SCRYPT_MAXMEM)
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def parse_hash(text: str) -> tuple[int, int, int, bytes, bytes]:
    """The parts of a stored hash, or :class:`PasswordHashError` (a config check)."""
    parts = text.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise PasswordHashError("not a scrypt$N$r$p$salt$hash string (make one with `relay web password`)")
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, digest = base64.b64decode(parts[4], validate=True), base64.b64decode(parts[5], validate=True)
    except ValueError:
        raise PasswordHashError("scrypt parameters or base64 do not parse") from None
    sane = 2 <= n <= 2**20 and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16
    if not sane or len(salt) < 8 or len(digest) < 16:
        raise PasswordHashError("scrypt parameters out of range (N a power of two up to 2^20, r <= 32, p <= 16)")
    return n, r, p, salt, digest


def verify_password(password: str, stored: str) -> bool:
    n, r, p, salt, digest = parse_hash(stored)
    got = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=max(SCRYPT_MAXMEM, 256 * n * r),
                         dklen=len(digest))
    return hmac.compare_digest(got, digest)


def host_of(header: str | None) -> str | None:
    """The name in a ``Host`` header (or an origin's netloc), lower case, without its port."""
    if not header or len(header) > 300:
        return None
    try:
        name = urlsplit(f"//{header}").hostname
    except ValueError:
        return None
    return name.lower() if name else None


@dataclass
class Gate:
    """A console's login and cross-site checks. ``password_hash`` None: no
    login. ``hosts``: the names it answers to (:func:`host_of` of a Host header)."""

    password_hash: str | None
    session_seconds: float = 12 * 3600.0
    hosts: set[str] = field(default_factory=lambda: {"localhost", "127.0.0.1", "::1"})
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))  # the page's, for X-Relay-Token
    _key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    _failures: dict[str, deque[float]] = field(default_factory=dict)
    _sessions: dict[str, float] = field(default_factory=dict)  # live session ids -> expiry

    @property
    def needs_login(self) -> bool:
        return self.password_hash is not None

    def _mac(self, expires: str, sid: str) -> str:
        return hmac.new(self._key, f"{expires}.{sid}".encode(), hashlib.sha256).hexdigest()

    def session(self, now: float | None = None) -> str:
        """A new session cookie's value: its expiry, a random id, and their MAC."""
        now = now or time.time()
        self._sessions = {k: t for k, t in self._sessions.items() if t > now}
        while len(self._sessions) >= MAX_SESSIONS:
            self._sessions.pop(min(self._sessions, key=self._sessions.__getitem__))
        expires, sid = int(now + self.session_seconds), secrets.token_urlsafe(16)
        self._sessions[sid] = expires
        return f"{expires}.{sid}.{self._mac(str(expires), sid)}"

    def _parts(self, cookie: str | None) -> tuple[str, str, str] | None:
        if not cookie or len(cookie) > 200 or cookie.count(".") != 2:
            return None
        expires, sid, mac = cookie.split(".")
        return expires, sid, mac

    def valid_session(self, cookie: str | None, now: float | None = None) -> bool:
        parts = self._parts(cookie)
        if parts is None:
            return False
        expires, sid, mac = parts
        return (hmac.compare_digest(mac, self._mac(expires, sid)) and expires.isdigit()
                and int(expires) > (now or time.time()) and sid in self._sessions)

    def end(self, cookie: str | None) -> None:
        """Log out: the session ends here, whoever else holds its cookie."""
        parts = self._parts(cookie)
        if parts is not None and hmac.compare_digest(parts[2], self._mac(parts[0], parts[1])):
            self._sessions.pop(parts[1], None)

    def allowed(self, cookie: str | None) -> bool:
        """May this request see the console? (Always, without a login.)"""
        return not self.needs_login or self.valid_session(cookie)

    def host_ok(self, header: str | None) -> bool:
        """Is ``header`` (a request's Host) one of this console's names?"""
        return host_of(header) in self.hosts

    def throttled(self, client: str, now: float | None = None) -> bool:
        """Too many failed logins from ``client`` in the last minute?"""
        now = now or time.time()
        recent = self._failures.get(client, deque())
        while recent and recent[0] < now - 60:
            recent.popleft()
        return len(recent) >= FAILURES_PER_MINUTE

    def failed(self, client: str, now: float | None = None) -> None:
        if len(self._failures) > 10_000:  # a flood of addresses: forget the old ones rather than grow
            self._failures.clear()
        self._failures.setdefault(client, deque()).append(now or time.time())

    def check_login(self, body: bytes) -> bool:
        """The login form's password against the hash (False on anything malformed)."""
        if self.password_hash is None or len(body) > MAX_FORM:
            return False
        try:
            form = parse_qs(body.decode("utf-8"), max_num_fields=4)
        except (UnicodeDecodeError, ValueError):
            return False
        password = form.get("password", [""])[0]
        return bool(password) and verify_password(password, self.password_hash)


def same_origin(origin: str | None, host: str | None, hosts: set[str] | None = None) -> bool:
    """An ``Origin`` (or ``Referer``) header names this server (the request's
    ``Host``, which must be one of ``hosts``), or is absent (not a browser's
    cross-site request)."""
    if origin is None:
        return True
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:
        return False
    return bool(host) and netloc == host and (hosts is None or host_of(netloc) in hosts)


def cross_site_refusal(method: str, headers: Mapping[str, str], token: str,
                       hosts: set[str] | None = None) -> str | None:
    """Why a state-changing request is refused, or None if it may go on."""
    if method in SAFE_METHODS:
        return None
    if not hmac.compare_digest(headers.get(TOKEN_HEADER.lower(), ""), token):
        return "this action needs the page's token (reload the page)"
    if not same_origin(headers.get("origin"), headers.get("host"), hosts):
        return "cross-site request refused"
    return None

"""Ed25519 signatures, both ways: the ground signs every transfer and poll it
sends, each edge signs every ack and play report it sends back, and each
side acts only on what a key it trusts signed.

Every signature covers a context string (what kind of message) and the
edge's name, so nothing signed for one purpose or one edge can be replayed
as another (see :mod:`relay.link.messages`). The ground's keys are identified on the
wire by an 8-byte key id (BLAKE2b of the public key), so an edge can trust
several grounds and a ground can roll its key over; the ground knows each
edge's key by the edge's name.

Key files: the private key is PEM (PKCS#8, unencrypted: a daemon must start
unattended; the file is written mode 0600); a public key is written and
accepted as ``ed25519:<base64>`` on one line, in a file or inline in a
configuration.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from relay.errors import RelayError

PUBLIC_PREFIX = "ed25519:"
SIGNATURE_SIZE = 64


class SigningKeyError(RelayError):
    """A key file is missing, unreadable or not an Ed25519 key."""


def key_id(public_raw: bytes) -> bytes:
    return hashlib.blake2b(public_raw, digest_size=8).digest()


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A daemon's private key (the ground's, or an edge's)."""

    _key: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load(cls, path: str | Path) -> SigningKey:
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        try:
            key = load_pem_private_key(Path(path).read_bytes(), password=None)
        except OSError as e:
            raise SigningKeyError(f"{path}: cannot read signing key ({e.strerror})") from None
        except (ValueError, TypeError):
            raise SigningKeyError(f"{path}: not an unencrypted PEM private key") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise SigningKeyError(f"{path}: not an Ed25519 key")
        return cls(key)

    def save(self, path: str | Path) -> None:
        from cryptography.hazmat.primitives import serialization

        pem = self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        path = Path(path)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
        except FileExistsError:
            raise SigningKeyError(f"{path}: already exists; not overwriting a signing key") from None
        except OSError as e:
            raise SigningKeyError(f"{path}: cannot write the key ({e.strerror})") from None

    @property
    def public(self) -> VerifyKey:
        from cryptography.hazmat.primitives import serialization

        raw = self._key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return VerifyKey(raw)

    def sign(self, context: bytes, message: bytes) -> tuple[bytes, bytes]:
        """(key id, 64-byte signature) over ``context || message``."""
        return self.public.key_id, self._key.sign(context + message)


@dataclass(frozen=True, slots=True)
class VerifyKey:
    raw: bytes  # 32 bytes

    @property
    def key_id(self) -> bytes:
        return key_id(self.raw)

    def text(self) -> str:
        return PUBLIC_PREFIX + base64.b64encode(self.raw).decode()

    @classmethod
    def parse(cls, text: str, where: str = "key") -> VerifyKey:
        """``ed25519:<base64>``, or the path of a file holding that line."""
        text = text.strip()
        if not text.startswith(PUBLIC_PREFIX):
            path = Path(text)
            try:
                text = path.read_text().strip()
            except OSError as e:
                raise SigningKeyError(
                    f"{where}: {text!r} is neither 'ed25519:<base64>' nor a readable file ({e.strerror})"
                ) from None
        try:
            raw = base64.b64decode(text.removeprefix(PUBLIC_PREFIX), validate=True)
        except ValueError:
            raw = b""
        if not text.startswith(PUBLIC_PREFIX) or len(raw) != 32:
            raise SigningKeyError(f"{where}: not an Ed25519 public key ('ed25519:' and 32 bytes of base64)")
        return cls(raw)

    def verify(self, signature: bytes, context: bytes, message: bytes) -> bool:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        if len(signature) != SIGNATURE_SIZE:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, context + message)
            return True
        except InvalidSignature:
            return False


class Keyring:
    """The public keys an edge trusts (its grounds'), by key id."""

    def __init__(self, keys: list[VerifyKey]) -> None:
        self.keys = {k.key_id: k for k in keys}

    def check(self, key_id_: bytes, signature: bytes, context: bytes, message: bytes) -> str | None:
        """None if a trusted key signed this; otherwise why not, in a few words."""
        key = self.keys.get(key_id_)
        if key is None:
            return f"signed by untrusted key {key_id_.hex()}" if any(key_id_) else "unsigned"
        if not key.verify(signature, context, message):
            return f"bad signature (key {key_id_.hex()}): forged or tampered"
        return None

"""AES-256-GCM encryption at rest with a keyring: new writes use the first key, reads try the named key.

Ciphertext text format: ``v1:<kid>:<base64url(nonce || ciphertext+tag)>``; the record's identity is
the associated data, so a ciphertext copied into another row or column does not decrypt.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_VERSION = "v1"
_MAX_KEPT = 4096  # plaintexts `decrypt_kept` holds at most


class DecryptionError(Exception):
    pass


@dataclass(frozen=True)
class Keyring:
    keys: tuple[tuple[str, bytes], ...]
    kept: dict[tuple[str, str], str] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def parse(cls, spec: str) -> Keyring:
        keys: list[tuple[str, bytes]] = []
        for item in filter(None, (p.strip() for p in spec.split(","))):
            kid, sep, b64 = item.partition(":")
            if not sep or not kid:
                raise ValueError("encryption keys must look like 'kid:base64key'")
            key = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4))
            if len(key) != 32:
                raise ValueError(f"encryption key {kid} must be 32 bytes")
            keys.append((kid, key))
        if not keys:
            raise ValueError("no encryption key configured")
        return cls(tuple(keys))

    @classmethod
    def from_settings(cls, spec: str, key_file: str) -> Keyring:
        """The configured keys, else the key file's; an empty keyring when neither exists yet (the
        caller decides whether a new key file may be made: see `create_key_file`)."""
        if spec.strip():
            return cls.parse(spec)
        path = Path(key_file)
        if not path.exists():
            return cls(())
        return cls.parse(path.read_text().strip())

    def spec(self) -> str:
        """The keyring in the form `parse` reads (secret: for key files and backups only)."""
        return ",".join(f"{kid}:{base64.urlsafe_b64encode(key).decode()}" for kid, key in self.keys)

    @property
    def primary(self) -> str:
        """The id of the key that encrypts new data."""
        if not self.keys:
            raise DecryptionError("no encryption key configured")
        return self.keys[0][0]

    def check_value(self, kid: str) -> str | None:
        """A value that tells whether two keys with the same id are the same key, without revealing
        it: an HMAC of a fixed label under the key."""
        key = dict(self.keys).get(kid)
        if key is None:
            return None
        return key_check_value(key)

    def encrypt(self, plaintext: str, associated: str) -> str:
        if not self.keys:
            raise DecryptionError("no encryption key configured")
        kid, key = self.keys[0]
        nonce = os.urandom(12)
        sealed = AESGCM(key).encrypt(nonce, plaintext.encode(), associated.encode())
        return f"{_VERSION}:{kid}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def decrypt(self, token: str, associated: str) -> str:
        version, _, rest = token.partition(":")
        kid, _, payload = rest.partition(":")
        if version != _VERSION:
            raise DecryptionError("unknown ciphertext version")
        key = dict(self.keys).get(kid)
        if key is None:
            raise DecryptionError(f"encryption key {kid} is not configured")
        raw = base64.urlsafe_b64decode(payload)
        try:
            return AESGCM(key).decrypt(raw[:12], raw[12:], associated.encode()).decode()
        except InvalidTag:
            raise DecryptionError("ciphertext does not decrypt with its key") from None

    def decrypt_kept(self, token: str, associated: str) -> str:
        """`decrypt`, keeping the plaintext for the next call: for the merchants' signing secrets, which
        every request of theirs needs twice (its signature, its answer's). Never for card numbers."""
        found = self.kept.get((token, associated))
        if found is None:
            found = self.decrypt(token, associated)
            if len(self.kept) >= _MAX_KEPT:
                self.kept.clear()
            self.kept[(token, associated)] = found
        return found

    def needs_rotation(self, token: str) -> bool:
        return key_id_of(token) != self.primary


def key_id_of(token: str) -> str:
    """The id of the key a ciphertext was sealed with."""
    return token.split(":", 2)[1]


def key_check_value(key: bytes) -> str:
    return hmac.new(key, b"greengate key check v1", hashlib.sha256).hexdigest()[:32]


def new_key_spec(kid: str = "k1") -> str:
    return f"{kid}:{base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()}"


def create_key_file(path: Path) -> Keyring:
    """Write a new key to `path` (mode 0600; never over an existing file) and return its keyring."""
    spec = new_key_spec()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(spec + "\n")
    return Keyring.parse(spec)

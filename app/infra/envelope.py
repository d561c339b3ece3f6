"""Envelope encryption of stored code (AES-256-GCM): data keys wrapped by the keyring's key-encryption keys.

A sealed value is self-describing bytes:

    version (1 byte) | key id length n (1 byte) | key id (n bytes, ASCII)
    | wrap nonce (12) | wrapped data key (32 + 16 tag) | nonce (12) | ciphertext + tag (16)

The data key is random and wrapped by the key-encryption key named by the key id (the AAD of the wrap is
the header before it, so a wrapped key cannot be relabelled). The value is encrypted under the data key
with the whole header plus the caller's AAD (table, column and row id: `encryption.aad`) as associated
data, so neither the header nor the row a ciphertext belongs to can be changed without the tag failing.
A `Sealer` holds one data key for a batch of values (each value has its own random nonce), so a batch of
2,000 rows costs one key wrap, not 2,000.

Version 0 is a value stored before encryption existed (migration 0010 turned the text columns into bytea
that way): a zero byte and the UTF-8 text. It is read as it is, and `code4me rekey` encrypts it.

The keyring's first key encrypts; every key decrypts, so keys rotate without downtime (README, "Encryption
at rest"). Lexemes of the lexical index are keyed hashes (`Keyring.lexeme`), never the identifiers.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION_PLAIN = 0
VERSION_AES_GCM = 1
NONCE = 12
TAG = 16
KEY_BYTES = 32
WRAPPED = KEY_BYTES + TAG
_KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
# A data key seals at most this many values: random 96-bit nonces stay far from a collision.
MAX_USES_PER_DATA_KEY = 1 << 24
_LEXEME_BYTES = 10


class KeyringError(ValueError):
    """The keyring setting is malformed (the message never quotes key material)."""


class DecryptionError(ValueError):
    """A sealed value could not be opened: tampered with, truncated, or opened with the wrong AAD."""


class UnknownKeyError(DecryptionError):
    """A sealed value names a key id that is not in the keyring (a key dropped too early)."""


@dataclass(frozen=True)
class Key:
    """One key-encryption key of the keyring."""

    key_id: str
    secret: bytes = field(repr=False)

    @cached_property
    def aead(self) -> AESGCM:
        """AES-256-GCM under this key."""
        return AESGCM(self.secret)

    @cached_property
    def lexeme_key(self) -> bytes:
        """The HMAC key of this key's lexemes (derived: the key-encryption key itself never hashes text)."""
        return hmac.new(self.secret, b"code4me lexeme index v1", hashlib.sha256).digest()

    @cached_property
    def digest_key(self) -> bytes:
        """The HMAC key of this key's content digests."""
        return hmac.new(self.secret, b"code4me content digest v1", hashlib.sha256).digest()


def _decode_secret(key_id: str, text: str) -> bytes:
    try:
        padded = text + "=" * (-len(text) % 4)
        raw = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise KeyringError(f"encryption key {key_id!r} is not valid base64") from None
    if len(raw) != KEY_BYTES:
        raise KeyringError(f"encryption key {key_id!r} must be {KEY_BYTES} bytes (base64 of 32 random bytes)")
    return raw


def new_key_spec(key_id: str) -> str:
    """A fresh `id:base64key` entry (what `code4me rekey --new-key` prints)."""
    if not _KEY_ID.match(key_id):
        raise KeyringError("a key id is 1-32 letters, digits, '.', '_' or '-'")
    return f"{key_id}:{base64.b64encode(os.urandom(KEY_BYTES)).decode()}"


@dataclass(frozen=True)
class Keyring:
    """Key-encryption keys: the first encrypts, all decrypt."""

    keys: tuple[Key, ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise KeyringError("the keyring needs at least one key")
        ids = [k.key_id for k in self.keys]
        if len(set(ids)) != len(ids):
            raise KeyringError("key ids in the keyring must be distinct")

    @classmethod
    def parse(cls, spec: str) -> Keyring:
        """A keyring from `id:base64key[,id:base64key...]` (the `ENCRYPTION_KEYS` setting)."""
        keys = []
        for item in (part.strip() for part in spec.split(",")):
            if not item:
                continue
            key_id, sep, secret = item.partition(":")
            key_id = key_id.strip()
            if not sep or not _KEY_ID.match(key_id):
                raise KeyringError(
                    "ENCRYPTION_KEYS is a comma-separated list of id:base64key, ids of 1-32 letters, digits,"
                    " '.', '_' or '-'"
                )
            keys.append(Key(key_id, _decode_secret(key_id, secret.strip())))
        return cls(tuple(keys))

    @property
    def primary(self) -> Key:
        """The key new values are encrypted under."""
        return self.keys[0]

    @property
    def key_ids(self) -> tuple[str, ...]:
        """The ids, primary first."""
        return tuple(k.key_id for k in self.keys)

    @cached_property
    def fingerprint(self) -> str:
        """A digest of the whole keyring (ids and keys), safe to show: processes compare keyrings by it."""
        h = hashlib.sha256(b"code4me keyring v1")
        for k in self.keys:
            h.update(k.key_id.encode() + b"\x00" + hashlib.sha256(k.secret).digest())
        return h.hexdigest()[:16]

    def key(self, key_id: str) -> Key:
        """The key of an id; UnknownKeyError when the keyring lacks it."""
        for k in self.keys:
            if k.key_id == key_id:
                return k
        raise UnknownKeyError(
            f"a stored value is encrypted under key {key_id!r}, which is not in ENCRYPTION_KEYS"
            f" (it has {', '.join(self.key_ids)}): add the key back, or run `code4me rekey` before dropping it"
        )

    def sealer(self) -> Sealer:
        """A sealer with a fresh data key under the primary key (one per batch of values)."""
        return Sealer(self)

    def seal(self, plaintext: str, aad: bytes) -> bytes:
        """One value under its own data key (batches use `sealer()`)."""
        return self.sealer().seal(plaintext, aad)

    def open(self, sealed: bytes | memoryview, aad: bytes) -> str:
        """The text of a sealed value (version 0: stored before encryption, read as is)."""
        blob = bytes(sealed)
        if not blob:
            raise DecryptionError("an empty sealed value")
        if blob[0] == VERSION_PLAIN:
            return _text(blob[1:])
        header, key_id, wrap_nonce, wrapped, rest = _split(blob)
        aead = self._data_key(key_id, header[: 2 + len(key_id)], wrap_nonce + wrapped)
        try:
            plain = aead.decrypt(rest[:NONCE], rest[NONCE:], header + aad)
        except InvalidTag:
            raise DecryptionError(
                "a stored value failed authentication (tampered, or not this row's)"
            ) from None
        return _text(plain)

    def open_optional(self, sealed: bytes | memoryview | None, aad: bytes) -> str | None:
        """`open` for a nullable column (NULL stays None)."""
        return None if sealed is None else self.open(sealed, aad)

    def _data_key(self, key_id: str, label: bytes, wrapped: bytes) -> AESGCM:
        return _unwrap(self.key(key_id), label, wrapped)

    # ------------------------------------------------------------------ lexemes

    def lexeme(self, token: str) -> str:
        """A token of the lexical index as stored: a keyed hash under the primary key."""
        return _lexeme(self.primary, token)

    def lexeme_variants(self, token: str) -> tuple[str, ...]:
        """A query token under every key of the keyring (rows not yet rekeyed carry an older key's hashes)."""
        return tuple(_lexeme(k, token) for k in self.keys)

    def digest(self, text: str) -> str:
        """A keyed digest of a text (64 hex digits) under the primary key: equal texts compare equal without
        an unkeyed hash that would confirm a guessed text (a context chunk's content_hash)."""
        raw = text.encode("utf-8", "surrogatepass")
        return hmac.new(self.primary.digest_key, raw, hashlib.sha256).hexdigest()


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DecryptionError("a stored value is not UTF-8 text (tampered)") from None


def sealed_key_id(sealed: bytes | memoryview) -> str | None:
    """The key id a sealed value names (None for a version-0 value stored before encryption)."""
    blob = bytes(sealed[: 2 + 64])
    if not blob or blob[0] == VERSION_PLAIN:
        return None
    return blob[2 : 2 + blob[1]].decode("ascii")


def _split(blob: bytes) -> tuple[bytes, str, bytes, bytes, bytes]:
    """(header through the wrapped key, key id, wrap nonce, wrapped key, nonce + ciphertext)."""
    if blob[0] != VERSION_AES_GCM:
        raise DecryptionError(f"unknown envelope version {blob[0]}")
    if len(blob) < 2:
        raise DecryptionError("a truncated sealed value")
    n = blob[1]
    end = 2 + n + NONCE + WRAPPED
    if len(blob) < end + NONCE + TAG:
        raise DecryptionError("a truncated sealed value")
    try:
        key_id = blob[2 : 2 + n].decode("ascii")
    except UnicodeDecodeError:
        raise DecryptionError("a malformed key id in a sealed value") from None
    wrap_nonce = blob[2 + n : 2 + n + NONCE]
    wrapped = blob[2 + n + NONCE : end]
    return blob[:end], key_id, wrap_nonce, wrapped, blob[end:]


@lru_cache(maxsize=4096)
def _unwrap(key: Key, label: bytes, wrapped: bytes) -> AESGCM:
    """The data key of a wrapped key (cached: a batch's rows share one data key)."""
    try:
        dek = key.aead.decrypt(wrapped[:NONCE], wrapped[NONCE:], label)
    except InvalidTag:
        raise DecryptionError("a wrapped data key failed authentication") from None
    return AESGCM(dek)


def _lexeme(key: Key, token: str) -> str:
    return hmac.new(key.lexeme_key, token.encode(), hashlib.sha256).digest()[:_LEXEME_BYTES].hex()


class Sealer:
    """Seals values under one data key (wrapped once) until it has sealed MAX_USES_PER_DATA_KEY values."""

    def __init__(self, keyring: Keyring) -> None:
        self._kek = keyring.primary
        self._uses = 0
        self._new_data_key()

    def _new_data_key(self) -> None:
        dek = AESGCM.generate_key(bit_length=256)
        kid = self._kek.key_id.encode("ascii")
        label = bytes([VERSION_AES_GCM, len(kid)]) + kid
        wrap_nonce = os.urandom(NONCE)
        self._header = label + wrap_nonce + self._kek.aead.encrypt(wrap_nonce, dek, label)
        self._aead = AESGCM(dek)
        self._uses = 0

    def seal(self, plaintext: str, aad: bytes) -> bytes:
        """The sealed bytes of one value, bound to `aad` (see `encryption.aad`)."""
        if self._uses >= MAX_USES_PER_DATA_KEY:
            self._new_data_key()
        self._uses += 1
        nonce = os.urandom(NONCE)
        return self._header + nonce + self._aead.encrypt(nonce, plaintext.encode("utf-8"), self._header + aad)

    def seal_optional(self, plaintext: str | None, aad: bytes) -> bytes | None:
        """`seal` for a nullable column (None stays NULL)."""
        return None if plaintext is None else self.seal(plaintext, aad)


def plain_legacy(text: str) -> bytes:
    """The version-0 form of a text (what migration 0010 made of rows stored before encryption)."""
    return bytes([VERSION_PLAIN]) + text.encode("utf-8")

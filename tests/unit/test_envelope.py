"""Envelope encryption: round trips, tampering, wrong rows, unknown keys, the keyring setting."""

from __future__ import annotations

import base64
import os
import uuid
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.infra.encryption import chunk_aad, context_aad, keyring_for, local_key_spec, message_aad
from app.infra.envelope import (
    VERSION_AES_GCM,
    DecryptionError,
    Keyring,
    KeyringError,
    UnknownKeyError,
    new_key_spec,
    plain_legacy,
    sealed_key_id,
)
from app.infra.settings import Settings

CODE = "def read(path):\n    with open(path) as f:\n        return f.read()  # ünïcödé ✓"


def ring(*ids: str) -> Keyring:
    return Keyring.parse(",".join(new_key_spec(i) for i in ids))


def test_round_trip_and_format() -> None:
    keys = ring("k1")
    row = uuid.uuid4()
    sealed = keys.seal(CODE, context_aad("prefix", row))
    assert sealed[0] == VERSION_AES_GCM and sealed_key_id(sealed) == "k1"
    assert CODE.encode() not in sealed and b"read" not in sealed
    assert keys.open(sealed, context_aad("prefix", row)) == CODE
    assert keys.open(memoryview(sealed), context_aad("prefix", row)) == CODE  # asyncpg/psycopg buffers
    assert keys.seal("", b"x") != keys.seal("", b"x")  # fresh nonces
    assert keys.open(keys.seal("", b"x"), b"x") == ""


def test_a_sealer_shares_its_data_key_across_a_batch() -> None:
    keys = ring("k1")
    sealer = keys.sealer()
    a, b = sealer.seal("one", b"a"), sealer.seal("two", b"b")
    header = 2 + 2 + 12 + 48
    assert a[:header] == b[:header]  # one wrapped key for the batch, its own nonce per value
    assert a[header : header + 12] != b[header : header + 12]
    assert keys.open(a, b"a") == "one" and keys.open(b, b"b") == "two"
    assert sealer.seal_optional(None, b"c") is None and keys.open_optional(None, b"c") is None


@pytest.mark.parametrize(
    "where", ["version", "key id", "wrap nonce", "wrapped key", "nonce", "ciphertext", "tag"]
)
def test_tampering_anywhere_is_an_error(where: str) -> None:
    keys = ring("k1")
    sealed = bytearray(keys.seal(CODE, b"row"))
    offset = {
        "version": 0,
        "key id": 2,
        "wrap nonce": 4,
        "wrapped key": 4 + 12 + 5,
        "nonce": 4 + 12 + 48 + 1,
        "ciphertext": 4 + 12 + 48 + 12 + 3,
        "tag": len(sealed) - 1,
    }[where]
    sealed[offset] ^= 0x01
    with pytest.raises(DecryptionError):
        keys.open(bytes(sealed), b"row")


def test_truncated_values_are_errors() -> None:
    keys = ring("k1")
    sealed = keys.seal(CODE, b"row")
    for cut in (0, 1, 3, 40, len(sealed) - 1):
        with pytest.raises(DecryptionError):
            keys.open(sealed[:cut], b"row")


def test_a_ciphertext_does_not_open_in_another_row_column_or_table() -> None:
    keys = ring("k1")
    row, other = uuid.uuid4(), uuid.uuid4()
    sealed = keys.seal(CODE, context_aad("prefix", row))
    for wrong in (context_aad("prefix", other), context_aad("suffix", row), message_aad(row)):
        with pytest.raises(DecryptionError):
            keys.open(sealed, wrong)
    project = uuid.uuid4()
    chunk = keys.seal(CODE, chunk_aad(project, 0, "a.py"))
    with pytest.raises(DecryptionError):
        keys.open(chunk, chunk_aad(project, 1, "a.py"))
    with pytest.raises(DecryptionError):
        keys.open(chunk, chunk_aad(project, 0, "b.py"))


def test_an_unknown_key_id_is_a_clear_error() -> None:
    sealed = ring("old").seal(CODE, b"row")
    with pytest.raises(UnknownKeyError, match=r"key 'old'.*not in ENCRYPTION_KEYS.*code4me rekey"):
        ring("new").open(sealed, b"row")


def test_the_same_id_with_another_key_fails_authentication() -> None:
    sealed = ring("k1").seal(CODE, b"row")
    with pytest.raises(DecryptionError):
        ring("k1").open(sealed, b"row")


def test_rotation_first_key_encrypts_all_keys_decrypt() -> None:
    old = ring("old")
    rotated = Keyring(ring("new").keys + old.keys)
    before = old.seal(CODE, b"row")
    after = rotated.seal(CODE, b"row")
    assert sealed_key_id(after) == "new"
    assert rotated.open(before, b"row") == CODE and rotated.open(after, b"row") == CODE
    assert rotated.lexeme_variants("read") == (rotated.lexeme("read"), old.lexeme("read"))


def test_legacy_plaintext_reads_as_is() -> None:
    assert ring("k1").open(plain_legacy(CODE), b"anything") == CODE
    assert sealed_key_id(plain_legacy(CODE)) is None


def test_lexemes_are_keyed_hashes() -> None:
    a, b = ring("a"), ring("b")
    assert a.lexeme("read_config") == a.lexeme("read_config")
    assert a.lexeme("read_config") != b.lexeme("read_config")
    assert "read" not in a.lexeme("read_config") and len(a.lexeme("x")) == 20


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "at least one key"),
        ("k1", "comma-separated list of id:base64key"),
        ("bad id:" + base64.b64encode(os.urandom(32)).decode(), "comma-separated"),
        ("k1:not-base64!!", "'k1' is not valid base64"),
        ("k1:" + base64.b64encode(os.urandom(16)).decode(), "'k1' must be 32 bytes"),
        (new_key_spec("k1") + "," + new_key_spec("k1"), "distinct"),
    ],
)
def test_malformed_keyrings_are_refused(spec: str, message: str) -> None:
    with pytest.raises(KeyringError, match=message):
        Keyring.parse(spec)


def test_settings_refuse_a_malformed_keyring_without_quoting_it() -> None:
    secret = base64.b64encode(os.urandom(16)).decode()
    with pytest.raises(ValidationError) as err:
        Settings(encryption_keys=f"k1:{secret}")
    assert secret not in str(err.value)


def test_production_refuses_a_missing_keyring() -> None:
    strong = "x" * 40
    with pytest.raises(ValidationError, match="ENCRYPTION_KEYS must be set"):
        Settings(environment="production", secret_key=strong)
    ok = Settings(environment="production", secret_key=strong, encryption_keys=new_key_spec("prod-1"))
    assert keyring_for(ok).key_ids == ("prod-1",)
    assert "prod-1:" not in repr(ok)  # the keys never show in a repr or a log line


def test_development_key_is_generated_once_under_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(environment="development").model_copy(update={"data_dir": tmp_path})
    first = keyring_for(settings)
    assert (tmp_path / "encryption.keys").stat().st_mode & 0o777 == 0o600
    assert local_key_spec(tmp_path) == (tmp_path / "encryption.keys").read_text().strip()
    again = Keyring.parse(local_key_spec(tmp_path))
    assert again.fingerprint == first.fingerprint
    assert again.open(first.seal(CODE, b"row"), b"row") == CODE


def test_a_writer_whose_keys_differ_from_the_ingress_refuses_to_start() -> None:
    from app.workers.telemetry_writer import TelemetryWriter

    ours, theirs = ring("k1"), ring("k1")
    with pytest.raises(RuntimeError, match="ENCRYPTION_KEYS differ"):
        TelemetryWriter(
            "redis://127.0.0.1:9/0",
            "postgresql://x@/y",
            "w",
            keyring=ours,
            keyring_fingerprint=theirs.fingerprint,
        )
    assert ours.fingerprint != theirs.fingerprint and ours.fingerprint == Keyring(ours.keys).fingerprint

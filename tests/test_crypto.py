"""crypto.py: key ids (SHA-256 / HMAC-SHA-256) and the sealed value envelope."""

from __future__ import annotations

import hashlib
import hmac
import os
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_decrypt
from nacl.exceptions import CryptoError

from dumbkv.crypto import ENVELOPE_V1, Crypto
from dumbkv.errors import IntegrityError, ServerError

SECRET = b"pepper-for-tests"
NONCE = 24
TAG = 16
HEADER = 1 + NONCE


@pytest.fixture(params=[None, SECRET], ids=["no-secret", "secret"])
def crypto(request: pytest.FixtureRequest) -> Crypto:
    return Crypto(request.param)


def sealed(crypto: Crypto, key: bytes, value: bytes, db: int = 0) -> tuple[bytes, bytes]:
    kid = crypto.key_id(key)
    return kid, crypto.seal(key, db, kid, value)


# --------------------------------------------------------------------------- key ids


@pytest.mark.parametrize("key", [b"", b"user:1", b"\x00\xff\r\n", b"k" * 10_000])
def test_key_id_without_secret_is_sha256(key: bytes) -> None:
    assert Crypto().key_id(key) == hashlib.sha256(key).digest()
    assert Crypto(None).key_id(key) == hashlib.sha256(key).digest()


@pytest.mark.parametrize("key", [b"", b"user:1", b"\x00\xff\r\n", b"k" * 10_000])
@pytest.mark.parametrize("secret", [SECRET, b"x", b"b" * 64, b"c" * 65, b"s" * 200])
def test_key_id_with_secret_is_hmac_sha256(key: bytes, secret: bytes) -> None:
    expected = hmac.new(secret, key, hashlib.sha256).digest()
    assert Crypto(secret).key_id(key) == expected
    assert expected != hashlib.sha256(key).digest()


def test_key_id_is_stable_and_32_bytes(crypto: Crypto) -> None:
    first = crypto.key_id(b"a")
    crypto.key_id(b"b")  # the HMAC state must not leak from one call into the next
    assert crypto.key_id(b"a") == first
    assert len(first) == 32
    assert isinstance(first, bytes)


def test_different_keys_and_secrets_give_different_ids() -> None:
    keys = [b"", b"a", b"b", b"ab", b"a\x00", b"user:1", b"user:2"]
    crypters = [Crypto(), Crypto(b"one"), Crypto(b"two")]
    ids = [c.key_id(k) for c in crypters for k in keys]
    assert len(set(ids)) == len(ids)


@settings(max_examples=200, deadline=None)
@given(a=st.binary(max_size=64), b=st.binary(max_size=64))
def test_distinct_keys_have_distinct_ids(a: bytes, b: bytes) -> None:
    for crypto in (Crypto(), Crypto(SECRET)):
        assert (crypto.key_id(a) == crypto.key_id(b)) == (a == b)


# --------------------------------------------------------------------------- envelope


@pytest.mark.parametrize(
    "value",
    [b"", b"v", b"\x00\xff\r\n" * 7, bytes(range(256)), b"\x5a" * (1024 * 1024)],
    ids=["empty", "one-byte", "binary", "all-bytes", "1MB"],
)
def test_seal_open_round_trip(crypto: Crypto, value: bytes) -> None:
    kid, blob = sealed(crypto, b"user:1", value, db=3)
    assert crypto.open(b"user:1", 3, kid, blob) == value


def test_envelope_layout(crypto: Crypto) -> None:
    value = b"hello world"
    _, blob = sealed(crypto, b"k", value)
    assert blob[0] == ENVELOPE_V1 == 1
    assert len(blob) == 1 + NONCE + len(value) + TAG


def test_a_fresh_nonce_per_seal(crypto: Crypto) -> None:
    kid = crypto.key_id(b"k")
    blobs = {crypto.seal(b"k", 0, kid, b"same value") for _ in range(20)}
    assert len(blobs) == 20
    nonces = {blob[1:HEADER] for blob in blobs}
    assert len(nonces) == 20
    for blob in blobs:
        assert crypto.open(b"k", 0, kid, blob) == b"same value"


def test_nonces_stay_unique_across_many_seals(crypto: Crypto) -> None:
    kid = crypto.key_id(b"k")
    count = 5000  # more than one batch of pre-drawn randomness, however it is pooled
    blobs = [crypto.seal(b"k", 0, kid, b"v") for _ in range(count)]
    assert {len(blob) for blob in blobs} == {HEADER + 1 + TAG}
    assert len({blob[1:HEADER] for blob in blobs}) == count
    assert crypto.open(b"k", 0, kid, blobs[-1]) == b"v"


def test_nonces_unique_across_threads(crypto: Crypto) -> None:
    kid = crypto.key_id(b"k")

    def work(_: int) -> list[bytes]:
        return [crypto.seal(b"k", 0, kid, b"v")[1:HEADER] for _ in range(2000)]

    with ThreadPoolExecutor(max_workers=4) as pool:
        nonces = [nonce for batch in pool.map(work, range(4)) for nonce in batch]
    assert len(nonces) == 8000
    assert len(set(nonces)) == 8000


def test_no_plaintext_in_envelope(crypto: Crypto) -> None:
    value = b"TOP-SECRET-VALUE-" * 8
    key = b"secret-key-name"
    kid, blob = sealed(crypto, key, value)
    assert b"TOP-SECRET" not in blob
    assert key not in blob
    assert kid not in blob  # the id is bound as associated data, not stored in the value


def test_value_key_is_not_derivable_from_the_id(crypto: Crypto) -> None:
    key = b"user:1"
    kid, blob = sealed(crypto, key, b"payload")
    # using the stored id as if it were the user's key does not open the row
    with pytest.raises(IntegrityError):
        crypto.open(kid, 0, kid, blob)
    # nor does using the id directly as the AEAD key
    aad = bytes((ENVELOPE_V1,)) + (0).to_bytes(4, "big") + kid
    with pytest.raises(CryptoError):
        crypto_aead_xchacha20poly1305_ietf_decrypt(blob[HEADER:], aad, blob[1:HEADER], kid)
    # nor the plain SHA-256 of the key (the id without a secret)
    with pytest.raises(CryptoError):
        crypto_aead_xchacha20poly1305_ietf_decrypt(
            blob[HEADER:], aad, blob[1:HEADER], hashlib.sha256(key).digest()
        )


def test_every_tampered_byte_is_detected(crypto: Crypto) -> None:
    kid, blob = sealed(crypto, b"k", b"some value")
    for i in range(len(blob)):
        for flip in (0x01, 0x80, 0xFF):
            tampered = bytearray(blob)
            tampered[i] ^= flip
            with pytest.raises(IntegrityError):
                crypto.open(b"k", 0, kid, bytes(tampered))


@pytest.mark.parametrize("cut", [0, 1, HEADER, HEADER + TAG - 1, -1])
def test_truncated_envelope_is_detected(crypto: Crypto, cut: int) -> None:
    kid, blob = sealed(crypto, b"k", b"some value")
    with pytest.raises(IntegrityError):
        crypto.open(b"k", 0, kid, blob[:cut])


def test_appended_bytes_are_detected(crypto: Crypto) -> None:
    kid, blob = sealed(crypto, b"k", b"some value")
    with pytest.raises(IntegrityError):
        crypto.open(b"k", 0, kid, blob + b"\x00")


@pytest.mark.parametrize("version", [0, 2, 255])
def test_wrong_version_byte(crypto: Crypto, version: int) -> None:
    kid, blob = sealed(crypto, b"k", b"v")
    with pytest.raises(IntegrityError):
        crypto.open(b"k", 0, kid, bytes((version,)) + blob[1:])


def test_other_db_is_detected(crypto: Crypto) -> None:
    kid, blob = sealed(crypto, b"k", b"v", db=0)
    for db in (1, 15, 256, 2**24):
        with pytest.raises(IntegrityError):
            crypto.open(b"k", db, kid, blob)
    assert crypto.open(b"k", 0, kid, blob) == b"v"


def test_swapped_rows_are_detected(crypto: Crypto) -> None:
    kid_a, blob_a = sealed(crypto, b"a", b"value of a")
    kid_b, blob_b = sealed(crypto, b"b", b"value of b")
    # row b's value copied under key a (and the reverse): an error, never the other's data
    with pytest.raises(IntegrityError):
        crypto.open(b"a", 0, kid_a, blob_b)
    with pytest.raises(IntegrityError):
        crypto.open(b"b", 0, kid_b, blob_a)
    # the right key material with the wrong row id
    with pytest.raises(IntegrityError):
        crypto.open(b"a", 0, kid_b, blob_a)
    # the right row id with another user key
    with pytest.raises(IntegrityError):
        crypto.open(b"b", 0, kid_a, blob_a)


def test_other_secret_cannot_open() -> None:
    one, two, none = Crypto(b"one"), Crypto(b"two"), Crypto()
    kid, blob = sealed(one, b"k", b"v")
    with pytest.raises(IntegrityError):
        two.open(b"k", 0, kid, blob)
    with pytest.raises(IntegrityError):
        none.open(b"k", 0, kid, blob)
    assert Crypto(b"one").open(b"k", 0, kid, blob) == b"v"


def test_integrity_error_is_a_server_error_without_data(crypto: Crypto) -> None:
    kid, blob = sealed(crypto, b"user:secret-name", b"secret-value")
    with pytest.raises(IntegrityError) as info:
        crypto.open(b"user:secret-name", 1, kid, blob)
    error = info.value
    assert isinstance(error, ServerError)
    assert error.status == "server_error"
    assert error.wire().startswith(b"-SERVERERR ")
    assert b"secret" not in error.wire()


@settings(max_examples=100, deadline=None)
@given(
    key=st.binary(max_size=40),
    value=st.binary(max_size=300),
    db=st.integers(0, 2**31 - 1),
    data=st.data(),
)
def test_round_trip_and_tamper_property(
    key: bytes, value: bytes, db: int, data: st.DataObject
) -> None:
    crypto = Crypto(SECRET)
    kid, blob = sealed(crypto, key, value, db)
    assert crypto.open(key, db, kid, blob) == value
    index = data.draw(st.integers(0, len(blob) - 1), label="index")
    flip = data.draw(st.integers(1, 255), label="flip")
    tampered = bytearray(blob)
    tampered[index] ^= flip
    with pytest.raises(IntegrityError):
        crypto.open(key, db, kid, bytes(tampered))


# --------------------------------------------------------------------------- stored format

# Envelopes written by an earlier build of this module: (secret, key, db, value, envelope hex).
VECTORS = [
    (
        None,
        b"user:1",
        7,
        b"hello \x00\xff world",
        "0199bf8743ec4d76ed74dcc61db18a74d3468977daa78f5874be6708994de5b5d83ed624ea64d02f414a52fb"
        "3b08d9049af4f6b57e91bc",
    ),
    (
        None,
        b"empty",
        0,
        b"",
        "01976216faa76787de1f4d83cf2d218f38cbdffee021974ba61fa5f61443b1f120a92807c2340b79bf",
    ),
    (
        SECRET,
        b"user:1",
        7,
        b"hello \x00\xff world",
        "01c98e328992f15d5a48ceebe96583d7f15a61cb5768a4ce9d2ba7e585c401dc4820e6cec049539c9ed1bc"
        "ec47c34d4fa108ec019dc4c9",
    ),
    (
        SECRET,
        b"empty",
        0,
        b"",
        "015b0bfa054f4fe37db9769bbea33a3bb7d8c2fd552536642234103ce89e16e497df23a2cfafd0e71f",
    ),
]


@pytest.mark.parametrize(("secret", "key", "db", "value", "envelope"), VECTORS)
def test_previously_written_envelopes_still_open(
    secret: bytes | None, key: bytes, db: int, value: bytes, envelope: str
) -> None:
    crypto = Crypto(secret)
    blob = bytes.fromhex(envelope)
    kid = crypto.key_id(key)
    assert crypto.open(key, db, kid, blob) == value
    # and each of them is still bound to its key, database and secret
    with pytest.raises(IntegrityError):
        crypto.open(key, db + 1, kid, blob)
    with pytest.raises(IntegrityError):
        crypto.open(key + b"x", db, crypto.key_id(key + b"x"), blob)
    with pytest.raises(IntegrityError):
        Crypto(b"another secret" if secret is None else None).open(key, db, kid, blob)


@pytest.mark.parametrize("db", [0, 5, 63, 64, 2**31 - 1])
@pytest.mark.parametrize("value", [b"", b"abc", bytes(range(256)) * 4])
@pytest.mark.parametrize("secret", [None, SECRET], ids=["no-secret", "secret"])
def test_envelope_is_the_documented_construction(
    secret: bytes | None, db: int, value: bytes
) -> None:
    """Decrypt with libsodium directly, deriving every input by the documented formulas."""
    crypto = Crypto(secret)
    salt = hashlib.sha256(b"dumbkv:value-key:" + secret).digest() if secret else b""
    key = b"user:42"
    kid, blob = sealed(crypto, key, value, db)
    value_key = hashlib.blake2b(key, digest_size=32, key=salt, person=b"dumbkv:value:v1").digest()
    aad = b"\x01" + db.to_bytes(4, "big") + kid
    assert blob[0] == 1
    assert (
        crypto_aead_xchacha20poly1305_ietf_decrypt(blob[HEADER:], aad, blob[1:HEADER], value_key)
        == value
    )


def test_ids_of_any_length_are_bound(crypto: Crypto) -> None:
    blob = crypto.seal(b"k", 0, b"short", b"v")
    assert crypto.open(b"k", 0, b"short", blob) == b"v"
    for other in (b"shorT", b"short\x00", b"shor", crypto.key_id(b"k")):
        with pytest.raises(IntegrityError):
            crypto.open(b"k", 0, other, blob)


def test_large_value_tamper_is_detected(crypto: Crypto) -> None:
    value = os.urandom(1024 * 1024)
    kid, blob = sealed(crypto, b"big", value)
    assert crypto.open(b"big", 0, kid, blob) == value
    for index in (HEADER, len(blob) // 2, len(blob) - 1):
        tampered = bytearray(blob)
        tampered[index] ^= 0x01
        with pytest.raises(IntegrityError):
            crypto.open(b"big", 0, kid, bytes(tampered))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_reuse_the_parents_nonces(crypto: Crypto) -> None:
    kid = crypto.key_id(b"k")
    crypto.seal(b"k", 0, kid, b"v")  # the parent now holds pre-drawn nonces
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report the nonces of its next seals, then leave at once
        try:
            os.close(read_end)
            nonces = b"".join(crypto.seal(b"k", 0, kid, b"v")[1:HEADER] for _ in range(8))
            os.write(write_end, nonces)
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        child = b""
        while chunk := os.read(read_end, 4096):
            child += chunk
    finally:
        os.close(read_end)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert len(child) == 8 * NONCE
    parent = [crypto.seal(b"k", 0, kid, b"v")[1:HEADER] for _ in range(8)]
    child_nonces = {child[i : i + NONCE] for i in range(0, len(child), NONCE)}
    assert len(child_nonces) == 8
    assert child_nonces.isdisjoint(parent)

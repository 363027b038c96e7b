"""Key hashing and the value envelope.

* A key is stored only as its id: ``SHA-256(key)``, or ``HMAC-SHA-256(secret, key)`` when the
  server has a secret (pepper). Ids are irreversible, so the server cannot list keys.
* A value is sealed with XChaCha20-Poly1305 under a key derived from the user's key by a
  different function (keyed BLAKE2b with its own personalisation), so knowing a stored id does
  not help to decrypt anything.
* The associated data binds the envelope version, the database number and the key id: a row
  copied to another key or database fails authentication instead of returning wrong data.

Envelope layout (version 1)::

    0x01 | nonce (24 random bytes) | ciphertext + 16-byte tag

Nonces are random (XChaCha's 192-bit space makes collisions negligible): one ``os.urandom``
call fills a list of 1024 nonces and each seal pops one. ``list.pop`` is atomic in CPython, so
two threads never get the same nonce and no lock is needed; this beats libsodium's
``randombytes`` (a ``getrandom`` syscall per call). A forked child drops the list it inherited.
"""

from __future__ import annotations

import hashlib
import os
import struct
import weakref

from nacl._sodium import ffi, lib  # libsodium through PyNaCl's own cffi binding

from .errors import IntegrityError

__all__ = ["ENVELOPE_V1", "Crypto"]

ENVELOPE_V1 = 1
_VERSION = bytes((ENVELOPE_V1,))
_NONCE = 24
_TAG = 16
_HEADER = 1 + _NONCE
_MIN_ENVELOPE = _HEADER + _TAG
_PERSON = b"dumbkv:value:v1"
_POOL_NONCES = 1024
_SPLIT_POOL = struct.Struct(f"{_NONCE}s" * _POOL_NONCES).unpack
_SHA256_BLOCK = 64
# Associated data: version | db (4 bytes, big-endian) | key id; common prefixes built once.
_AAD_PREFIXES = tuple(_VERSION + db.to_bytes(4, "big") for db in range(64))

_BYTES = ffi.typeof("unsigned char[]")
# Both AEAD calls overwrite every byte of their output on success, so skip the zero-fill.
_alloc = ffi.new_allocator(should_clear_after_alloc=False)
_buffer = ffi.buffer
_NULL = ffi.NULL
_encrypt = lib.crypto_aead_xchacha20poly1305_ietf_encrypt
_decrypt = lib.crypto_aead_xchacha20poly1305_ietf_decrypt

_instances: weakref.WeakSet[Crypto] = weakref.WeakSet()


def _forget_nonce_pools() -> None:
    """In a forked child, never reuse the parent's pre-drawn nonces."""
    for crypto in list(_instances):
        crypto._nonces = []


os.register_at_fork(after_in_child=_forget_nonce_pools)


def _hmac_sha256_states(secret: bytes) -> tuple[hashlib._Hash, hashlib._Hash]:
    """HMAC-SHA-256's inner and outer states after the padded secret (RFC 2104)."""
    if len(secret) > _SHA256_BLOCK:
        secret = hashlib.sha256(secret).digest()
    padded = secret.ljust(_SHA256_BLOCK, b"\x00")
    return (
        hashlib.sha256(bytes(b ^ 0x36 for b in padded)),
        hashlib.sha256(bytes(b ^ 0x5C for b in padded)),
    )


def _aad(db: int, kid: bytes) -> bytes:
    """The associated data for a value of key ``kid`` in database ``db``."""
    return (_AAD_PREFIXES[db] if 0 <= db < 64 else _VERSION + db.to_bytes(4, "big")) + kid


class Crypto:
    """Hashes keys and seals/opens values; its state is the optional secret and a nonce pool."""

    __slots__ = ("__weakref__", "_id_states", "_nonces", "_value_key_base")

    def __init__(self, secret: bytes | None = None) -> None:
        self._id_states = _hmac_sha256_states(secret) if secret else None
        # BLAKE2b keys are at most 64 bytes: fold any secret into 32. The keyed state is
        # copied per value key (same digest as keying BLAKE2b afresh, at half the cost).
        salt = hashlib.sha256(b"dumbkv:value-key:" + secret).digest() if secret else b""
        self._value_key_base = hashlib.blake2b(digest_size=32, key=salt, person=_PERSON)
        self._nonces: list[bytes] = []
        _instances.add(self)

    def _nonce(self) -> bytes:
        """A nonce from a fresh list, once the current one is empty. Threads racing here each
        pop from the list they made or from the one that won: every nonce is taken once."""
        nonces: list[bytes] = list(_SPLIT_POOL(os.urandom(_NONCE * _POOL_NONCES)))
        self._nonces = nonces
        return nonces.pop()

    def key_id(self, key: bytes) -> bytes:
        """The 32-byte id under which ``key`` is stored."""
        if self._id_states is None:
            return hashlib.sha256(key).digest()
        inner, outer = self._id_states
        inner = inner.copy()
        inner.update(key)
        outer = outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def seal(self, key: bytes, db: int, kid: bytes, value: bytes) -> bytes:
        """Encrypt ``value`` for storage under (``db``, ``kid``)."""
        try:
            nonce = self._nonces.pop()
        except IndexError:
            nonce = self._nonce()
        value_key = self._value_key_base.copy()
        value_key.update(key)
        length = len(value)
        size = length + _TAG
        aad = _aad(db, kid)
        out = _alloc(_BYTES, size)
        _encrypt(out, _NULL, value, length, aad, len(aad), _NULL, nonce, value_key.digest())
        return _VERSION + nonce + _buffer(out, size)  # type: ignore[no-any-return]

    def open(self, key: bytes, db: int, kid: bytes, blob: bytes) -> bytes:
        """Decrypt a stored envelope; raise ``IntegrityError`` if it is not authentic."""
        size = len(blob) - _MIN_ENVELOPE
        if size < 0 or blob[0] != ENVELOPE_V1:
            raise IntegrityError("stored value has an unknown envelope format")
        value_key = self._value_key_base.copy()
        value_key.update(key)
        aad = _aad(db, kid)
        out = _alloc(_BYTES, size or 1)
        sealed, nonce = blob[_HEADER:], blob[1:_HEADER]
        if _decrypt(
            out, _NULL, _NULL, sealed, size + _TAG, aad, len(aad), nonce, value_key.digest()
        ):
            raise IntegrityError("stored value failed authentication (tampered or swapped row)")
        return _buffer(out, size)[:]  # type: ignore[no-any-return]

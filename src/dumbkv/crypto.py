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
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading

from nacl._sodium import ffi, lib  # libsodium through PyNaCl's own cffi binding

from .errors import IntegrityError

__all__ = ["ENVELOPE_V1", "Crypto"]

ENVELOPE_V1 = 1
_NONCE = 24
_TAG = 16
_HEADER = 1 + _NONCE
_PERSON = b"dumbkv:value:v1"
_NONCE_POOL = _NONCE * 2048


def _xchacha_encrypt(message: bytes, aad: bytes, nonce: bytes, key: bytes) -> bytes:
    """XChaCha20-Poly1305 (IETF) encryption; the same call PyNaCl's binding makes, minus
    its per-call argument checks (our arguments are fixed-size by construction)."""
    size = len(message) + _TAG
    out = ffi.new("unsigned char[]", size)
    lib.crypto_aead_xchacha20poly1305_ietf_encrypt(
        out, ffi.NULL, message, len(message), aad, len(aad), ffi.NULL, nonce, key
    )
    return ffi.buffer(out, size)[:]  # type: ignore[no-any-return]


def _xchacha_decrypt(sealed: bytes, aad: bytes, nonce: bytes, key: bytes) -> bytes | None:
    """Decrypt and authenticate; None when the tag does not match."""
    size = len(sealed) - _TAG  # at least 0: the caller checked the envelope's length
    out = ffi.new("unsigned char[]", size or 1)
    failed = lib.crypto_aead_xchacha20poly1305_ietf_decrypt(
        out, ffi.NULL, ffi.NULL, sealed, len(sealed), aad, len(aad), nonce, key
    )
    return None if failed else ffi.buffer(out, size)[:]


class Crypto:
    """Hashes keys and seals/opens values; stateless apart from the optional secret."""

    __slots__ = ("_id_hmac", "_lock", "_nonce_pos", "_nonces", "_value_key_salt")

    def __init__(self, secret: bytes | None = None) -> None:
        self._id_hmac = hmac.new(secret, digestmod=hashlib.sha256) if secret else None
        # BLAKE2b keys are at most 64 bytes: fold any secret into 32.
        self._value_key_salt = hashlib.sha256(b"dumbkv:value-key:" + secret).digest() if (
            secret
        ) else b""
        self._nonces = b""
        self._nonce_pos = 0
        self._lock = threading.Lock()  # values are sealed on the loop and in store threads

    def _nonce(self) -> bytes:
        """24 fresh random bytes, drawn from the OS in bulk (one syscall per 2048 nonces)."""
        with self._lock:
            if self._nonce_pos >= len(self._nonces):
                self._nonces = os.urandom(_NONCE_POOL)
                self._nonce_pos = 0
            pos = self._nonce_pos
            self._nonce_pos = pos + _NONCE
            return self._nonces[pos : pos + _NONCE]

    def key_id(self, key: bytes) -> bytes:
        """The 32-byte id under which ``key`` is stored."""
        if self._id_hmac is None:
            return hashlib.sha256(key).digest()
        mac = self._id_hmac.copy()
        mac.update(key)
        return mac.digest()

    def _value_key(self, key: bytes) -> bytes:
        return hashlib.blake2b(
            key, digest_size=32, key=self._value_key_salt, person=_PERSON
        ).digest()

    @staticmethod
    def _aad(db: int, kid: bytes) -> bytes:
        return bytes((ENVELOPE_V1,)) + db.to_bytes(4, "big") + kid

    def seal(self, key: bytes, db: int, kid: bytes, value: bytes) -> bytes:
        """Encrypt ``value`` for storage under (``db``, ``kid``)."""
        nonce = self._nonce()
        sealed = _xchacha_encrypt(value, self._aad(db, kid), nonce, self._value_key(key))
        return b"\x01" + nonce + sealed

    def open(self, key: bytes, db: int, kid: bytes, blob: bytes) -> bytes:
        """Decrypt a stored envelope; raise ``IntegrityError`` if it is not authentic."""
        if len(blob) < _HEADER + _TAG or blob[0] != ENVELOPE_V1:
            raise IntegrityError("stored value has an unknown envelope format")
        plain = _xchacha_decrypt(
            blob[_HEADER:], self._aad(db, kid), blob[1:_HEADER], self._value_key(key)
        )
        if plain is None:
            raise IntegrityError("stored value failed authentication (tampered or swapped row)")
        return plain

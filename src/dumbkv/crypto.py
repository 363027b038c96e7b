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

from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
)
from nacl.exceptions import CryptoError

from .errors import IntegrityError

__all__ = ["ENVELOPE_V1", "Crypto"]

ENVELOPE_V1 = 1
_NONCE = 24
_HEADER = 1 + _NONCE
_PERSON = b"dumbkv:value:v1"


class Crypto:
    """Hashes keys and seals/opens values; stateless apart from the optional secret."""

    __slots__ = ("_id_hmac", "_value_key_salt")

    def __init__(self, secret: bytes | None = None) -> None:
        self._id_hmac = hmac.new(secret, digestmod=hashlib.sha256) if secret else None
        # BLAKE2b keys are at most 64 bytes: fold any secret into 32.
        self._value_key_salt = hashlib.sha256(b"dumbkv:value-key:" + secret).digest() if (
            secret
        ) else b""

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
        nonce = os.urandom(_NONCE)
        sealed = crypto_aead_xchacha20poly1305_ietf_encrypt(
            value, self._aad(db, kid), nonce, self._value_key(key)
        )
        return bytes((ENVELOPE_V1,)) + nonce + sealed

    def open(self, key: bytes, db: int, kid: bytes, blob: bytes) -> bytes:
        """Decrypt a stored envelope; raise ``IntegrityError`` if it is not authentic."""
        if len(blob) < _HEADER + 16 or blob[0] != ENVELOPE_V1:
            raise IntegrityError("stored value has an unknown envelope format")
        try:
            plain: bytes = crypto_aead_xchacha20poly1305_ietf_decrypt(
                blob[_HEADER:], self._aad(db, kid), blob[1:_HEADER], self._value_key(key)
            )
        except CryptoError:
            raise IntegrityError(
                "stored value failed authentication (tampered or swapped row)"
            ) from None
        return plain

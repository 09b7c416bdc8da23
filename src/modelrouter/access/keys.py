"""Client API key format and hashing.

A key is ``mr-`` followed by 40 URL-safe random characters (240 bits). The gateway stores only its SHA-256; the
first 12 characters (the *prefix*) are kept in clear so people can tell keys apart in lists and logs.

SHA-256, not a password hash, is right here: a key is a long random string, so there is nothing to guess and a
slow hash would only cost time on every request. Admin *passwords* are chosen by people and use argon2id
(see ``store``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

__all__ = [
    "HASH_PREFIX",
    "KEY_PREFIX",
    "PREFIX_LENGTH",
    "constant_time_equal",
    "hash_secret",
    "new_secret",
    "prefix_of",
]

KEY_PREFIX = "mr-"
PREFIX_LENGTH = 12  # "mr-" + 9 random characters: 54 bits, enough to tell keys apart, useless for guessing
HASH_PREFIX = "sha256:"  # how a hash is written in the config file (``auth.keys[].hash``)
_RANDOM_CHARS = 40


def new_secret(prefix: str = KEY_PREFIX) -> str:
    """A fresh random secret: ``prefix`` + 40 URL-safe characters."""
    # token_urlsafe(30) gives exactly 40 characters (30 bytes, base64 without padding).
    return prefix + secrets.token_urlsafe(_RANDOM_CHARS * 3 // 4)


def hash_secret(secret: str) -> str:
    """SHA-256 of the secret, lowercase hex (without the ``sha256:`` marker the config file uses)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def prefix_of(secret: str) -> str:
    """The part of a secret that may be shown: its first 12 characters."""
    return secret[:PREFIX_LENGTH]


def constant_time_equal(a: str, b: str) -> bool:
    """Compare secrets or hashes without leaking, through timing, how much of them matched."""
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))

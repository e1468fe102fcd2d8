"""Key material of secure aggregation: identities, round keys, seed derivation, share encryption.

Fixed choices (docs/protocol.md): identities are Ed25519; each round a gateway makes two X25519 key
pairs, one for pairwise masks and one for share encryption; every 32-byte seed is
BLAKE2b-256(key = X25519 shared secret, person = ``fedgate-secagg1``, message = purpose label ||
round id || lower participant id || higher participant id) so a seed is bound to its round, its pair
and its use. The neighbourhood graph of a round is derived from a seed the server commits to in the
signed round config, so every gateway can recompute its own neighbours.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
import struct
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TypeVar

import nacl.bindings as sodium
import nacl.exceptions
import nacl.signing
import nacl.utils

from native.errors import InputError, InputTypeError, IntegrityError

__all__ = [
    "KEY_BYTES",
    "ROUND_ID_BYTES",
    "SEALED_OVERHEAD",
    "Purpose",
    "RoundKeys",
    "caller_cpu_s",
    "constant_time_equal",
    "derive_seed",
    "load_or_create_identity",
    "map_chunked",
    "neighbourhood_graph",
    "open_shares",
    "pair_seed",
    "seal_shares",
    "wipe",
    "x25519_public",
    "x25519_shared",
]

_T = TypeVar("_T")
_R = TypeVar("_R")

KEY_BYTES = 32
ROUND_ID_BYTES = 16
_PERSON = b"fedgate-secagg1\x00"
_NONCE_BYTES = sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
SEALED_OVERHEAD = _NONCE_BYTES + sodium.crypto_aead_xchacha20poly1305_ietf_ABYTES
_AAD_LABEL = b"fedgate-shares-v1"


class Purpose(Enum):
    """What a derived seed is for; the label enters the hash, so seeds never cross purposes."""

    PAIRWISE_MASK = b"pairwise-mask"
    SHARE_ENCRYPTION = b"share-encryption"


def _check_bytes(name: str, value: object, size: int) -> bytes:
    if not isinstance(value, bytes | bytearray):
        raise InputTypeError(f"{name} must be bytes, got {type(value).__name__}")
    if len(value) != size:
        raise InputError(f"{name} must be {size} bytes, got {len(value)}")
    return bytes(value)


def _check_pid(pid: object) -> int:
    if not isinstance(pid, int) or isinstance(pid, bool):
        raise InputTypeError("participant ids must be ints")
    if not 1 <= pid < 1 << 32:
        raise InputError(f"participant id {pid} outside 1 .. 2^32 - 1")
    return pid


def constant_time_equal(a: bytes, b: bytes) -> bool:
    """Compare two secrets (or values derived from them) without a data-dependent early exit."""
    return hmac.compare_digest(a, b)


def wipe(buffer: bytearray) -> None:
    """Overwrite key material in place (best effort: Python may hold other copies)."""
    for i in range(len(buffer)):
        buffer[i] = 0


def x25519_public(secret: bytes | bytearray) -> bytes:
    """The X25519 public key of a 32-byte private key."""
    return sodium.crypto_scalarmult_base(_check_bytes("private key", secret, KEY_BYTES))


def x25519_shared(secret: bytes | bytearray, public: bytes) -> bytes:
    """Raw X25519 shared secret; refuses low-order public keys (all-zero result)."""
    try:
        shared = sodium.crypto_scalarmult(
            _check_bytes("private key", secret, KEY_BYTES), _check_bytes("public key", public, 32)
        )
    except nacl.exceptions.RuntimeError as exc:
        raise IntegrityError("X25519 with a low-order public key") from exc
    if constant_time_equal(shared, bytes(KEY_BYTES)):
        raise IntegrityError("X25519 with a low-order public key")
    return shared


def derive_seed(shared: bytes, round_id: bytes, a: int, b: int, purpose: Purpose) -> bytes:
    """32-byte seed bound to the round, the pair {a, b} (written low, high) and the purpose."""
    _check_bytes("shared secret", shared, KEY_BYTES)
    _check_bytes("round id", round_id, ROUND_ID_BYTES)
    lo, hi = sorted((_check_pid(a), _check_pid(b)))
    if lo == hi:
        raise InputError("a seed needs two distinct participants")
    message = purpose.value + round_id + struct.pack("<II", lo, hi)
    return hashlib.blake2b(message, digest_size=32, key=shared, person=_PERSON).digest()


def pair_seed(
    secret: bytes | bytearray, peer_public: bytes, round_id: bytes, a: int, b: int, purpose: Purpose
) -> bytes:
    """X25519 then :func:`derive_seed`: the seed both ends of a pair compute alike."""
    return derive_seed(x25519_shared(secret, peer_public), round_id, a, b, purpose)


def _aad(round_id: bytes, src: int, dst: int) -> bytes:
    return _AAD_LABEL + round_id + struct.pack("<II", src, dst)


def seal_shares(key: bytes, round_id: bytes, src: int, dst: int, plaintext: bytes) -> bytes:
    """XChaCha20-Poly1305 with a random nonce; round, sender and recipient are authenticated."""
    nonce = nacl.utils.random(_NONCE_BYTES)
    body = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
        plaintext, _aad(round_id, src, dst), nonce, _check_bytes("key", key, KEY_BYTES)
    )
    return nonce + body


def open_shares(key: bytes, round_id: bytes, src: int, dst: int, sealed: bytes) -> bytes:
    """Inverse of :func:`seal_shares`; any tampering or misaddressing is an IntegrityError."""
    if len(sealed) < SEALED_OVERHEAD:
        raise IntegrityError("sealed shares too short")
    try:
        return sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
            sealed[_NONCE_BYTES:], _aad(round_id, src, dst), sealed[:_NONCE_BYTES], key
        )
    except nacl.exceptions.CryptoError as exc:
        raise IntegrityError(f"shares from {src} to {dst} do not authenticate") from exc


@dataclass
class RoundKeys:
    """The two X25519 key pairs of one gateway for one round; wipe() when the round ends."""

    mask_secret: bytearray
    enc_secret: bytearray
    mask_public: bytes = field(init=False)
    enc_public: bytes = field(init=False)

    def __post_init__(self) -> None:
        self.mask_public = x25519_public(self.mask_secret)
        self.enc_public = x25519_public(self.enc_secret)

    @classmethod
    def generate(cls) -> RoundKeys:
        """Fresh keys from the OS CSPRNG."""
        return cls(bytearray(os.urandom(KEY_BYTES)), bytearray(os.urandom(KEY_BYTES)))

    def wipe(self) -> None:
        """Zero both private keys."""
        wipe(self.mask_secret)
        wipe(self.enc_secret)


_POOL: ThreadPoolExecutor | None = None
_PARALLEL_MIN = 16
# CPU seconds that map_chunked spent on the pool for each calling thread: without it a caller's
# thread_time() would miss the parallel part of its own work.
_POOL_CPU = threading.local()


def caller_cpu_s() -> float:
    """CPU seconds of the calling thread, plus what ``map_chunked`` ran for it on the pool."""
    return time.thread_time() + float(getattr(_POOL_CPU, "seconds", 0.0))


def map_chunked(fn: Callable[[_T], _R], items: Sequence[_T]) -> list[_R]:
    """``[fn(x) for x in items]``, split into one chunk per core on a small shared thread pool.

    PyNaCl's calls into libsodium release the GIL, so per-neighbour key agreement, signature checks
    and sealing scale with cores; chunks (not single items) keep the dispatch cost negligible.
    Exceptions propagate; order is kept.
    """
    global _POOL
    workers = min(4, os.cpu_count() or 1)
    if workers < 2 or len(items) < _PARALLEL_MIN:
        return [fn(x) for x in items]
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fedgate-crypto")
    size = -(-len(items) // workers)
    chunks = [items[i : i + size] for i in range(0, len(items), size)]

    def run(chunk: Sequence[_T]) -> tuple[list[_R], float]:
        started = time.thread_time()
        return [fn(x) for x in chunk], time.thread_time() - started

    parts = list(_POOL.map(run, chunks))
    _POOL_CPU.seconds = getattr(_POOL_CPU, "seconds", 0.0) + sum(cpu for _, cpu in parts)
    return [y for part, _ in parts for y in part]


def load_or_create_identity(path: Path) -> nacl.signing.SigningKey:
    """The gateway's Ed25519 identity: a 32-byte seed file, made with mode 0600 on first start."""
    path = Path(path)
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise IntegrityError(f"identity file {path} is readable by others (mode {mode:o})")
        seed = path.read_bytes()
        if len(seed) != 32:
            raise IntegrityError(f"identity file {path} holds {len(seed)} bytes, expected 32")
        return nacl.signing.SigningKey(seed)
    key = nacl.signing.SigningKey.generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(bytes(key))
    return key


def _permutation(seed: bytes, n: int) -> list[int]:
    """Fisher-Yates over the ChaCha20 keystream of ``seed`` (uint32 words, rejection-sampled)."""
    words_needed = 2 * n + 64
    stream = sodium.randombytes_buf_deterministic(4 * words_needed, seed)
    order = list(range(n))
    pos = 0
    for i in range(n - 1, 0, -1):
        bound = i + 1
        limit = (1 << 32) - ((1 << 32) % bound)
        while True:
            if pos == words_needed:
                words_needed *= 2
                stream = sodium.randombytes_buf_deterministic(4 * words_needed, seed)
            (word,) = struct.unpack_from("<I", stream, 4 * pos)
            pos += 1
            if word < limit:
                break
        j = word % bound
        order[i], order[j] = order[j], order[i]
    return order


def neighbourhood_graph(seed: bytes, pids: Sequence[int], degree: int) -> dict[int, frozenset[int]]:
    """Each participant's neighbours: complete if degree == n - 1, else a Harary graph H(degree, n).

    The ids are sorted, shuffled by a keystream permutation of the committed seed, and placed on a
    ring; each one is joined to the degree/2 nearest on either side (Bell et al. 2020, SecAgg+).
    """
    _check_bytes("graph seed", seed, KEY_BYTES)
    ordered = sorted(_check_pid(p) for p in pids)
    n = len(ordered)
    if len(set(ordered)) != n:
        raise InputError("participant ids must be distinct")
    if degree == n - 1:
        everyone = frozenset(ordered)
        return {p: everyone - {p} for p in ordered}
    if degree < 2 or degree % 2 or degree >= n - 1:
        raise InputError(f"degree must be n - 1 or even in 2 .. n - 2, got {degree} for n = {n}")
    ring = [ordered[i] for i in _permutation(seed, n)]
    half = degree // 2
    return {
        ring[i]: frozenset(ring[(i + off) % n] for off in range(-half, half + 1) if off)
        for i in range(n)
    }

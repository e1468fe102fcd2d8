"""Identities, seeds bound to round/pair/purpose, share encryption, neighbourhood graphs."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import nacl.bindings
import pytest

from native import keys
from native.errors import InputError, InputTypeError, IntegrityError

RID = bytes(range(16))


def test_x25519_rfc7748_vector() -> None:
    alice = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    bob_pub = bytes.fromhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
    shared = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
    assert keys.x25519_public(alice).hex() == (
        "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
    )
    assert keys.x25519_shared(alice, bob_pub).hex() == shared


def test_low_order_public_key_refused() -> None:
    with pytest.raises(IntegrityError):
        keys.x25519_shared(os.urandom(32), bytes(32))


def test_derive_seed_matches_independent_blake2b() -> None:
    shared = bytes(range(32))
    want = hashlib.blake2b(
        b"pairwise-mask" + RID + (3).to_bytes(4, "little") + (9).to_bytes(4, "little"),
        digest_size=32,
        key=shared,
        person=b"fedgate-secagg1\x00",
    ).digest()
    assert keys.derive_seed(shared, RID, 9, 3, keys.Purpose.PAIRWISE_MASK) == want


def test_seed_binding() -> None:
    shared = os.urandom(32)
    base = keys.derive_seed(shared, RID, 1, 2, keys.Purpose.PAIRWISE_MASK)
    assert base == keys.derive_seed(shared, RID, 2, 1, keys.Purpose.PAIRWISE_MASK)
    others = {
        keys.derive_seed(shared, bytes(16), 1, 2, keys.Purpose.PAIRWISE_MASK),
        keys.derive_seed(shared, RID, 1, 3, keys.Purpose.PAIRWISE_MASK),
        keys.derive_seed(shared, RID, 1, 2, keys.Purpose.SHARE_ENCRYPTION),
        keys.derive_seed(os.urandom(32), RID, 1, 2, keys.Purpose.PAIRWISE_MASK),
    }
    assert base not in others and len(others) == 4


def test_pair_seed_agrees_on_both_ends() -> None:
    a, b = keys.RoundKeys.generate(), keys.RoundKeys.generate()
    s_ab = keys.pair_seed(a.mask_secret, b.mask_public, RID, 4, 7, keys.Purpose.PAIRWISE_MASK)
    s_ba = keys.pair_seed(b.mask_secret, a.mask_public, RID, 7, 4, keys.Purpose.PAIRWISE_MASK)
    assert keys.constant_time_equal(s_ab, s_ba)


@pytest.mark.parametrize(
    ("args", "err"),
    [
        ((bytes(31), RID, 1, 2), InputError),
        ((bytes(32), RID[:15], 1, 2), InputError),
        ((bytes(32), RID, 1, 1), InputError),
        ((bytes(32), RID, 0, 1), InputError),
        ((bytes(32), RID, 1, 2**32), InputError),
        ((bytes(32), RID, "1", 2), InputTypeError),
        (("x" * 32, RID, 1, 2), InputTypeError),
    ],
)
def test_derive_seed_rejects_garbage(args: tuple, err: type) -> None:
    with pytest.raises(err):
        keys.derive_seed(*args, keys.Purpose.PAIRWISE_MASK)


def test_sealed_shares_authenticate_round_and_addresses() -> None:
    key = os.urandom(32)
    sealed = keys.seal_shares(key, RID, 1, 2, b"s" * 80)
    assert len(sealed) == 80 + keys.SEALED_OVERHEAD
    assert keys.open_shares(key, RID, 1, 2, sealed) == b"s" * 80
    for rid, src, dst in [(bytes(16), 1, 2), (RID, 2, 1), (RID, 1, 3)]:
        with pytest.raises(IntegrityError):
            keys.open_shares(key, rid, src, dst, sealed)
    flipped = bytearray(sealed)
    flipped[30] ^= 1
    with pytest.raises(IntegrityError):
        keys.open_shares(key, RID, 1, 2, bytes(flipped))
    with pytest.raises(IntegrityError):
        keys.open_shares(key, RID, 1, 2, b"short")


def test_round_keys_wipe() -> None:
    rk = keys.RoundKeys.generate()
    assert nacl.bindings.crypto_scalarmult_base(bytes(rk.mask_secret)) == rk.mask_public
    rk.wipe()
    assert rk.mask_secret == bytearray(32) and rk.enc_secret == bytearray(32)


def test_identity_file_created_0600_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "id.key"
    key = keys.load_or_create_identity(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert bytes(keys.load_or_create_identity(path)) == bytes(key)
    path.chmod(0o644)
    with pytest.raises(IntegrityError):
        keys.load_or_create_identity(path)
    path.chmod(0o600)
    path.write_bytes(b"short")
    with pytest.raises(IntegrityError):
        keys.load_or_create_identity(path)


@pytest.mark.parametrize(("n", "k"), [(100, 10), (11, 4), (5, 2), (30, 28), (7, 6)])
def test_graph_regular_symmetric_deterministic(n: int, k: int) -> None:
    seed = os.urandom(32)
    pids = list(range(10, 10 + n))
    g = keys.neighbourhood_graph(seed, pids, k)
    assert set(g) == set(pids)
    assert all(len(v) == k and u not in v for u, v in g.items())
    assert all(u in g[v] for u in g for v in g[u])
    assert g == keys.neighbourhood_graph(seed, list(reversed(pids)), k)


def test_graph_depends_on_seed() -> None:
    pids = list(range(1, 60))
    assert keys.neighbourhood_graph(bytes(32), pids, 6) != keys.neighbourhood_graph(
        b"\x01" * 32, pids, 6
    )


@pytest.mark.parametrize(
    ("pids", "k"),
    [([1, 2, 3, 4, 5], 3), ([1, 2, 3, 4, 5], 0), ([1, 1, 2], 2), ([1, 2, 3, 4, 5, 6], 6)],
)
def test_graph_rejects_bad_degree(pids: list[int], k: int) -> None:
    with pytest.raises(InputError):
        keys.neighbourhood_graph(bytes(32), pids, k)


@pytest.mark.parametrize("n", [0, 3, 16, 101])
def test_map_chunked_keeps_order(n: int) -> None:
    items = list(range(n))
    assert keys.map_chunked(lambda x: x * x, items) == [x * x for x in items]


def test_map_chunked_propagates_errors() -> None:
    def boom(x: int) -> int:
        if x == 57:
            raise IntegrityError("bad entry")
        return x

    with pytest.raises(IntegrityError, match="bad entry"):
        keys.map_chunked(boom, list(range(100)))

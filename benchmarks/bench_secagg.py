"""Secure aggregation against Flower's SecAgg+ (flwr 1.40.0), side by side in one run.

Run from the repo root: ``python benchmarks/bench_secagg.py [--quick]``. The last line of output is
one JSON object (docs/benchmarks.md, "Secure aggregation").

Cases, each with the same n, d, neighbourhood size and dropouts on both sides:
- server: 100 gateways x d = 1e5, 10 neighbours (Flower: 11 shares incl. the node itself),
  threshold 6, 10 gateways drop after sharing keys so their masked inputs never arrive. Timed: from
  the bytes of the 90 masked inputs to the unmasked sum (``receive_many`` of the masked inputs:
  decode, signature checks, sum; the unmask request; ``receive_many`` of the 90 unmask answers;
  Shamir recovery, mask removal). Flower's path is the code of
  ``SecAggPlusWorkflow.collect_masked_vectors_stage`` (sum of the masked vectors) and
  ``unmask_stage`` (combine_shares, pseudo_rand_gen, key agreement, dequantize), run with its own
  functions on the replies of its own client mod; only the Grid messaging is left out.
- gateway share keys: n = 100, complete graph, t = 51: ours ``SecAggGateway.handle(KEY_LIST)``,
  Flower's ``_share_keys``.
- gateway masked input: d = 1e5, 10 neighbours: ours ``handle(SHARES_RELAY)`` with the update
  already provided (decrypt shares, quantize, masks, pack, sign), Flower's
  ``_collect_masked_vectors`` (decrypt shares, quantize, masks).
Contenders alternate within each repetition; figures are medians.
"""

# ruff: noqa: E402  (the thread caps below must precede the numpy import)
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import json
import logging
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nacl.signing
import numpy as np

# The installed fedgate, never the checkout's source folders (they lack the built modules).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info

from aggregator.secagg import Outbound, SecAggServer
from edge_client.secagg import SecAggGateway
from native import shamir, wire

logging.getLogger("aggregator.secagg").setLevel(logging.ERROR)
logging.getLogger("edge_client.secagg").setLevel(logging.ERROR)

CLIP = 1.0
QBITS = 8


# ---------------------------------------------------------------- fedgate in memory -----------


@dataclass
class Fleet:
    server: SecAggServer
    gateways: dict[int, SecAggGateway]
    inbox: dict[int, list[bytes]] = field(default_factory=dict)


def make_fleet(n: int) -> Fleet:
    skey = nacl.signing.SigningKey.generate()
    ids = {p: nacl.signing.SigningKey.generate() for p in range(1, n + 1)}
    server = SecAggServer(skey, {p: bytes(k.verify_key) for p, k in ids.items()})
    return Fleet(server, {p: SecAggGateway(p, k, bytes(skey.verify_key)) for p, k in ids.items()})


def deliver(fleet: Fleet, outs: list[Outbound], skip: set[int] = frozenset()) -> list[bytes]:  # type: ignore[assignment]
    replies = []
    for out in outs:
        for pid in [out.recipient] if out.recipient is not None else list(fleet.gateways):
            if pid not in skip:
                replies += fleet.gateways[pid].handle(out.payload)
    return replies


def ours_server_round(n: int, d: int, k: int, t: int, drop: set[int], bits: int) -> dict[str, Any]:
    """One round up to the masked inputs (untimed), then the timed server path."""
    fleet = make_fleet(n)
    rng = np.random.default_rng(1)
    ring = None if bits == QBITS else 24
    cfg = fleet.server.open_round(
        list(fleet.gateways),
        vector_len=d,
        degree=k,
        threshold=t,
        quant_bits=bits,
        ring_bits=ring,
        clip=CLIP,
    )
    for r in deliver(fleet, [cfg]):
        fleet.server.receive(r)
    updates = {pid: rng.uniform(-1, 1, d).astype(np.float32) for pid in fleet.gateways}
    for pid, gw in fleet.gateways.items():
        gw.provide_update(updates[pid])
    for r in deliver(fleet, fleet.server.close_stage()):
        fleet.server.receive(r)
    masked = deliver(fleet, fleet.server.close_stage(), skip=drop)
    t0 = time.perf_counter()
    assert all(isinstance(x, int) for x in fleet.server.receive_many(masked))
    request = fleet.server.close_stage()
    t1 = time.perf_counter()
    answers = deliver(fleet, request, skip=drop)
    t2 = time.perf_counter()
    assert all(isinstance(x, int) for x in fleet.server.receive_many(answers))
    fleet.server.close_stage()
    t3 = time.perf_counter()
    result = fleet.server.state.result
    assert result is not None, fleet.server.state.abort_reason
    # Sanity (untimed): the unmasked sum is the mean of the inputs that arrived.
    want = np.mean([updates[p] for p in result.included], axis=0)
    assert float(np.max(np.abs(result.weighted_mean() - want))) < 0.05
    return {
        "seconds": (t1 - t0) + (t3 - t2),
        "masked_bytes": len(masked[0]),
        "unmask_bytes": statistics.median(len(a) for a in answers),
    }


def ours_gateway_share_keys(n: int, t: int) -> dict[str, Any]:
    fleet = make_fleet(n)
    cfg = fleet.server.open_round(list(fleet.gateways), vector_len=10, threshold=t)
    for r in deliver(fleet, [cfg]):
        fleet.server.receive(r)
    (key_list,) = fleet.server.close_stage()
    gw = fleet.gateways[1]
    t0 = time.perf_counter()
    (shares,) = gw.handle(key_list.payload)
    seconds = time.perf_counter() - t0
    advertise = wire.encode(wire.AdvertiseKeys(bytes(32), bytes(32)), bytes(16), 1, gw.identity)
    return {
        "seconds": seconds,
        "share_bytes": len(shares),
        "advertise_bytes": len(advertise),
        "key_list_bytes": len(key_list.payload),
    }


def ours_gateway_masked(n: int, d: int, k: int, t: int) -> dict[str, Any]:
    fleet = make_fleet(n)
    cfg = fleet.server.open_round(
        list(fleet.gateways), vector_len=d, degree=k, threshold=t, quant_bits=QBITS, clip=CLIP
    )
    advertise = fleet.gateways[1].handle(cfg.payload)
    for r in advertise + deliver(fleet, [cfg], skip={1}):
        fleet.server.receive(r)
    (key_list,) = fleet.server.close_stage()
    shares = fleet.gateways[1].handle(key_list.payload)
    for r in shares + deliver(fleet, [key_list], skip={1}):
        fleet.server.receive(r)
    relays = {o.recipient: o.payload for o in fleet.server.close_stage()}
    gw = fleet.gateways[1]
    gw.provide_update(np.random.default_rng(2).uniform(-1, 1, d).astype(np.float32))
    t0 = time.perf_counter()
    (masked,) = gw.handle(relays[1])
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "advertise_bytes": len(advertise[0]),
        "share_keys_bytes": len(shares[0]),
        "masked_bytes": len(masked),
        "masked_bytes_per_param": len(masked) / d,
    }


# ---------------------------------------------------------------- Flower SecAgg+ --------------


def flower_available() -> bool:
    try:
        import flwr  # noqa: F401
    except ImportError:
        return False
    return True


def _flower_mod() -> Any:
    # The package re-exports a function under the module's own name, so import the module by path.
    import importlib

    return importlib.import_module("flwr.client.mod.secure_aggregation.secaggplus_mod")


def _flower_clients(n: int, shares: int, t: int) -> tuple[dict[int, Any], dict[int, set[int]]]:
    """Flower client states after setup, and the server's neighbour sets (as setup_stage does)."""
    fm = _flower_mod()
    from flwr.common.secure_aggregation.secaggplus_constants import Key

    nids = list(range(1, n + 1))
    half = shares >> 1
    neighbours = {
        nid: {nids[(i + off) % n] for off in range(-half, half + 1)} for i, nid in enumerate(nids)
    }
    cfg = {
        Key.SAMPLE_NUMBER: n,
        Key.SHARE_NUMBER: shares,
        Key.THRESHOLD: t,
        Key.CLIPPING_RANGE: CLIP,
        Key.TARGET_RANGE: (1 << QBITS) - 1,
        Key.MOD_RANGE: 1 << 32,
        Key.MAX_WEIGHT: 1.0,
    }
    states = {}
    for nid in nids:
        st = fm.SecAggPlusState(nid=nid)
        fm._setup(st, dict(cfg))
        states[nid] = st
    return states, neighbours


def _flower_share(states: dict[int, Any], neighbours: dict[int, set[int]], nid: int) -> Any:
    fm = _flower_mod()

    keys = {str(v): (states[v].pk1, states[v].pk2) for v in sorted(neighbours[nid])}
    return fm._share_keys(states[nid], keys)


def flower_gateway_share_keys(n: int, t: int) -> dict[str, Any]:
    states, neighbours = _flower_clients(n, n, t)
    t0 = time.perf_counter()
    res = _flower_share(states, neighbours, 1)
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "share_bytes": sum(len(c) + 8 for c in res["ctxts"]),
        "advertise_bytes": len(states[1].pk1) + len(states[1].pk2),
    }


def _flower_forward(
    states: dict[int, Any], neighbours: dict[int, set[int]], alive: set[int]
) -> dict[int, dict[str, Any]]:
    from flwr.common.secure_aggregation.secaggplus_constants import Key

    fwd: dict[int, dict[str, Any]] = {
        nid: {Key.CIPHERTEXT_LIST: [], Key.SOURCE_LIST: []} for nid in states
    }
    for src in states:
        res = _flower_share(states, neighbours, src)
        for dst, ct in zip(res[Key.DESTINATION_LIST], res[Key.CIPHERTEXT_LIST], strict=True):
            if dst in alive:
                fwd[dst][Key.CIPHERTEXT_LIST].append(ct)
                fwd[dst][Key.SOURCE_LIST].append(src)
    return fwd


def _flower_masked(
    states: dict[int, Any], fwd: dict[int, dict[str, Any]], nid: int, update: np.ndarray
) -> Any:
    fm = _flower_mod()
    from flwr.common import ndarrays_to_parameters

    return fm._collect_masked_vectors(states[nid], fwd[nid], 1, ndarrays_to_parameters([update]))


def flower_gateway_masked(n: int, d: int, k: int, t: int) -> dict[str, Any]:
    states, neighbours = _flower_clients(n, k + 1, t)
    fwd = _flower_forward(states, neighbours, set(states))
    update = np.random.default_rng(2).uniform(-1, 1, d).astype(np.float32)
    t0 = time.perf_counter()
    res = _flower_masked(states, fwd, 1, update)
    seconds = time.perf_counter() - t0
    shares = _flower_share(states, neighbours, 1)
    masked = sum(len(b) for b in res["masked_params"])
    # Payload bytes only (keys, node ids, ciphertexts, arrays); Flower's framing comes on top.
    return {
        "seconds": seconds,
        "advertise_bytes": len(states[1].pk1) + len(states[1].pk2),
        "share_keys_bytes": sum(len(c) + 8 for c in shares["ctxts"]),
        "masked_bytes": masked,
        "masked_bytes_per_param": masked / d,
    }


def _flower_sum_masked(replies: dict[int, Any], mod: int) -> Any:
    """collect_masked_vectors_stage: decode and sum the masked vectors."""
    from flwr.common import bytes_to_ndarray
    from flwr.common.secure_aggregation.ndarrays_arithmetic import (
        parameters_addition,
        parameters_mod,
    )

    masked_vector = None
    for res in replies.values():
        vec = [bytes_to_ndarray(b) for b in res["masked_params"]]
        masked_vector = vec if masked_vector is None else parameters_addition(masked_vector, vec)
    return parameters_mod(masked_vector, mod)


def _flower_unmask(
    masked_vector: Any,
    answers: dict[int, Any],
    states: dict[int, Any],
    neighbours: dict[int, set[int]],
    active: set[int],
    mod: int,
) -> Any:
    """unmask_stage: combine shares, remove self and pair masks, dequantize."""
    from flwr.common.secure_aggregation.crypto.shamir import combine_shares
    from flwr.common.secure_aggregation.crypto.symmetric_encryption import generate_shared_key
    from flwr.common.secure_aggregation.ndarrays_arithmetic import (
        factor_extract,
        get_parameters_shape,
        parameters_addition,
        parameters_mod,
        parameters_subtraction,
    )
    from flwr.common.secure_aggregation.quantization import dequantize
    from flwr.supercore.primitives.asymmetric import bytes_to_private_key, bytes_to_public_key

    collected: dict[int, list[bytes]] = {nid: [] for nid in states}
    for res in answers.values():
        for owner, share in zip(res["nids"], res["shares"], strict=True):
            collected[owner].append(share)
    shape = get_parameters_shape(masked_vector)
    for nid, share_list in collected.items():
        secret = combine_shares(share_list)
        if nid in active:
            mask = pseudo_rand_gen_flower(secret, mod, shape)
            masked_vector = parameters_subtraction(masked_vector, mask)
            continue
        for other in neighbours[nid] - {nid}:
            shared = generate_shared_key(
                bytes_to_private_key(secret), bytes_to_public_key(states[other].pk1)
            )
            mask = pseudo_rand_gen_flower(shared, mod, shape)
            add = nid > other
            masked_vector = (parameters_addition if add else parameters_subtraction)(
                masked_vector, mask
            )
    q_total, recon = factor_extract(parameters_mod(masked_vector, mod))
    target = (1 << QBITS) - 1
    out = dequantize(recon, CLIP, target)
    for vec in out:
        vec += -(len(active) - 1) * CLIP
        vec *= target / q_total
    return out


def pseudo_rand_gen_flower(seed: bytes, mod: int, shape: Any) -> Any:
    from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen

    return pseudo_rand_gen(seed, mod, shape)


def flower_server_round(n: int, d: int, k: int, t: int, drop: set[int]) -> dict[str, Any]:
    fm = _flower_mod()
    states, neighbours = _flower_clients(n, k + 1, t)
    fwd = _flower_forward(states, neighbours, set(states))
    rng = np.random.default_rng(1)
    alive = [nid for nid in states if nid not in drop]
    updates = {nid: rng.uniform(-1, 1, d).astype(np.float32) for nid in alive}
    replies = {nid: _flower_masked(states, fwd, nid, updates[nid]) for nid in alive}
    mod, active, dead = 1 << 32, set(alive), set(drop)
    t0 = time.perf_counter()
    masked_vector = _flower_sum_masked(replies, mod)
    t1 = time.perf_counter()
    answers = {
        nid: fm._unmask(
            states[nid],
            {
                "active_nids": list(neighbours[nid] & active),
                "dead_nids": list(neighbours[nid] & dead),
            },
        )
        for nid in alive
    }
    t2 = time.perf_counter()
    (mean,) = _flower_unmask(masked_vector, answers, states, neighbours, active, mod)
    t3 = time.perf_counter()
    # Sanity (untimed): the replicated path really unmasks, i.e. gives the mean of the inputs.
    error = float(np.max(np.abs(mean - np.mean([updates[i] for i in alive], axis=0))))
    assert error < 0.05, f"Flower path did not unmask (error {error})"
    return {
        "seconds": (t1 - t0) + (t3 - t2),
        "masked_bytes": sum(len(b) for b in replies[alive[0]]["masked_params"]),
        "unmask_bytes": statistics.median(
            sum(len(s) + 8 for s in a["shares"]) for a in answers.values()
        ),
    }


def ours_shamir_recover() -> dict[str, Any]:
    """Mean time to recover one 32-byte secret from 51 of 100 shares (100 secrets, each from a
    different random holder subset, so no Lagrange coefficients are reused)."""
    import random

    xs = list(range(1, 101))
    secrets = [os.urandom(32) for _ in range(100)]
    shares = [shamir.split(s, 51, xs) for s in secrets]
    picks = [sorted(random.sample(range(100), 51)) for _ in secrets]
    t0 = time.perf_counter()
    got = [
        shamir.combine([xs[i] for i in pick], [sh[i] for i in pick], 51)
        for sh, pick in zip(shares, picks, strict=True)
    ]
    seconds = (time.perf_counter() - t0) / 100
    assert got == secrets
    return {"seconds": seconds}


def flower_shamir_recover() -> dict[str, Any]:
    """Flower's combine_shares of one 32-byte secret from 51 of 100 shares."""
    from flwr.common.secure_aggregation.crypto.shamir import combine_shares, create_shares

    secret = os.urandom(32)
    shares = create_shares(secret, 51, 100)
    t0 = time.perf_counter()
    got = combine_shares(shares[:51])
    seconds = time.perf_counter() - t0
    assert got == secret
    return {"seconds": seconds}


# ---------------------------------------------------------------- driver ----------------------


def interleaved(
    reps: int, ours: Any, peer: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    a, b = [], []
    for i in range(reps):
        if i % 2:
            b.append(peer())
            a.append(ours())
        else:
            a.append(ours())
            b.append(peer())
    return a, b


def med(runs: list[dict[str, Any]], key: str = "seconds") -> float:
    return float(statistics.median(r[key] for r in runs))


def default_ring_bits(n: int, qbits: int) -> int:
    """The ring width the aggregator picks by default for n unweighted gateways."""
    keys = {p: bytes(nacl.signing.SigningKey.generate().verify_key) for p in range(1, n + 1)}
    server = SecAggServer(nacl.signing.SigningKey.generate(), keys)
    server.open_round(list(keys), vector_len=1, quant_bits=qbits)
    return server.state.config.ring_bits


def expansion_full_graph(n: int, d: int, qbits: int) -> dict[str, float]:
    """Bytes per gateway in a complete-graph round (message sizes of docs/protocol.md, section 8)
    against sending the same d inputs of 16 bits in the clear; ring width given explicitly as
    b + ceil(log2 n) (the aggregator's default rounds it up to a byte multiple)."""
    ring = qbits + (n - 1).bit_length()
    env = wire.HEADER_BYTES + wire.SIGNATURE_BYTES
    k = n - 1
    sent = {
        "advertise": env + 64,
        "share_keys": env + 4 + k * (4 + wire.SEALED_SHARE_BYTES),
        "masked_input": env + 8 + ((d + 1) * ring + 7) // 8,
        "unmask_shares_max": env + 8 + (k + 1) * 44,
    }
    received = {
        # head with the base model (100 bytes), participants, the DP block of a round without noise
        "round_config": env + 100 + 36 * n + 1,
        "key_list": env + 4 + 132 * n,
        "shares_relay": env + 8 + k * (4 + wire.SEALED_SHARE_BYTES),
        "unmask_request": env + 8 + 4 * n,
    }
    clear = 2 * d
    return {
        "ring_bits": ring,
        "sent": sent,
        "received": received,
        "expansion_sent": sum(sent.values()) / clear,
        "expansion_sent_and_received": (sum(sent.values()) + sum(received.values())) / clear,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes, fewer repetitions")
    args = ap.parse_args()
    reps = 3 if args.quick else 7
    n, d, k, t = 100, (20_000 if args.quick else 100_000), 10, 6
    drop = set(range(5, 100, 10))  # 10 gateways
    figures: dict[str, Any] = {"n": n, "d": d, "neighbours": k, "threshold": t, "dropouts": 10}
    ratios: dict[str, float] = {}
    have_flower = flower_available()
    peer_ok = have_flower

    def pair(name: str, ours: Any, peer: Any) -> None:
        if peer_ok:
            a, b = interleaved(reps, ours, peer)
            figures[f"{name}_flower_s"] = med(b)
            ratios[f"{name}_vs_flower"] = med(b) / med(a)
            figures[f"{name}_flower_detail"] = {k2: med(b, k2) for k2 in b[0] if k2 != "seconds"}
        else:
            a = [ours() for _ in range(reps)]
        figures[f"{name}_s"] = med(a)
        figures[f"{name}_detail"] = {k2: med(a, k2) for k2 in a[0] if k2 != "seconds"}

    pair(
        "server",
        lambda: ours_server_round(n, d, k, t, drop, QBITS),
        lambda: flower_server_round(n, d, k, t, drop),
    )
    a = [ours_server_round(n, d, k, t, drop, 16) for _ in range(reps)]
    figures["server_16bit_quant_24bit_ring_s"] = med(a)
    pair(
        "gateway_share_keys",
        lambda: ours_gateway_share_keys(100, 51),
        lambda: flower_gateway_share_keys(100, 51),
    )
    pair(
        "gateway_masked_input",
        lambda: ours_gateway_masked(n, d, k, t),
        lambda: flower_gateway_masked(n, d, k, t),
    )
    pair("shamir_recover_one_secret_t51", ours_shamir_recover, flower_shamir_recover)
    figures["full_graph_n1024_d2^20"] = expansion_full_graph(1024, 1 << 20, 16)
    figures["ring_bits_8bit_256_gateways"] = default_ring_bits(256, QBITS)

    print(
        json.dumps(
            {
                "area": "secagg",
                "machine": machine_info(),
                "quick": args.quick,
                "flower": have_flower,
                "figures": figures,
                "ratios": ratios,
            }
        )
    )


if __name__ == "__main__":
    main()

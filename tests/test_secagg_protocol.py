"""Secure aggregation end to end in memory: exact ring sums with dropouts, clean aborts, privacy."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import nacl.signing
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from aggregator.secagg import Outbound, SecAggServer, ServerStage
from edge_client.secagg import GatewayStage, SecAggGateway
from native import mask, packing, quant, wire
from native.errors import FedgateError, StageError

STAGES = ("advertise", "share", "masked", "unmask")


@dataclass
class Fleet:
    """An aggregator and its gateways wired together in memory; ``drops`` maps stage -> ids."""

    server: SecAggServer
    gateways: dict[int, SecAggGateway]
    drops: dict[str, set[int]] = field(default_factory=dict)
    gone: set[int] = field(default_factory=set)
    upstream: list[bytes] = field(default_factory=list)
    batched: bool = False

    def deliver(self, outs: list[Outbound], stage: str) -> None:
        self.gone |= self.drops.get(stage, set())
        batch: list[bytes] = []
        for out in outs:
            targets = [out.recipient] if out.recipient is not None else list(self.gateways)
            for pid in targets:
                if pid in self.gone:
                    continue
                try:
                    replies = self.gateways[pid].handle(out.payload)
                except FedgateError:
                    self.gone.add(pid)  # a gateway that refuses leaves the round
                    continue
                for reply in replies:
                    self.upstream.append(reply)
                    if self.batched:
                        batch.append(reply)
                    else:
                        self.server.receive(reply)
        if batch:
            results = self.server.receive_many(batch)
            assert all(isinstance(r, int) for r in results), results


def make_fleet(n: int, drops: dict[str, set[int]] | None = None, batched: bool = False) -> Fleet:
    server_key = nacl.signing.SigningKey.generate()
    ids = {p: nacl.signing.SigningKey.generate() for p in range(1, n + 1)}
    server = SecAggServer(server_key, {p: bytes(k.verify_key) for p, k in ids.items()})
    gws = {p: SecAggGateway(p, k, bytes(server_key.verify_key)) for p, k in ids.items()}
    return Fleet(server, gws, drops or {}, batched=batched)


def run_round(
    fleet: Fleet, updates: dict[int, np.ndarray], weights: dict[int, int], **params: object
) -> None:
    cfg = fleet.server.open_round(list(fleet.gateways), **params)  # type: ignore[arg-type]
    fleet.deliver([cfg], "advertise")
    for pid, gw in fleet.gateways.items():
        if pid not in fleet.gone:
            gw.provide_update(updates[pid], weights[pid], rounding_seed=bytes([pid % 256]) * 32)
    for stage in ("share", "masked", "unmask", "result"):
        if fleet.server.state.stage in (ServerStage.DONE, ServerStage.ABORTED):
            break
        fleet.deliver(fleet.server.close_stage(), stage)


def expected_total(
    cfg: wire.RoundConfig,
    updates: dict[int, np.ndarray],
    weights: dict[int, int],
    included: tuple[int, ...],
) -> np.ndarray:
    acc = np.zeros(cfg.vector_len, dtype=np.uint64)
    for pid in included:
        q = quant.quantize(
            updates[pid], cfg.clip, cfg.quant_bits, bytes([pid % 256]) * 32, ring_bits=cfg.ring_bits
        )
        acc += q.astype(np.uint64) * np.uint64(weights[pid])
    return acc


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_exact_sum_or_clean_abort(data: st.DataObject) -> None:
    n = data.draw(st.integers(3, 14), label="n")
    complete = data.draw(st.booleans(), label="complete")
    even = [k for k in range(2, n - 1, 2)]
    degree = n - 1 if complete or not even else data.draw(st.sampled_from(even), label="degree")
    threshold = data.draw(st.integers((degree + 1) // 2 + 1, degree + 1), label="t")
    quant_bits = data.draw(st.integers(2, 12), label="bits")
    max_weight = data.draw(st.sampled_from([1, 3, 50]), label="max_weight")
    d = data.draw(st.integers(1, 40), label="d")
    needed = quant.ring_bits_for(quant_bits, n * max_weight)
    ring_bits = data.draw(st.sampled_from([None, needed, min(32, needed + 3)]), label="ring")
    drops = {
        s: set(data.draw(st.lists(st.integers(1, n), max_size=max(1, n // 4)), label=s))
        for s in STAGES
    }
    fleet = make_fleet(n, drops)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    updates = {p: rng.uniform(-2, 2, d).astype(np.float32) for p in fleet.gateways}
    weights = {p: int(rng.integers(0, max_weight + 1)) for p in fleet.gateways}
    run_round(
        fleet,
        updates,
        weights,
        vector_len=d,
        degree=degree,
        threshold=threshold,
        quant_bits=quant_bits,
        ring_bits=ring_bits,
        max_weight=max_weight,
        clip=1.5,
    )
    state = fleet.server.state
    if state.stage is ServerStage.ABORTED:
        event("aborted")
        assert state.abort_reason and state.result is None
        return
    event("aggregated")
    assert state.stage is ServerStage.DONE and state.result is not None
    res = state.result
    senders = {
        p for p in fleet.gateways if p not in drops["advertise"] | drops["share"] | drops["masked"]
    }
    assert set(res.included) <= senders and len(res.included) >= threshold
    want = expected_total(state.config, updates, weights, res.included)
    assert np.array_equal(res.total.astype(np.uint64), want)
    assert res.weight_total == sum(weights[p] for p in res.included)
    assert sum(state.rejected.values()) == 0


@pytest.mark.parametrize(
    ("n", "degree", "threshold", "batched"),
    [(10, 9, 6, False), (30, 8, 5, True), (20, 19, 11, False), (20, 19, 11, True)],
)
def test_one_dropout_per_stage_still_exact(
    n: int, degree: int, threshold: int, batched: bool
) -> None:
    # At most 4 of any gateway's degree + 1 share holders drop, so t holders always remain.
    drops = {"advertise": {3}, "share": {n - 1}, "masked": {n // 2}, "unmask": {1}}
    fleet = make_fleet(n, drops, batched)
    rng = np.random.default_rng(n)
    updates = {p: rng.uniform(-1, 1, 64).astype(np.float32) for p in fleet.gateways}
    weights = {p: int(rng.integers(1, 20)) for p in fleet.gateways}
    run_round(
        fleet,
        updates,
        weights,
        vector_len=64,
        degree=degree,
        threshold=threshold,
        quant_bits=10,
        max_weight=20,
        clip=1.0,
    )
    state = fleet.server.state
    assert state.stage is ServerStage.DONE, state.abort_reason
    res = state.result
    assert res is not None
    assert set(res.included) == set(range(1, n + 1)) - {3, n - 1, n // 2}
    assert state.dropped == (n // 2,)
    want = expected_total(state.config, updates, weights, res.included)
    assert np.array_equal(res.total.astype(np.uint64), want)
    assert res.weight_total == sum(weights[p] for p in res.included)


def test_weighted_mean_close_to_float_mean() -> None:
    fleet = make_fleet(8, {"masked": {2}})
    rng = np.random.default_rng(5)
    updates = {p: rng.uniform(-1, 1, 500).astype(np.float32) for p in fleet.gateways}
    weights = {p: p * 10 for p in fleet.gateways}
    run_round(
        fleet,
        updates,
        weights,
        vector_len=500,
        degree=4,
        threshold=3,
        quant_bits=12,
        max_weight=100,
        clip=1.0,
    )
    res = fleet.server.state.result
    assert res is not None and 2 not in res.included
    want = sum(weights[p] * updates[p] for p in res.included) / sum(
        weights[p] for p in res.included
    )
    step = 2.0 / (2**12 - 1)
    assert np.max(np.abs(res.weighted_mean() - want)) <= step


def test_abort_below_threshold_says_why_and_gateways_wipe() -> None:
    fleet = make_fleet(6, {"masked": {1, 2, 3, 4}})
    updates = {p: np.zeros(10, np.float32) for p in fleet.gateways}
    run_round(fleet, updates, dict.fromkeys(fleet.gateways, 1), vector_len=10, threshold=4)
    state = fleet.server.state
    assert state.stage is ServerStage.ABORTED
    assert "masked inputs, threshold 4" in state.abort_reason
    for pid in (5, 6):
        gw = fleet.gateways[pid]
        assert gw.state.stage is GatewayStage.ABORTED
        assert gw.state.round_keys is not None and not any(gw.state.round_keys.mask_secret)
        assert not any(gw.state.self_seed) and not gw.state.held_shares


def test_too_many_unmask_dropouts_abort() -> None:
    fleet = make_fleet(7, {"unmask": {1, 2, 3, 4, 5}})
    updates = {p: np.zeros(4, np.float32) for p in fleet.gateways}
    run_round(fleet, updates, dict.fromkeys(fleet.gateways, 1), vector_len=4, degree=4, threshold=3)
    state = fleet.server.state
    assert state.stage is ServerStage.ABORTED and "shares of the" in state.abort_reason


def _masked_vector_seen_by_server(x: np.ndarray) -> np.ndarray:
    fleet = make_fleet(5)
    ones = dict.fromkeys(fleet.gateways, 1)
    updates = {p: (x if p == 1 else np.zeros_like(x)) for p in fleet.gateways}
    run_round(fleet, updates, ones, vector_len=x.size, quant_bits=8, ring_bits=16, clip=1.0)
    for raw in fleet.upstream:
        env = wire.decode(raw)
        if env.sender == 1 and isinstance(env.message, wire.MaskedInput):
            return packing.unpack(env.message.payload, env.message.count, 16)[:-1]
    raise AssertionError("no masked input from gateway 1")


def _chi_square_bytes(values: np.ndarray) -> float:
    counts = np.bincount(values.view(np.uint8), minlength=256).astype(np.float64)
    expected = counts.sum() / 256
    return float(((counts - expected) ** 2 / expected).sum())


def test_masked_vector_is_uniform_and_independent_of_input() -> None:
    d = 40_000
    low = np.full(d, -1.0, np.float32)  # quantizes to all zeros
    high = np.full(d, 1.0, np.float32)  # quantizes to all 255
    seen_low, seen_high = _masked_vector_seen_by_server(low), _masked_vector_seen_by_server(high)
    # Chi-square with 255 degrees of freedom: 400 is about 6.4 standard deviations above the mean
    # (a false alarm well below 1e-6); a visible input would push it into the tens of thousands.
    for seen in (seen_low, seen_high):
        assert _chi_square_bytes(seen) < 400
        assert abs(float(seen.mean()) - 32767.5) < 5 * 65536 / np.sqrt(12 * d)
    # Two-sample test on the high bytes: both samples come from one uniform distribution.
    a = np.bincount(seen_low >> 8, minlength=256).astype(np.float64)
    b = np.bincount(seen_high >> 8, minlength=256).astype(np.float64)
    two_sample = float((((a - b) ** 2) / np.maximum(a + b, 1)).sum())
    assert two_sample < 400
    # The input is not visible through the mask: correlation with the true quantized values is nil.
    assert abs(np.corrcoef(seen_low.astype(np.float64), seen_high.astype(np.float64))[0, 1]) < 0.05


def test_ring_unmask_identity_property() -> None:
    bits = 13
    vecs = [np.frombuffer(os.urandom(200), np.uint16) & np.uint16(2**bits - 1) for _ in range(4)]
    seeds = [os.urandom(32) for _ in range(4)]
    masked = []
    for v, s in zip(vecs, seeds, strict=True):
        m = v.copy()
        mask.apply_masks(m, [s], [], bits)
        masked.append(m)
    total = mask.ring_sum(masked, bits)
    mask.apply_masks(total, [], seeds, bits)
    assert np.array_equal(total, mask.ring_sum(vecs, bits))


def test_gateway_refuses_second_round_config_mid_round() -> None:
    fleet = make_fleet(4)
    first = fleet.server.open_round(list(fleet.gateways), vector_len=3)
    fleet.deliver([first], "advertise")
    other = SecAggServer(fleet.server.identity, fleet.server.enrolled)
    second = other.open_round(list(fleet.gateways), vector_len=3)
    with pytest.raises(StageError, match="expected KEY_LIST"):
        fleet.gateways[1].handle(second.payload)
    assert fleet.gateways[1].state.stage is GatewayStage.ADVERTISED

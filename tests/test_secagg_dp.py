"""Distributed DP inside secure aggregation, in memory: exact noisy ring sums, decoding, policy."""

from __future__ import annotations

from fractions import Fraction

import nacl.signing
import numpy as np
import pytest

from aggregator.secagg import Outbound, SecAggServer, ServerStage
from edge_client.secagg import GatewayPolicy, GatewayStage, SecAggGateway
from native import dp_params, mask, quant, rotation, round_noise, wire
from native.errors import FedgateError, InputError, InputTypeError, ProtocolError

D = 300  # padded to 512 by the rotation


def _fleet(n: int, policy: GatewayPolicy | None = None
           ) -> tuple[SecAggServer, dict[int, SecAggGateway]]:
    server_key = nacl.signing.SigningKey.generate()
    ids = {p: nacl.signing.SigningKey.generate() for p in range(1, n + 1)}
    server = SecAggServer(server_key, {p: bytes(k.verify_key) for p, k in ids.items()})
    gws = {p: SecAggGateway(p, k, bytes(server_key.verify_key), policy) for p, k in ids.items()}
    return server, gws


def _seeds(pid: int) -> tuple[bytes, bytes]:
    return bytes([pid]) * 32, bytes([100 + pid]) * 32


def _run(server: SecAggServer, gws: dict[int, SecAggGateway], updates: dict[int, np.ndarray],
         drop_after_shares: set[int], **params: object) -> set[int]:
    """One round; returns the gateways that refused or left."""
    gone = set()

    def deliver(outs: list[Outbound]) -> None:
        for out in outs:
            for pid in [out.recipient] if out.recipient is not None else list(gws):
                if pid in gone:
                    continue
                try:
                    for reply in gws[pid].handle(out.payload):
                        server.receive(reply)
                except FedgateError:
                    gone.add(pid)

    deliver([server.open_round(list(gws), **params)])  # type: ignore[arg-type]
    for pid, gw in gws.items():
        if pid not in gone:
            rs, ns = _seeds(pid)
            gw.provide_update(updates[pid], rounding_seed=rs, noise_seed=ns)
    for stage in ("share", "masked", "unmask", "result"):
        if server.state.stage in (ServerStage.DONE, ServerStage.ABORTED):
            break
        if stage == "masked":
            gone |= drop_after_shares
        deliver(server.close_stage())
    return gone


def _noise(z: float, n: int, t: int, *, bits: int = 12, clip: float = 0.2) -> wire.RoundNoise:
    return round_noise.plan(z, 1.0, quant_bits=bits, clip=clip, vector_len=D, threshold=t,
                            max_participants=n)


def _expected_levels(cfg: wire.RoundConfig, rid: bytes, update: np.ndarray, pid: int
                     ) -> np.ndarray:
    """What gateway ``pid`` contributes, recomputed from its seeds and the documented path."""
    assert cfg.noise is not None
    params = cfg.noise.params(cfg.threshold, cfg.vector_len)
    rs, ns = _seeds(pid)
    clipped, _ = quant.clip_l2(update, cfg.noise.l2_clip)
    rotated = rotation.rotate(clipped, wire.rotation_seed(cfg.graph_seed, rid))
    q = rotation.conditional_quantize(rotated, cfg.clip, cfg.quant_bits, rs,
                                      params.l2_sensitivity, ring_bits=cfg.ring_bits)
    dp_params.add_round_noise(q, ns, params, cfg.ring_bits)
    return q


def test_dp_round_is_the_exact_ring_sum_of_the_survivors_noisy_levels() -> None:
    n, t = 6, 4
    server, gws = _fleet(n)
    rng = np.random.default_rng(5)
    updates = {p: (rng.standard_normal(D) * 0.2).astype(np.float32) for p in gws}
    gone = _run(server, gws, updates, {2}, vector_len=D, threshold=t, quant_bits=12, clip=0.2,
                noise=_noise(1.0, n, t))
    st = server.state
    assert st.stage is ServerStage.DONE and gone == {2}
    assert st.result is not None and st.result.included == (1, 3, 4, 5, 6)
    cfg = st.config
    expected = mask.ring_sum(
        np.stack([_expected_levels(cfg, st.round_id, updates[p], p) for p in st.result.included]),
        cfg.ring_bits)
    assert np.array_equal(st.result.total, expected)
    assert st.result.weight_total == 5 and st.result.total.size == 512


def test_decoded_mean_matches_the_clipped_updates_within_the_noise() -> None:
    n, t = 5, 3
    server, gws = _fleet(n)
    rng = np.random.default_rng(6)
    # Norms above and below the L2 clip of 1.0: the long ones must come back clipped.
    updates = {p: (rng.standard_normal(D) * (0.02 + 0.05 * p)).astype(np.float32) for p in gws}
    z = 0.05
    _run(server, gws, updates, set(), vector_len=D, threshold=t, quant_bits=16, clip=0.5,
         noise=_noise(z, n, t, bits=16, clip=0.5))
    res = server.state.result
    assert res is not None
    clipped = np.mean([quant.clip_l2(updates[p], 1.0)[0] for p in gws], axis=0)
    got = res.weighted_mean()
    assert got.dtype == np.float32 and got.shape == (D,)
    cfg = server.state.config
    assert cfg.noise is not None
    step = 2 * cfg.clip / ((1 << cfg.quant_bits) - 1)
    # Summed noise: variance in levels^2 spread by the rotation; per coordinate of the mean
    # its standard deviation is sqrt(variance) * step / n (plus the rounding, below one step).
    sd = float(np.sqrt(float(cfg.noise.variance))) * step / n
    err = got - clipped
    assert abs(float(err.mean())) < 4 * sd / np.sqrt(D) + step
    assert 0.7 * sd < float(err.std()) < 1.3 * sd + step


def test_noise_makes_a_difference_to_the_decoded_sum() -> None:
    """Negative control: the same round without noise decodes far closer to the true mean."""
    n, t = 5, 3
    rng = np.random.default_rng(7)
    errs = []
    for dp in (None, _noise(2.0, n, t, bits=12, clip=0.5)):
        server, gws = _fleet(n)
        updates = {p: (rng.standard_normal(D) * 0.03).astype(np.float32) for p in gws}
        _run(server, gws, updates, set(), vector_len=D, threshold=t, quant_bits=12, clip=0.5,
             noise=dp)
        res = server.state.result
        assert res is not None
        truth = np.mean([quant.clip_l2(updates[p], 1.0)[0] if dp else updates[p] for p in gws],
                        axis=0)
        errs.append(float(np.abs(res.weighted_mean() - truth).mean()))
    assert errs[1] > 20 * errs[0]


def test_gateway_policy_refuses_rounds_without_enough_noise() -> None:
    n, t = 4, 3
    floor = GatewayPolicy(privacy=dp_params.GatewayPolicy(min_noise_multiplier=1.0))
    updates = {p: np.zeros(D, np.float32) for p in range(1, n + 1)}
    for dp, refuses in [(None, True), (_noise(0.5, n, t), True), (_noise(1.2, n, t), False)]:
        server, gws = _fleet(n, floor)
        gone = _run(server, gws, updates, set(), vector_len=D, threshold=t, quant_bits=12,
                    clip=0.2, noise=dp)
        if refuses:
            # Nobody sent anything: the round aborts at the key stage.
            assert gone == set(gws) and server.state.stage is ServerStage.ABORTED
            assert not server.state.advertised
            assert all(g.state.stage is GatewayStage.IDLE for g in gws.values())
        else:
            assert server.state.stage is ServerStage.DONE and not gone


def test_gateway_refuses_a_sensitivity_below_its_scaled_clip() -> None:
    n, t = 4, 3
    server, gws = _fleet(n)
    bad = wire.RoundNoise("ddg", Fraction(3 * 100), 1.0, 50.0, n)  # clip scale ~ 10 000 levels
    gone = _run(server, gws, {p: np.zeros(D, np.float32) for p in gws}, set(), vector_len=D,
                threshold=t, quant_bits=12, clip=0.2, noise=bad)
    assert gone == set(gws)
    gw = gws[1]
    with pytest.raises(ProtocolError, match="inconsistent"):
        gw.handle(server.open_round(list(gws), vector_len=D, threshold=t, quant_bits=12,
                                    clip=0.2, noise=bad).payload)


def test_server_rejects_an_unrotated_masked_input_in_a_dp_round() -> None:
    n, t = 4, 3
    server, gws = _fleet(n)
    out = server.open_round(list(gws), vector_len=D, threshold=t, quant_bits=12, clip=0.2,
                            noise=_noise(1.0, n, t))
    cfg = server.state.config
    assert cfg.masked_len == 513
    forged = wire.encode(wire.MaskedInput.of(np.zeros(D + 1, mask.ring_dtype(cfg.ring_bits)),
                                             cfg.ring_bits), server.state.round_id, 1,
                         nacl.signing.SigningKey.generate())
    with pytest.raises(FedgateError):
        server.receive(forged)
    assert out.recipient is None


def test_plan_rejects_parameters_the_sampler_cannot_draw_exactly() -> None:
    with pytest.raises(InputError):
        round_noise.plan(1e6, 1.0, quant_bits=16, clip=0.01, vector_len=D, threshold=2,
                         max_participants=4)
    noise_cfg = _noise(1.0, 4, 3)
    assert noise_cfg.variance.denominator == 1 and noise_cfg.variance % 3 == 0
    z = dp_params.noise_multiplier(noise_cfg.params(3, D))
    assert 1.0 <= z < 1.0001


def test_noisy_sum_decoder_refuses_garbage() -> None:
    from native import dp_decode

    total = np.zeros(512, np.uint32)
    seed = bytes(32)
    with pytest.raises(InputError):
        dp_decode.noisy_sum(total[:100], 3, 0.2, 12, 20, seed, D)
    with pytest.raises(InputError):
        dp_decode.noisy_sum(total, 0, 0.2, 12, 20, seed, D)
    with pytest.raises(InputTypeError):
        dp_decode.noisy_sum(total.astype(np.uint16), 3, 0.2, 12, 20, seed, D)
    out = dp_decode.noisy_sum(np.full(512, 4095, np.uint32), 2, 0.2, 12, 20, seed, D)
    assert not out.any()  # two vectors at the centre of the levels: the zero sum

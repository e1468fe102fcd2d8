"""Gateway side of secure aggregation (Bonawitz et al. 2017 with SecAgg+ neighbourhoods).

Transport-free: :meth:`SecAggGateway.handle` takes the bytes of one message from the aggregator and
returns the bytes to send back; :meth:`SecAggGateway.provide_update` hands in the local model
update.
Privacy invariants kept here: nothing is sent before the signed round config passes this gateway's
policy; the update leaves only quantized, self-masked and pairwise-masked; for any peer this gateway
reveals either the self-mask seed share or the mask-key share, never both; round keys and shares are
wiped when the round ends.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from enum import Enum

import nacl.signing
import numpy as np
import numpy.typing as npt

from native import dp_params, keys, mask, quant, rotation, shamir, wire
from native.errors import (
    InputError,
    MisaddressedError,
    ProtocolError,
    ReplayError,
    RoundAbortedError,
    StageError,
    UnknownSenderError,
)

__all__ = ["GatewayPolicy", "GatewayStage", "GatewayState", "SecAggGateway", "plain_levels"]

log = logging.getLogger(__name__)


class GatewayStage(Enum):
    IDLE = "idle"
    ADVERTISED = "advertised"
    SHARED = "shared"
    MASKING = "masking"
    MASKED = "masked"
    UNMASKED = "unmasked"
    DONE = "done"
    ABORTED = "aborted"


_EXPECTED = {
    GatewayStage.IDLE: wire.MsgType.ROUND_CONFIG,
    GatewayStage.ADVERTISED: wire.MsgType.KEY_LIST,
    GatewayStage.SHARED: wire.MsgType.SHARES_RELAY,
    GatewayStage.MASKED: wire.MsgType.UNMASK_REQUEST,
    GatewayStage.UNMASKED: wire.MsgType.ROUND_RESULT,
}


@dataclass(frozen=True)
class GatewayPolicy:
    """Safety minimums a round config must meet before this gateway takes part."""

    min_participants: int = 3
    min_degree: int = 2
    min_threshold_fraction: float = 0.5  # threshold must exceed this share of degree + 1
    min_quant_bits: int = 2
    max_quant_bits: int = 24
    max_vector_len: int = wire.MAX_VECTOR_LEN
    # None: rounds without DP noise are accepted; set: every round must carry at least this noise.
    privacy: dp_params.GatewayPolicy | None = None


@dataclass
class GatewayState:
    """Everything one gateway holds for the current round."""

    stage: GatewayStage = GatewayStage.IDLE
    round_id: bytes = b""
    config: wire.RoundConfig | None = None
    neighbours: frozenset[int] = frozenset()
    round_keys: keys.RoundKeys | None = None
    peer_keys: dict[int, wire.KeyEntry] = field(default_factory=dict)
    enc_keys: dict[int, bytes] = field(default_factory=dict)
    self_seed: bytearray = field(default_factory=bytearray)
    held_shares: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)
    mask_peers: tuple[int, ...] = ()
    pending_update: tuple[npt.NDArray[np.float32], int, bytes, bytes | None] | None = None
    revealed: dict[int, str] = field(default_factory=dict)
    seen_rounds: set[bytes] = field(default_factory=set)
    abort_reason: str = ""


class SecAggGateway:
    """One gateway's protocol state machine, driven by :meth:`handle` and :meth:`provide_update`."""

    def __init__(
        self,
        pid: int,
        identity: nacl.signing.SigningKey,
        server_key: bytes,
        policy: GatewayPolicy | None = None,
    ) -> None:
        self.pid = pid
        self.identity = identity
        self.server_key = server_key
        self.policy = policy or GatewayPolicy()
        self.state = GatewayState()

    # -- entry points -------------------------------------------------------------------------

    def handle(self, data: bytes) -> list[bytes]:
        """Process one message from the aggregator; returns the messages to send back."""
        env = wire.decode(data)
        if env.sender != 0:
            raise UnknownSenderError(f"gateway {self.pid} takes messages from the aggregator only")
        env.verify(self.server_key)
        st = self.state
        if env.msg_type is wire.MsgType.ROUND_CONFIG and st.stage in (
            GatewayStage.IDLE,
            GatewayStage.DONE,
            GatewayStage.ABORTED,
        ):
            return self._on_config(env)
        if env.msg_type is wire.MsgType.ROUND_CONFIG:
            raise StageError(
                f"{_EXPECTED[st.stage].name} in stage {st.stage.value}"
                if st.stage in _EXPECTED
                else "provide_update()",
                "ROUND_CONFIG",
            )
        if env.round_id != st.round_id or st.stage is GatewayStage.IDLE:
            raise ReplayError("message of a round this gateway is not in")
        if st.stage in (GatewayStage.DONE, GatewayStage.ABORTED):
            raise StageError("a new ROUND_CONFIG", env.msg_type.name)
        if env.msg_type is wire.MsgType.ROUND_RESULT:
            return self._on_result(env.message)
        expected = _EXPECTED.get(st.stage)
        if expected is not env.msg_type:
            want = expected.name if expected else "provide_update()"
            raise StageError(f"{want} in stage {st.stage.value}", env.msg_type.name)
        try:
            if isinstance(env.message, wire.KeyList):
                return self._on_key_list(env.message)
            if isinstance(env.message, wire.SharesRelay):
                return self._on_relay(env.message)
            if isinstance(env.message, wire.UnmaskRequest):
                return self._on_unmask(env.message)
        except RoundAbortedError as exc:
            self._abort(str(exc))
            raise
        raise ProtocolError(f"unexpected {env.msg_type.name}")  # pragma: no cover - table above

    def provide_update(
        self,
        update: npt.NDArray[np.float32],
        weight: int = 1,
        *,
        rounding_seed: bytes | None = None,
        noise_seed: bytes | None = None,
    ) -> list[bytes]:
        """Hand in the local update and its weight; returns the masked input once shares are in.

        ``rounding_seed`` fixes the stochastic rounding and ``noise_seed`` a DP round's noise
        share (both for reproducible tests); by default each is fresh from the OS CSPRNG.
        """
        st = self.state
        if st.stage not in (GatewayStage.ADVERTISED, GatewayStage.SHARED, GatewayStage.MASKING):
            raise StageError("a round before its masked-input stage", f"stage {st.stage.value}")
        assert st.config is not None
        if not isinstance(update, np.ndarray) or update.dtype != np.float32 or update.ndim != 1:
            raise InputError("update must be a 1-D float32 array")
        if update.size != st.config.vector_len:
            raise InputError(
                f"update has {update.size} values, round expects {st.config.vector_len}"
            )
        if not np.isfinite(update).all():
            raise InputError("update holds NaN or infinity")
        if not isinstance(weight, int) or not 0 <= weight <= st.config.max_weight:
            raise InputError(f"weight must be an int in 0..{st.config.max_weight}")
        for name, given in (("rounding_seed", rounding_seed), ("noise_seed", noise_seed)):
            if given is not None and (not isinstance(given, bytes) or len(given) != 32):
                raise InputError(f"{name} must be 32 bytes")
        st.pending_update = (update, weight, rounding_seed or os.urandom(32), noise_seed)
        return self._masked_input() if st.stage is GatewayStage.MASKING else []

    # -- stages -------------------------------------------------------------------------------

    def _on_config(self, env: wire.Envelope) -> list[bytes]:
        cfg = env.message
        assert isinstance(cfg, wire.RoundConfig)
        if env.round_id in self.state.seen_rounds:
            raise ReplayError("round id already used")
        self._check_policy(cfg)
        self._wipe()
        graph = keys.neighbourhood_graph(
            cfg.graph_seed, [p.pid for p in cfg.participants], cfg.degree
        )
        self.state = GatewayState(
            stage=GatewayStage.ADVERTISED,
            round_id=env.round_id,
            config=cfg,
            neighbours=graph[self.pid],
            round_keys=keys.RoundKeys.generate(),
            seen_rounds=self.state.seen_rounds | {env.round_id},
        )
        rk = self.state.round_keys
        assert rk is not None
        return [self._send(wire.AdvertiseKeys(rk.mask_public, rk.enc_public))]

    def _check_policy(self, cfg: wire.RoundConfig) -> None:
        pol, n = self.policy, len(cfg.participants)
        me = [p for p in cfg.participants if p.pid == self.pid]
        if not me or not keys.constant_time_equal(
            me[0].identity_key, bytes(self.identity.verify_key)
        ):
            raise ProtocolError(
                f"round config does not list gateway {self.pid} with its identity key"
            )
        problems = []
        if n < pol.min_participants:
            problems.append(f"{n} participants < {pol.min_participants}")
        if cfg.degree < min(pol.min_degree, n - 1):
            problems.append(f"degree {cfg.degree} < {pol.min_degree}")
        if cfg.threshold <= pol.min_threshold_fraction * (cfg.degree + 1):
            problems.append(f"threshold {cfg.threshold} too low for degree {cfg.degree}")
        if not pol.min_quant_bits <= cfg.quant_bits <= pol.max_quant_bits:
            problems.append(f"quant_bits {cfg.quant_bits} outside policy")
        if cfg.vector_len > pol.max_vector_len:
            problems.append(f"vector_len {cfg.vector_len} > {pol.max_vector_len}")
        if problems:
            raise ProtocolError("round config below safety minimum: " + "; ".join(problems))
        if pol.privacy is not None or cfg.noise is not None:
            self._check_noise(cfg)

    def _check_noise(self, cfg: wire.RoundConfig) -> None:
        """The round's DP noise against this gateway's floor, and against its own clip."""
        params = None if cfg.noise is None else cfg.noise.params(cfg.threshold, cfg.vector_len)
        if self.policy.privacy is not None:
            dp_params.check_round_noise(params, self.policy.privacy)
        if cfg.noise is None or params is None:
            return
        # The integer bound must admit the scaled clipped update, or no rounding would fit it.
        scale = ((1 << cfg.quant_bits) - 1) / (2 * cfg.clip)
        if params.l2_sensitivity < cfg.noise.l2_clip * scale:
            raise ProtocolError(
                f"round config inconsistent: l2_sensitivity {params.l2_sensitivity:.6g} levels "
                f"is below the scaled L2 clip {cfg.noise.l2_clip * scale:.6g}"
            )

    def _on_key_list(self, msg: wire.KeyList) -> list[bytes]:
        st, cfg, rk = self.state, self.state.config, self.state.round_keys
        assert cfg is not None and rk is not None
        peers = self._neighbour_keys(msg, cfg, rk)
        seed = bytearray(os.urandom(keys.KEY_BYTES))
        holders = sorted([*peers, self.pid])
        shares = dict(
            zip(
                holders,
                shamir.split_many([bytes(seed), bytes(rk.mask_secret)], cfg.threshold, holders),
                strict=True,
            )
        )
        ids = {p.pid: p.identity_key for p in cfg.participants}

        def seal(v: int) -> tuple[int, bytes, wire.SealedShare]:
            # The owner's signature is checked before anything is encrypted to that key.
            wire.verify_key_entry(st.round_id, peers[v], ids[v])
            key = keys.pair_seed(
                rk.enc_secret,
                peers[v].enc_public,
                st.round_id,
                self.pid,
                v,
                keys.Purpose.SHARE_ENCRYPTION,
            )
            sealed = keys.seal_shares(key, st.round_id, self.pid, v, shares[v])
            return v, key, wire.SealedShare(v, sealed)

        try:
            results = keys.map_chunked(seal, sorted(peers))
        except BaseException:
            keys.wipe(seed)
            raise
        st.peer_keys, st.self_seed = peers, seed
        own = shares[self.pid]
        st.held_shares[self.pid] = (own[: shamir.SHARE_BYTES], own[shamir.SHARE_BYTES :])
        st.enc_keys = {v: key for v, key, _ in results}
        st.stage = GatewayStage.SHARED
        return [self._send(wire.ShareKeys(tuple(item for _, _, item in results)))]

    def _neighbour_keys(
        self, msg: wire.KeyList, cfg: wire.RoundConfig, rk: keys.RoundKeys
    ) -> dict[int, wire.KeyEntry]:
        """The key-list entries of this gateway's neighbours, after the cheap consistency checks."""
        ids = {p.pid for p in cfg.participants}
        by_pid: dict[int, wire.KeyEntry] = {}
        for entry in msg.entries:
            if entry.pid in by_pid or entry.pid not in ids:
                raise ProtocolError(f"key list names {entry.pid} twice or outside the round")
            by_pid[entry.pid] = entry
        mine = by_pid.get(self.pid)
        if mine is None or not keys.constant_time_equal(
            mine.mask_public + mine.enc_public, rk.mask_public + rk.enc_public
        ):
            raise ProtocolError("key list does not carry this gateway's own keys")
        peers = {v: by_pid[v] for v in self.state.neighbours if v in by_pid}
        publics = [k for e in [*peers.values(), mine] for k in (e.mask_public, e.enc_public)]
        if len(set(publics)) != len(publics):
            raise ProtocolError("two advertised public keys coincide")
        if len(peers) + 1 < cfg.threshold:
            raise RoundAbortedError(f"{len(peers)} neighbours with keys, threshold {cfg.threshold}")
        return peers

    def _on_relay(self, msg: wire.SharesRelay) -> list[bytes]:
        st, cfg = self.state, self.state.config
        assert cfg is not None
        if msg.recipient != self.pid:
            raise MisaddressedError(f"relay for {msg.recipient} reached gateway {self.pid}")
        sources = [s.peer for s in msg.shares]
        if len(set(sources)) != len(sources) or not set(sources) <= set(st.peer_keys):
            raise ProtocolError("relay holds duplicate shares or shares from non-neighbours")
        if len(sources) + 1 < cfg.threshold:
            raise RoundAbortedError(
                f"shares from {len(sources)} neighbours, threshold {cfg.threshold}"
            )
        opened = {}
        for item in msg.shares:
            plain = keys.open_shares(
                st.enc_keys[item.peer], st.round_id, item.peer, self.pid, item.sealed
            )
            opened[item.peer] = (plain[: shamir.SHARE_BYTES], plain[shamir.SHARE_BYTES :])
        st.held_shares.update(opened)
        st.mask_peers = tuple(sorted(sources))
        st.stage = GatewayStage.MASKING
        return self._masked_input() if st.pending_update is not None else []

    def _masked_input(self) -> list[bytes]:
        st, cfg, rk = self.state, self.state.config, self.state.round_keys
        assert cfg is not None and rk is not None and st.pending_update is not None
        update, weight, rounding_seed, noise_seed = st.pending_update
        st.pending_update = None
        bits = cfg.ring_bits
        q = plain_levels(update, cfg, st.round_id, rounding_seed, noise_seed)
        d = q.size
        vec = np.empty(d + 1, dtype=mask.ring_dtype(bits))
        # Weighting happens in the ring (w * q), so the server learns sum(w q) and sum(w) only.
        if weight == 1:
            vec[:d] = q
        else:
            vec[:d] = (q.astype(np.uint64) * np.uint64(weight)) & np.uint64((1 << bits) - 1)
        vec[d] = weight
        add: list[bytes] = [bytes(st.self_seed)]
        sub: list[bytes] = []
        for v in st.mask_peers:
            seed = keys.pair_seed(
                rk.mask_secret,
                st.peer_keys[v].mask_public,
                st.round_id,
                self.pid,
                v,
                keys.Purpose.PAIRWISE_MASK,
            )
            (add if self.pid < v else sub).append(seed)
        mask.apply_masks(vec, add, sub, bits)
        st.stage = GatewayStage.MASKED
        return [self._send(wire.MaskedInput.of(vec, bits))]

    def _on_unmask(self, msg: wire.UnmaskRequest) -> list[bytes]:
        st, cfg = self.state, self.state.config
        assert cfg is not None
        survivors, dropped = set(msg.survivors), set(msg.dropped)
        if len(survivors) != len(msg.survivors) or len(dropped) != len(msg.dropped):
            raise RoundAbortedError("unmask request repeats an id")
        both = survivors & dropped
        if both:
            raise RoundAbortedError(f"asked to reveal both shares for {sorted(both)}: refused")
        if self.pid not in survivors:
            raise RoundAbortedError("unmask request does not list this gateway as a survivor")
        peers = set(st.mask_peers)
        if not peers <= survivors | dropped:
            raise RoundAbortedError("unmask request leaves masking peers unaccounted")
        seed_owners = sorted((peers & survivors) | {self.pid})
        if len(seed_owners) < cfg.threshold or len(survivors) < cfg.threshold:
            raise RoundAbortedError(
                f"only {len(seed_owners)} survivors near this gateway, "
                f"threshold {cfg.threshold}: refused"
            )
        key_owners = sorted(peers & dropped)
        for owner, kind in [*((o, "seed") for o in seed_owners), *((o, "key") for o in key_owners)]:
            if st.revealed.setdefault(owner, kind) != kind:
                raise RoundAbortedError(f"would reveal both shares of {owner}: refused")
        out = wire.UnmaskShares(
            tuple((o, st.held_shares[o][0]) for o in seed_owners),
            tuple((o, st.held_shares[o][1]) for o in key_owners),
        )
        st.stage = GatewayStage.UNMASKED
        return [self._send(out)]

    def _on_result(self, msg: wire.Message) -> list[bytes]:
        assert isinstance(msg, wire.RoundResult)
        if msg.status == 0:
            self.state.stage = GatewayStage.DONE
            self._wipe()
        else:
            self._abort(f"aggregator aborted the round: {msg.reason}")
        return []

    # -- helpers ------------------------------------------------------------------------------

    def _send(self, msg: wire.Message) -> bytes:
        return wire.encode(msg, self.state.round_id, self.pid, self.identity)

    def _abort(self, reason: str) -> None:
        log.warning("gateway %d leaves round: %s", self.pid, reason)
        self.state.stage = GatewayStage.ABORTED
        self.state.abort_reason = reason
        self._wipe()

    def _wipe(self) -> None:
        """Drop the key material of the round: private keys, self-mask seed, held shares."""
        st = self.state
        if st.round_keys is not None:
            st.round_keys.wipe()
        keys.wipe(st.self_seed)
        st.held_shares.clear()
        st.enc_keys.clear()
        st.pending_update = None


def plain_levels(update: npt.NDArray[np.float32], cfg: wire.RoundConfig, round_id: bytes,
                 rounding_seed: bytes, noise_seed: bytes | None = None
                 ) -> npt.NDArray[np.unsignedinteger]:
    """A gateway's contribution before masking: its quantized levels, for a DP round its noisy
    rotated levels. Exposed so a simulator can check a recovered sum against its parts.

    DP path: L2 clip, rotate, conditional rounding, then this gateway's noise share. Privacy
    invariant: the centered levels have L2 norm <= l2_sensitivity (conditional rounding enforces
    it, whatever the update), and the share variance is the config's variance / threshold, drawn
    from ``noise_seed`` or a fresh CSPRNG seed, wiped once used.
    """
    if cfg.noise is None:
        return quant.quantize(update, cfg.clip, cfg.quant_bits, rounding_seed,
                              ring_bits=cfg.ring_bits)
    params = cfg.noise.params(cfg.threshold, cfg.vector_len)
    clipped, _ = quant.clip_l2(update, cfg.noise.l2_clip)
    rotated = rotation.rotate(clipped, wire.rotation_seed(cfg.graph_seed, round_id))
    q = rotation.conditional_quantize(rotated, cfg.clip, cfg.quant_bits, rounding_seed,
                                      params.l2_sensitivity, ring_bits=cfg.ring_bits)
    seed = bytearray(noise_seed or os.urandom(32))
    try:
        dp_params.add_round_noise(q, bytes(seed), params, cfg.ring_bits)
    finally:
        keys.wipe(seed)
    return q

"""Aggregator side of secure aggregation (Bonawitz et al. 2017 with SecAgg+ neighbourhoods).

Transport-free: :meth:`SecAggServer.open_round` returns the signed round config, :meth:`receive`
takes the bytes of one gateway message (a rejected one raises a typed error and is counted in
``state.rejected``; the round goes on), and :meth:`close_stage` ends the current stage at its
deadline and returns the messages to deliver. The aggregator relays encrypted shares it cannot read
and learns only the ring sum of the weighted updates whose masked vectors arrived, and their weight.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

import nacl.signing
import numpy as np
import numpy.typing as npt

from native import dp_decode, keys, mask, quant, shamir, wire
from native.dp_params import ring_bits_with_noise
from native.errors import (
    DuplicateError,
    FedgateError,
    InputError,
    IntegrityError,
    MisaddressedError,
    ProtocolError,
    ReplayError,
    RoundAbortedError,
    StageError,
    UnknownSenderError,
    WireError,
)

__all__ = ["AggregateResult", "Outbound", "SecAggServer", "ServerStage", "ServerState"]

log = logging.getLogger(__name__)


class ServerStage(Enum):
    COLLECT_KEYS = "collect_keys"
    COLLECT_SHARES = "collect_shares"
    COLLECT_MASKED = "collect_masked"
    COLLECT_UNMASK = "collect_unmask"
    DONE = "done"
    ABORTED = "aborted"


_EXPECTED = {
    ServerStage.COLLECT_KEYS: wire.MsgType.ADVERTISE_KEYS,
    ServerStage.COLLECT_SHARES: wire.MsgType.SHARE_KEYS,
    ServerStage.COLLECT_MASKED: wire.MsgType.MASKED_INPUT,
    ServerStage.COLLECT_UNMASK: wire.MsgType.UNMASK_SHARES,
}


@dataclass(frozen=True)
class Outbound:
    """A message to deliver: to one gateway, or to every participant when ``recipient`` is None."""

    recipient: int | None
    payload: bytes


@dataclass(frozen=True)
class AggregateResult:
    """The exact ring sum of the weighted quantized updates that arrived, and the sum of weights."""

    total: npt.NDArray[np.unsignedinteger]
    weight_total: int
    included: tuple[int, ...]
    clip: float
    quant_bits: int
    noise: wire.RoundNoise | None = None
    ring_bits: int = 0
    vector_len: int = 0
    rotation_seed: bytes = b""

    def weighted_sum(self) -> npt.NDArray[np.float32]:
        """Estimate of sum_i w_i x_i (dequantized; for a DP round the noisy sum, unrotated)."""
        if self.noise is None:
            return quant.dequantize(self.total, self.weight_total, self.clip, self.quant_bits)
        return dp_decode.noisy_sum(self.total, self.weight_total, self.clip, self.quant_bits,
                                   self.ring_bits, self.rotation_seed, self.vector_len)

    def weighted_mean(self) -> npt.NDArray[np.float32]:
        """Estimate of sum_i w_i x_i / sum_i w_i; the aggregator never sees any single w_i."""
        if self.weight_total == 0:
            raise RoundAbortedError("all weights are zero")
        return (self.weighted_sum() / np.float32(self.weight_total)).astype(np.float32)


@dataclass
class ServerState:
    """Everything the aggregator holds for one round; ``rejected`` counts bad input per reason."""

    stage: ServerStage
    round_id: bytes
    config: wire.RoundConfig
    graph: dict[int, frozenset[int]]
    identities: dict[int, bytes]
    advertised: dict[int, wire.KeyEntry] = field(default_factory=dict)
    shares_in: dict[int, dict[int, bytes]] = field(default_factory=dict)
    relayed: dict[int, tuple[int, ...]] = field(default_factory=dict)
    accumulator: npt.NDArray[np.unsignedinteger] | None = None
    masked_from: set[int] = field(default_factory=set)
    survivors: tuple[int, ...] = ()
    dropped: tuple[int, ...] = ()
    unmask_in: dict[int, wire.UnmaskShares] = field(default_factory=dict)
    rejected: Counter[str] = field(default_factory=Counter)
    result: AggregateResult | None = None
    abort_reason: str = ""


@dataclass(frozen=True)
class _Rejection:
    reason: str
    error: FedgateError


def _reject(state: ServerState, reason: str, exc: FedgateError) -> FedgateError:
    state.rejected[reason] += 1
    log.info("rejected message (%s): %s", reason, exc)
    return exc


class SecAggServer:
    """The aggregator's protocol state machine for one round at a time."""

    def __init__(self, identity: nacl.signing.SigningKey, enrolled: Mapping[int, bytes]) -> None:
        self.identity = identity
        self.enrolled = dict(enrolled)
        self._state: ServerState | None = None

    @property
    def state(self) -> ServerState:
        if self._state is None:
            raise StageError("open_round()", "a call before any round")
        return self._state

    def open_round(
        self,
        participants: Sequence[int],
        *,
        vector_len: int,
        degree: int | None = None,
        threshold: int | None = None,
        quant_bits: int = 8,
        ring_bits: int | None = None,
        max_weight: int = 1,
        clip: float = 1.0,
        round_id: bytes | None = None,
        noise: wire.RoundNoise | None = None,
        model_version: int = 0,
        model_sha256: bytes = bytes(32),
    ) -> Outbound:
        """Start a round: draws the round id and graph seed (CSPRNG), returns the signed config.

        With ``noise`` the round is a distributed-DP round (unweighted; the ring defaults to the
        smallest width that holds the levels and the noise tail, densely packed).
        """
        pids = sorted(participants)
        unknown = [p for p in pids if p not in self.enrolled]
        if unknown:
            raise UnknownSenderError(f"not enrolled: {unknown}")
        n = len(pids)
        degree = n - 1 if degree is None else degree
        threshold = (degree + 1) // 2 + 1 if threshold is None else threshold
        if ring_bits is None and noise is not None:
            try:
                ring_bits = ring_bits_with_noise(
                    quant_bits, n, noise.params(threshold, vector_len))
            except FedgateError as exc:
                raise InputError(f"invalid round parameters: {exc}") from exc
        if ring_bits is None:
            # Byte-aligned widths keep packing a plain copy; pass ring_bits to save the last bits.
            ring_bits = min(32, -(-quant.ring_bits_for(quant_bits, n * max_weight) // 8) * 8)
        cfg = wire.RoundConfig(
            degree,
            threshold,
            quant_bits,
            ring_bits,
            max_weight,
            float(clip),
            vector_len,
            os.urandom(32),
            tuple(wire.Participant(p, self.enrolled[p]) for p in pids),
            noise,
            model_version,
            model_sha256,
        )
        try:
            cfg.validate()
        except WireError as exc:
            raise InputError(f"invalid round parameters: {exc}") from exc
        rid = os.urandom(keys.ROUND_ID_BYTES) if round_id is None else round_id
        self._state = ServerState(
            ServerStage.COLLECT_KEYS,
            rid,
            cfg,
            keys.neighbourhood_graph(cfg.graph_seed, pids, degree),
            {p.pid: p.identity_key for p in cfg.participants},
        )
        return Outbound(None, self._send(cfg))

    def awaiting(self) -> set[int]:
        """Participants the current stage still waits for (close early when this is empty)."""
        st = self.state
        expected_from, got = {
            ServerStage.COLLECT_KEYS: (st.identities.keys(), st.advertised.keys()),
            ServerStage.COLLECT_SHARES: (st.advertised.keys(), st.shares_in.keys()),
            ServerStage.COLLECT_MASKED: (st.relayed.keys(), st.masked_from),
            ServerStage.COLLECT_UNMASK: (st.masked_from, st.unmask_in.keys()),
        }.get(st.stage, (set(), set()))
        return set(expected_from) - set(got)

    # -- receiving ----------------------------------------------------------------------------

    def receive(self, data: bytes) -> int:
        """Validate and record one gateway message; returns its sender. Rejections are counted."""
        checked = self._authenticate(data)
        if isinstance(checked, _Rejection):
            raise _reject(self.state, checked.reason, checked.error)
        return self._apply(checked)

    def receive_many(self, batch: Sequence[bytes]) -> list[int | FedgateError]:
        """Several messages at once, e.g. a drained transport queue: decoding and signature checks
        (the cost of a large masked vector) run in parallel, then each message is applied in
        order exactly as :meth:`receive` would. Returns the sender or the rejection, per message.
        """
        results: list[int | FedgateError] = []
        for checked in keys.map_chunked(self._authenticate, list(batch)):
            try:
                if isinstance(checked, _Rejection):
                    raise _reject(self.state, checked.reason, checked.error)
                results.append(self._apply(checked))
            except FedgateError as exc:
                results.append(exc)
        return results

    def _authenticate(self, data: bytes) -> wire.Envelope | _Rejection:
        """Decode and check the signature; no state is touched (safe to run in parallel)."""
        identities = self.state.identities
        try:
            env = wire.decode(data)
        except WireError as exc:
            return _Rejection("malformed", exc)
        if env.sender not in identities:
            return _Rejection("unknown_sender", UnknownSenderError(f"sender {env.sender}"))
        try:
            env.verify(identities[env.sender])
        except IntegrityError as exc:
            return _Rejection("bad_signature", exc)
        return env

    def _apply(self, env: wire.Envelope) -> int:
        st = self.state
        if env.round_id != st.round_id:
            raise _reject(st, "wrong_round", ReplayError("message of another round"))
        expected = _EXPECTED.get(st.stage)
        if expected is not env.msg_type:
            want = expected.name if expected else "nothing (round closed)"
            raise _reject(st, "out_of_stage", StageError(want, env.msg_type.name))
        try:
            self._dispatch(env)
        except FedgateError as exc:
            reason = getattr(exc, "reason", None) or type(exc).__name__
            raise _reject(st, str(reason), exc) from None
        return env.sender

    def _dispatch(self, env: wire.Envelope) -> None:
        sender, msg = env.sender, env.message
        if isinstance(msg, wire.AdvertiseKeys):
            self._on_advertise(sender, msg, env.signature)
        elif isinstance(msg, wire.ShareKeys):
            self._on_share_keys(sender, msg)
        elif isinstance(msg, wire.MaskedInput):
            self._on_masked(sender, msg)
        elif isinstance(msg, wire.UnmaskShares):
            self._on_unmask(sender, msg)

    def _on_advertise(self, sender: int, msg: wire.AdvertiseKeys, signature: bytes) -> None:
        st = self.state
        if sender in st.advertised:
            raise _tag(DuplicateError(f"second key advertisement from {sender}"), "duplicate")
        # The gateway's signature over its advertisement travels on in the key list, so every
        # neighbour can check the keys came from their owner and not from the aggregator.
        st.advertised[sender] = wire.KeyEntry(sender, msg.mask_public, msg.enc_public, signature)

    def _on_share_keys(self, sender: int, msg: wire.ShareKeys) -> None:
        st = self.state
        if sender not in st.advertised:
            raise _tag(
                ProtocolError(f"{sender} shares keys it never advertised"), "not_in_stage_set"
            )
        if sender in st.shares_in:
            raise _tag(DuplicateError(f"second share message from {sender}"), "duplicate")
        dsts = [s.peer for s in msg.shares]
        expected = st.graph[sender] & st.advertised.keys()
        if len(set(dsts)) != len(dsts) or set(dsts) != expected:
            raise _tag(
                MisaddressedError(
                    f"{sender} addressed shares to {sorted(set(dsts) ^ expected)[:8]} wrongly"
                ),
                "misaddressed",
            )
        st.shares_in[sender] = {s.peer: s.sealed for s in msg.shares}

    def _on_masked(self, sender: int, msg: wire.MaskedInput) -> None:
        st, cfg = self.state, self.state.config
        if sender not in st.relayed:
            raise _tag(ProtocolError(f"{sender} sends input without shares"), "not_in_stage_set")
        if sender in st.masked_from:
            raise _tag(DuplicateError(f"second masked input from {sender}"), "duplicate")
        if msg.ring_bits != cfg.ring_bits:
            raise _tag(
                ProtocolError(f"ring width {msg.ring_bits}, round uses {cfg.ring_bits}"),
                "wrong_width",
            )
        if msg.count != cfg.masked_len:
            raise _tag(
                ProtocolError(f"{msg.count} ring elements, expected {cfg.masked_len}"),
                "wrong_length",
            )
        vec = msg.values()
        if st.accumulator is None:
            st.accumulator = np.zeros(msg.count, dtype=mask.ring_dtype(cfg.ring_bits))
        mask.ring_add(st.accumulator, vec, cfg.ring_bits)
        st.masked_from.add(sender)

    def _on_unmask(self, sender: int, msg: wire.UnmaskShares) -> None:
        st = self.state
        if sender not in st.masked_from:
            raise _tag(ProtocolError(f"{sender} unmasks without input"), "not_in_stage_set")
        if sender in st.unmask_in:
            raise _tag(DuplicateError(f"second unmask message from {sender}"), "duplicate")
        seed_expected, key_expected = self._reveal_sets(sender)
        seed_got = [o for o, _ in msg.seed_shares]
        key_got = [o for o, _ in msg.key_shares]
        if seed_got != seed_expected or key_got != key_expected:
            raise _tag(ProtocolError(f"{sender} revealed the wrong set of shares"), "wrong_shares")
        st.unmask_in[sender] = msg

    def _reveal_sets(self, holder: int) -> tuple[list[int], list[int]]:
        st = self.state
        peers = set(st.relayed[holder])
        survivors = set(st.survivors)
        return sorted((peers & survivors) | {holder}), sorted(peers & set(st.dropped))

    # -- closing stages -----------------------------------------------------------------------

    def close_stage(self) -> list[Outbound]:
        """End the current stage (its deadline passed or everyone answered): next messages out."""
        st = self.state
        t = st.config.threshold
        if st.stage is ServerStage.COLLECT_KEYS:
            if len(st.advertised) < t:
                return self._abort(f"{len(st.advertised)} gateways advertised keys, threshold {t}")
            st.stage = ServerStage.COLLECT_SHARES
            entries = tuple(st.advertised[p] for p in sorted(st.advertised))
            return [Outbound(None, self._send(wire.KeyList(entries)))]
        if st.stage is ServerStage.COLLECT_SHARES:
            return self._close_shares()
        if st.stage is ServerStage.COLLECT_MASKED:
            if len(st.masked_from) < t:
                return self._abort(f"{len(st.masked_from)} masked inputs, threshold {t}")
            st.survivors = tuple(sorted(st.masked_from))
            st.dropped = tuple(sorted(st.relayed.keys() - st.masked_from))
            st.stage = ServerStage.COLLECT_UNMASK
            return [Outbound(None, self._send(wire.UnmaskRequest(st.survivors, st.dropped)))]
        if st.stage is ServerStage.COLLECT_UNMASK:
            return self._finish()
        raise StageError("an open round", f"close_stage() in stage {st.stage.value}")

    def _close_shares(self) -> list[Outbound]:
        st = self.state
        t = st.config.threshold
        if len(st.shares_in) < t:
            return self._abort(f"{len(st.shares_in)} gateways shared keys, threshold {t}")
        out = []
        for v in sorted(st.shares_in):
            items = tuple(
                wire.SealedShare(u, st.shares_in[u][v])
                for u in sorted(st.shares_in)
                if v in st.shares_in[u]
            )
            st.relayed[v] = tuple(s.peer for s in items)
            out.append(Outbound(v, self._send(wire.SharesRelay(v, items))))
        st.shares_in.clear()
        st.stage = ServerStage.COLLECT_MASKED
        return out

    def _finish(self) -> list[Outbound]:
        st, cfg = self.state, self.state.config
        try:
            add, sub = self._recover_masks()
        except (RoundAbortedError, IntegrityError) as exc:
            return self._abort(str(exc))
        assert st.accumulator is not None
        mask.apply_masks(st.accumulator, add, sub, cfg.ring_bits)
        d = cfg.masked_len - 1
        st.result = AggregateResult(
            st.accumulator[:d].copy(),
            int(st.accumulator[d]),
            st.survivors,
            cfg.clip,
            cfg.quant_bits,
            cfg.noise,
            cfg.ring_bits,
            cfg.vector_len,
            b"" if cfg.noise is None else wire.rotation_seed(cfg.graph_seed, st.round_id),
        )
        st.stage = ServerStage.DONE
        return [Outbound(None, self._send(wire.RoundResult(0, st.survivors, "")))]

    def _recover_masks(self) -> tuple[list[bytes], list[bytes]]:
        """Seeds to add and subtract: every survivor's self mask, pairwise masks of the dropped."""
        st = self.state
        seed_shares: dict[int, list[tuple[int, bytes]]] = {u: [] for u in st.survivors}
        key_shares: dict[int, list[tuple[int, bytes]]] = {v: [] for v in st.dropped}
        for holder, msg in st.unmask_in.items():
            for owner, share in msg.seed_shares:
                seed_shares[owner].append((holder, share))
            for owner, share in msg.key_shares:
                key_shares[owner].append((holder, share))
        sub = [self._combine(u, seed_shares[u], "self-mask seed") for u in st.survivors]
        add: list[bytes] = []
        survivors = set(st.survivors)
        pairs: list[tuple[bytes, int, int]] = []
        for v in st.dropped:
            partners = [u for u in st.relayed[v] if u in survivors]
            if not partners:
                continue  # nobody masked with v's key: nothing to remove
            secret = self._combine(v, key_shares[v], "mask key")
            if not keys.constant_time_equal(
                keys.x25519_public(secret), st.advertised[v].mask_public
            ):
                raise IntegrityError(f"recovered mask key of {v} does not match its public key")
            pairs += [(secret, u, v) for u in partners]

        def pair_mask(item: tuple[bytes, int, int]) -> bytes:
            secret, u, v = item
            return keys.pair_seed(
                secret, st.advertised[u].mask_public, st.round_id, u, v, keys.Purpose.PAIRWISE_MASK
            )

        for (_, u, v), seed in zip(pairs, keys.map_chunked(pair_mask, pairs), strict=True):
            # u added the pair mask when u < v and subtracted it otherwise; undo that.
            (sub if u < v else add).append(seed)
        return add, sub

    def _combine(self, owner: int, shares: list[tuple[int, bytes]], what: str) -> bytes:
        t = self.state.config.threshold
        if len(shares) < t:
            raise RoundAbortedError(f"{len(shares)} shares of the {what} of {owner}, threshold {t}")
        return shamir.combine([h for h, _ in shares], [s for _, s in shares], t)

    def _abort(self, reason: str) -> list[Outbound]:
        st = self.state
        log.warning("round aborted: %s", reason)
        st.stage, st.abort_reason = ServerStage.ABORTED, reason
        st.accumulator = None
        return [Outbound(None, self._send(wire.RoundResult(1, (), reason)))]

    def abort(self, reason: str) -> list[Outbound]:
        """Abort the round from outside (operator, shutdown); gateways are told why."""
        return self._abort(reason)

    def _send(self, msg: wire.Message) -> bytes:
        return wire.encode(msg, self.state.round_id, 0, self.identity)


def _tag(exc: FedgateError, reason: str) -> FedgateError:
    exc.reason = reason  # type: ignore[attr-defined]
    return exc

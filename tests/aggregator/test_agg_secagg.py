"""Aggregator state machine: bad input of every class is rejected, typed, counted; rounds go on."""

from __future__ import annotations

import dataclasses

import nacl.signing
import numpy as np
import pytest

from aggregator.secagg import Outbound, SecAggServer, ServerStage
from edge_client.secagg import SecAggGateway
from native import wire
from native.errors import (
    DuplicateError,
    InputError,
    IntegrityError,
    MisaddressedError,
    ProtocolError,
    ReplayError,
    StageError,
    UnknownSenderError,
    WireError,
)

N, D = 6, 16


@dataclasses.dataclass
class Setup:
    server: SecAggServer
    gateways: dict[int, SecAggGateway]
    ids: dict[int, nacl.signing.SigningKey]
    updates: dict[int, np.ndarray]

    def to_gateways(
        self, outs: list[Outbound], skip: frozenset[int] = frozenset()
    ) -> dict[int, bytes]:
        replies: dict[int, bytes] = {}
        for out in outs:
            for pid in [out.recipient] if out.recipient is not None else list(self.gateways):
                if pid not in skip:
                    for reply in self.gateways[pid].handle(out.payload):
                        replies[pid] = reply
        return replies

    def feed(self, replies: dict[int, bytes]) -> None:
        for reply in replies.values():
            self.server.receive(reply)

    def finish(self, start_stage: str) -> None:
        order = ["keys", "shares", "masked", "unmask", "result"]
        for _ in order[order.index(start_stage) :]:
            if self.server.state.stage in (ServerStage.DONE, ServerStage.ABORTED):
                return
            self.feed(self.to_gateways(self.server.close_stage()))


def make_setup(degree: int = 4, threshold: int = 3) -> tuple[Setup, dict[int, bytes]]:
    skey = nacl.signing.SigningKey.generate()
    ids = {p: nacl.signing.SigningKey.generate() for p in range(1, N + 1)}
    enrolled = {p: bytes(k.verify_key) for p, k in ids.items()}
    enrolled[99] = bytes(nacl.signing.SigningKey.generate().verify_key)  # enrolled, not in round
    server = SecAggServer(skey, enrolled)
    gws = {p: SecAggGateway(p, k, bytes(skey.verify_key)) for p, k in ids.items()}
    rng = np.random.default_rng(0)
    updates = {p: rng.uniform(-1, 1, D).astype(np.float32) for p in gws}
    s = Setup(server, gws, ids, updates)
    cfg = server.open_round(list(gws), vector_len=D, degree=degree, threshold=threshold)
    advertise = s.to_gateways([cfg])
    for pid, gw in gws.items():
        gw.provide_update(updates[pid])
    return s, advertise


def _assert_rejected(s: Setup, data: bytes, err: type, reason: str) -> None:
    before = s.server.state.rejected[reason]
    with pytest.raises(err):
        s.server.receive(data)
    assert s.server.state.rejected[reason] == before + 1


def _completes(s: Setup, start: str) -> None:
    s.finish(start)
    assert s.server.state.stage is ServerStage.DONE, s.server.state.abort_reason
    assert s.server.state.result is not None and len(s.server.state.result.included) == N


def test_awaiting_tracks_each_stage() -> None:
    s, adv = make_setup()
    assert s.server.awaiting() == set(range(1, N + 1))
    s.feed({p: adv[p] for p in (1, 2)})
    assert s.server.awaiting() == set(range(3, N + 1))
    s.feed({p: adv[p] for p in range(3, N + 1)})
    assert s.server.awaiting() == set()
    shares = s.to_gateways(s.server.close_stage())
    assert s.server.awaiting() == set(range(1, N + 1))
    s.feed(shares)
    _completes(s, "shares")
    assert s.server.awaiting() == set()


def test_garbage_bytes_counted_as_malformed() -> None:
    s, adv = make_setup()
    for junk in (b"", b"\x00" * 200, b"FGSA" + bytes(200), adv[1][:-1], adv[1] + b"x"):
        _assert_rejected(s, junk, WireError, "malformed")
    s.feed(adv)
    _completes(s, "keys")


def test_unknown_and_unenrolled_senders() -> None:
    s, adv = make_setup()
    stranger = nacl.signing.SigningKey.generate()
    msg = wire.AdvertiseKeys(b"a" * 32, b"b" * 32)
    _assert_rejected(
        s,
        wire.encode(msg, s.server.state.round_id, 1234, stranger),
        UnknownSenderError,
        "unknown_sender",
    )
    # Enrolled with the aggregator but not a participant of this round.
    _assert_rejected(
        s,
        wire.encode(msg, s.server.state.round_id, 99, stranger),
        UnknownSenderError,
        "unknown_sender",
    )
    _assert_rejected(
        s,
        wire.encode(msg, s.server.state.round_id, 0, stranger),
        UnknownSenderError,
        "unknown_sender",
    )
    s.feed(adv)
    _completes(s, "keys")


def test_bad_signature_and_impersonation() -> None:
    s, adv = make_setup()
    forged = wire.encode(
        wire.AdvertiseKeys(b"a" * 32, b"b" * 32), s.server.state.round_id, 2, s.ids[3]
    )
    _assert_rejected(s, forged, IntegrityError, "bad_signature")
    tampered = bytearray(adv[2])
    tampered[40] ^= 1
    _assert_rejected(s, bytes(tampered), IntegrityError, "bad_signature")
    s.feed(adv)
    _completes(s, "keys")


def test_replay_from_another_round() -> None:
    s, adv = make_setup()
    old = wire.encode(wire.AdvertiseKeys(b"a" * 32, b"b" * 32), bytes(16), 1, s.ids[1])
    _assert_rejected(s, old, ReplayError, "wrong_round")
    s.feed(adv)
    _completes(s, "keys")


def test_duplicates_keep_the_first() -> None:
    s, adv = make_setup()
    s.feed(adv)
    _assert_rejected(s, adv[1], DuplicateError, "duplicate")
    shares = s.to_gateways(s.server.close_stage())
    s.feed(shares)
    _assert_rejected(s, shares[2], DuplicateError, "duplicate")
    masked = s.to_gateways(s.server.close_stage())
    s.feed(masked)
    _assert_rejected(s, masked[3], DuplicateError, "duplicate")
    _completes(s, "masked")


def test_out_of_stage_names_expected_and_arrived() -> None:
    s, adv = make_setup()
    s.feed(adv)
    shares = s.to_gateways(s.server.close_stage())
    s.feed(shares)
    masked = s.to_gateways(s.server.close_stage())
    # A late share message after its stage closed.
    with pytest.raises(StageError) as info:
        s.server.receive(shares[1])
    assert info.value.expected == "MASKED_INPUT" and info.value.arrived == "SHARE_KEYS"
    assert s.server.state.rejected["out_of_stage"] == 1
    s.feed(masked)
    _completes(s, "masked")
    _assert_rejected(s, masked[1], StageError, "out_of_stage")


def _resign(s: Setup, pid: int, msg: wire.Message) -> bytes:
    return wire.encode(msg, s.server.state.round_id, pid, s.ids[pid])


def test_wrong_width_and_length_of_masked_input() -> None:
    s, adv = make_setup()
    s.feed(adv)
    s.feed(s.to_gateways(s.server.close_stage()))
    masked = s.to_gateways(s.server.close_stage())
    good = wire.decode(masked[1]).message
    assert isinstance(good, wire.MaskedInput)
    bits = good.ring_bits
    wide = wire.MaskedInput(32, good.count, bytes(4 * good.count))
    _assert_rejected(s, _resign(s, 1, wide), ProtocolError, "wrong_width")
    short = wire.MaskedInput(bits, good.count - 1, bytes(((good.count - 1) * bits + 7) // 8))
    _assert_rejected(s, _resign(s, 1, short), ProtocolError, "wrong_length")
    s.feed(masked)
    _completes(s, "masked")


def test_shares_addressed_to_non_neighbours_or_self() -> None:
    s, adv = make_setup(degree=2, threshold=2)
    s.feed(adv)
    shares = s.to_gateways(s.server.close_stage())
    msg = wire.decode(shares[1]).message
    assert isinstance(msg, wire.ShareKeys)
    stranger = next(p for p in range(1, N + 1) if p != 1 and p not in s.server.state.graph[1])
    for peers in (
        [*[x.peer for x in msg.shares[:-1]], stranger],
        [1, msg.shares[0].peer],
        [msg.shares[0].peer],
    ):
        bad = wire.ShareKeys(tuple(wire.SealedShare(p, msg.shares[0].sealed) for p in peers))
        _assert_rejected(s, _resign(s, 1, bad), MisaddressedError, "misaddressed")
    s.feed(shares)
    _completes(s, "shares")


def test_wrong_unmask_shares_rejected() -> None:
    s, adv = make_setup()
    s.feed(adv)
    s.feed(s.to_gateways(s.server.close_stage()))
    s.feed(s.to_gateways(s.server.close_stage()))
    answers = s.to_gateways(s.server.close_stage())
    msg = wire.decode(answers[1]).message
    assert isinstance(msg, wire.UnmaskShares)
    # Asking to be credited with a key share of a survivor: both shares of one gateway.
    both = wire.UnmaskShares(msg.seed_shares, ((msg.seed_shares[0][0], bytes(40)),))
    _assert_rejected(s, _resign(s, 1, both), ProtocolError, "wrong_shares")
    s.feed(answers)
    _completes(s, "result")


def test_corrupted_unmask_share_aborts_with_reason_not_a_wrong_sum() -> None:
    s, adv = make_setup(degree=5, threshold=4)
    s.feed(adv)
    s.feed(s.to_gateways(s.server.close_stage()))
    s.feed(s.to_gateways(s.server.close_stage()))
    answers = s.to_gateways(s.server.close_stage())
    msg = wire.decode(answers[2]).message
    assert isinstance(msg, wire.UnmaskShares)
    bad = [(o, bytes(40)) if o == 1 else (o, sh) for o, sh in msg.seed_shares]
    answers[2] = _resign(s, 2, wire.UnmaskShares(tuple(bad), msg.key_shares))
    s.feed(answers)
    s.server.close_stage()
    assert s.server.state.stage is ServerStage.ABORTED
    assert "inconsistent" in s.server.state.abort_reason


def test_dropped_gateway_wrong_key_share_detected() -> None:
    s, adv = make_setup(degree=5, threshold=4)
    s.feed(adv)
    s.feed(s.to_gateways(s.server.close_stage()))
    masked = s.to_gateways(s.server.close_stage())
    del masked[4]
    s.feed(masked)
    answers = s.to_gateways(s.server.close_stage(), skip=frozenset({4}))
    forged = {}
    for pid, raw in answers.items():
        msg = wire.decode(raw).message
        assert isinstance(msg, wire.UnmaskShares)
        ks = tuple((o, bytes(40)) for o, _ in msg.key_shares)
        forged[pid] = _resign(s, pid, wire.UnmaskShares(msg.seed_shares, ks))
    s.feed(forged)
    s.server.close_stage()
    assert s.server.state.stage is ServerStage.ABORTED
    assert "does not match its public key" in s.server.state.abort_reason


def test_open_round_rejects_bad_parameters() -> None:
    s, _ = make_setup()
    with pytest.raises(UnknownSenderError):
        s.server.open_round([1, 2, 777], vector_len=4)
    with pytest.raises(InputError):
        s.server.open_round([1, 2, 3], vector_len=0)
    with pytest.raises(InputError):
        s.server.open_round([1, 2, 3, 4, 5], vector_len=4, degree=3)
    with pytest.raises(InputError):
        s.server.open_round([1, 2, 3], vector_len=4, quant_bits=20, ring_bits=16)


def test_close_stage_after_done_is_a_stage_error() -> None:
    s, adv = make_setup()
    s.feed(adv)
    _completes(s, "keys")
    with pytest.raises(StageError):
        s.server.close_stage()


def test_no_state_before_open_round() -> None:
    server = SecAggServer(nacl.signing.SigningKey.generate(), {})
    with pytest.raises(StageError):
        server.receive(b"anything")


@pytest.mark.parametrize("stage", ["keys", "shares", "masked"])
def test_abort_below_threshold_per_stage(stage: str) -> None:
    s, adv = make_setup(degree=5, threshold=5)

    def keep(replies: dict[int, bytes]) -> dict[int, bytes]:
        return {p: replies[p] for p in (1, 2, 3)}

    s.feed(keep(adv) if stage == "keys" else adv)
    if stage != "keys":
        shares = s.to_gateways(s.server.close_stage())
        s.feed(keep(shares) if stage == "shares" else shares)
        if stage == "masked":
            s.feed(keep(s.to_gateways(s.server.close_stage())))
    outs = s.server.close_stage()
    assert s.server.state.stage is ServerStage.ABORTED
    assert "threshold 5" in s.server.state.abort_reason
    result = wire.decode(outs[0].payload).message
    assert isinstance(result, wire.RoundResult) and result.status == 1


def test_unknown_stage_message_types_from_gateways() -> None:
    s, adv = make_setup()
    cfg = wire.encode(s.server.state.config, s.server.state.round_id, 1, s.ids[1])
    _assert_rejected(s, cfg, StageError, "out_of_stage")
    s.feed(adv)
    _completes(s, "keys")


def test_receive_many_matches_receive_one_by_one() -> None:
    s, adv = make_setup()
    stranger = nacl.signing.SigningKey.generate()
    forged = wire.encode(
        wire.AdvertiseKeys(b"a" * 32, b"b" * 32), s.server.state.round_id, 2, stranger
    )
    batch = [adv[1], b"junk", forged, adv[1], *[adv[p] for p in range(2, N + 1)]]
    results = s.server.receive_many(batch)
    assert results[0] == 1 and results[4:] == list(range(2, N + 1))
    assert isinstance(results[1], WireError)
    assert isinstance(results[2], IntegrityError)
    assert isinstance(results[3], DuplicateError)
    assert dict(s.server.state.rejected) == {"malformed": 1, "bad_signature": 1, "duplicate": 1}
    s.feed({})
    shares = s.to_gateways(s.server.close_stage())
    assert s.server.receive_many(list(shares.values())) == list(shares)
    masked = s.to_gateways(s.server.close_stage())
    assert s.server.receive_many(list(masked.values())) == list(masked)
    _completes(s, "unmask")

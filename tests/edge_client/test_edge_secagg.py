"""Gateway state machine: policy checks before sending, refusals, typed errors for bad input."""

from __future__ import annotations

import dataclasses

import nacl.signing
import numpy as np
import pytest

from aggregator.secagg import SecAggServer
from edge_client.secagg import GatewayPolicy, GatewayStage, SecAggGateway
from native import wire
from native.errors import (
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

N, D = 5, 8


@dataclasses.dataclass
class Rig:
    skey: nacl.signing.SigningKey
    server: SecAggServer
    gateways: dict[int, SecAggGateway]

    def sign(self, msg: wire.Message, round_id: bytes | None = None) -> bytes:
        rid = self.server.state.round_id if round_id is None else round_id
        return wire.encode(msg, rid, 0, self.skey)

    def step(self, payloads: list[tuple[int | None, bytes]]) -> dict[int, bytes]:
        out = {}
        for recipient, payload in payloads:
            for pid in [recipient] if recipient is not None else list(self.gateways):
                for reply in self.gateways[pid].handle(payload):
                    self.server.receive(reply)
                    out[pid] = reply
        return out

    def close(self) -> list[tuple[int | None, bytes]]:
        return [(o.recipient, o.payload) for o in self.server.close_stage()]


def make_rig(policy: GatewayPolicy | None = None) -> Rig:
    skey = nacl.signing.SigningKey.generate()
    ids = {p: nacl.signing.SigningKey.generate() for p in range(1, N + 1)}
    server = SecAggServer(skey, {p: bytes(k.verify_key) for p, k in ids.items()})
    gws = {p: SecAggGateway(p, k, bytes(skey.verify_key), policy) for p, k in ids.items()}
    return Rig(skey, server, gws)


def _config_bytes(rig: Rig, **params: object) -> bytes:
    return rig.server.open_round(list(rig.gateways), vector_len=D, **params).payload  # type: ignore[arg-type]


def _to_relay(rig: Rig) -> dict[int, bytes]:
    """Run a round up to the relays; returns them per recipient (not yet delivered)."""
    rig.step([(None, _config_bytes(rig))])
    rig.step(rig.close())
    return {r: p for r, p in rig.close() if r is not None}


@pytest.mark.parametrize(
    ("policy", "params", "match"),
    [
        (GatewayPolicy(), {"threshold": 2}, "threshold 2 too low"),
        (GatewayPolicy(min_participants=6), {}, "5 participants < 6"),
        (GatewayPolicy(min_quant_bits=10), {"quant_bits": 8}, "quant_bits 8 outside policy"),
        (GatewayPolicy(max_vector_len=4), {}, "vector_len 8 > 4"),
        (
            GatewayPolicy(min_degree=4, min_threshold_fraction=0.1),
            {"degree": 2, "threshold": 2},
            "degree 2 < 4",
        ),
    ],
)
def test_config_below_safety_minimum_refused_before_sending(
    policy: GatewayPolicy, params: dict[str, object], match: str
) -> None:
    rig = make_rig(policy)
    cfg = _config_bytes(rig, **params)
    with pytest.raises(ProtocolError, match=match):
        rig.gateways[1].handle(cfg)
    assert rig.gateways[1].state.stage is GatewayStage.IDLE
    assert rig.gateways[1].state.round_keys is None


def test_config_must_list_own_identity_key() -> None:
    rig = make_rig()
    rig.server.enrolled[1] = bytes(nacl.signing.SigningKey.generate().verify_key)
    with pytest.raises(ProtocolError, match="identity key"):
        rig.gateways[1].handle(_config_bytes(rig))


def test_server_signature_and_sender_checked() -> None:
    rig = make_rig()
    cfg = _config_bytes(rig)
    impostor = nacl.signing.SigningKey.generate()
    forged = wire.encode(rig.server.state.config, rig.server.state.round_id, 0, impostor)
    with pytest.raises(IntegrityError):
        rig.gateways[1].handle(forged)
    from_gateway = wire.encode(rig.server.state.config, rig.server.state.round_id, 2, rig.skey)
    with pytest.raises(UnknownSenderError):
        rig.gateways[1].handle(from_gateway)
    with pytest.raises(WireError):
        rig.gateways[1].handle(b"\x00garbage")
    assert rig.gateways[1].handle(cfg)  # still able to join after the bad input


def test_replayed_round_config_and_foreign_round_messages() -> None:
    rig = make_rig()
    relays = _to_relay(rig)
    with pytest.raises(ReplayError):
        rig.gateways[1].handle(rig.sign(wire.UnmaskRequest((1, 2, 3, 4, 5), ()), bytes(16)))
    with pytest.raises(StageError) as info:
        rig.gateways[1].handle(rig.sign(wire.UnmaskRequest((1, 2, 3, 4, 5), ())))
    assert info.value.expected.startswith("SHARES_RELAY") and info.value.arrived == "UNMASK_REQUEST"
    for pid, gw in rig.gateways.items():
        gw.provide_update(np.zeros(D, np.float32))
        for reply in gw.handle(relays[pid]):
            rig.server.receive(reply)
    rig.step(rig.close())
    rig.step(rig.close())
    assert rig.gateways[1].state.stage is GatewayStage.DONE
    old_cfg = rig.sign(rig.server.state.config)
    with pytest.raises(ReplayError, match="already used"):
        rig.gateways[1].handle(old_cfg)


def test_key_list_checks() -> None:
    rig = make_rig()
    rig.step([(None, _config_bytes(rig))])
    ((_, key_list),) = rig.close()
    entries = wire.decode(key_list).message.entries  # type: ignore[union-attr]
    gw = rig.gateways[1]
    forged = tuple(
        dataclasses.replace(e, signature=bytes(64)) if e.pid == 2 else e for e in entries
    )
    with pytest.raises(IntegrityError):
        gw.handle(rig.sign(wire.KeyList(forged)))
    swapped = tuple(
        dataclasses.replace(e, mask_public=bytes(32)) if e.pid == 1 else e for e in entries
    )
    with pytest.raises(ProtocolError, match="own keys"):
        gw.handle(rig.sign(wire.KeyList(swapped)))
    with pytest.raises(ProtocolError, match="twice"):
        gw.handle(rig.sign(wire.KeyList(entries + entries[:1])))
    assert gw.state.stage is GatewayStage.ADVERTISED
    assert gw.handle(key_list)
    assert gw.state.stage is GatewayStage.SHARED


def test_relay_checks() -> None:
    rig = make_rig()
    relays = _to_relay(rig)
    gw = rig.gateways[1]
    with pytest.raises(MisaddressedError):
        gw.handle(relays[2])
    relay = wire.decode(relays[1]).message
    assert isinstance(relay, wire.SharesRelay)
    tampered = wire.SealedShare(relay.shares[0].peer, bytes(wire.SEALED_SHARE_BYTES))
    with pytest.raises(IntegrityError):
        gw.handle(rig.sign(wire.SharesRelay(1, (tampered, *relay.shares[1:]))))
    # Shares of gateway 3 meant for gateway 2, replayed to 1 under 3's name: AAD mismatch.
    other = wire.decode(relays[2]).message
    assert isinstance(other, wire.SharesRelay)
    moved = [s for s in other.shares if s.peer == 3]
    rest = [s for s in relay.shares if s.peer != 3]
    with pytest.raises(IntegrityError):
        gw.handle(rig.sign(wire.SharesRelay(1, (*moved, *rest))))
    with pytest.raises(ProtocolError, match="duplicate"):
        gw.handle(rig.sign(wire.SharesRelay(1, relay.shares + relay.shares[:1])))
    assert gw.state.stage is GatewayStage.SHARED
    assert gw.handle(relays[1]) == []  # no update yet
    assert gw.state.stage is GatewayStage.MASKING
    assert len(gw.provide_update(np.zeros(D, np.float32))) == 1


def test_too_few_relayed_shares_refused() -> None:
    rig = make_rig()
    relays = _to_relay(rig)
    relay = wire.decode(relays[1]).message
    assert isinstance(relay, wire.SharesRelay)
    gw = rig.gateways[1]
    with pytest.raises(RoundAbortedError):
        gw.handle(rig.sign(wire.SharesRelay(1, relay.shares[:1])))
    assert gw.state.stage is GatewayStage.ABORTED and not gw.state.held_shares


def _masked_rig() -> Rig:
    rig = make_rig()
    relays = _to_relay(rig)
    for pid, gw in rig.gateways.items():
        gw.provide_update(np.zeros(D, np.float32))
        for reply in gw.handle(relays[pid]):
            rig.server.receive(reply)
    return rig


@pytest.mark.parametrize(
    ("survivors", "dropped", "match"),
    [
        ((1, 2, 3, 4, 5), (2,), "reveal both"),
        ((2, 3, 4, 5), (1,), "not list this gateway"),
        ((1, 2, 3), (4,), "unaccounted"),
        ((1, 2, 2, 3, 4, 5), (), "repeats"),
        ((1, 2), (3, 4, 5), "survivors near this gateway"),
    ],
)
def test_inconsistent_unmask_request_refused(
    survivors: tuple[int, ...], dropped: tuple[int, ...], match: str
) -> None:
    rig = _masked_rig()
    gw = rig.gateways[1]
    with pytest.raises(RoundAbortedError, match=match):
        gw.handle(rig.sign(wire.UnmaskRequest(survivors, dropped)))
    assert gw.state.stage is GatewayStage.ABORTED
    assert gw.state.round_keys is not None and not any(gw.state.round_keys.mask_secret)
    assert not gw.state.held_shares and not any(gw.state.self_seed)


def test_reveals_once_and_never_both() -> None:
    rig = _masked_rig()
    gw = rig.gateways[1]
    (reply,) = gw.handle(rig.sign(wire.UnmaskRequest((1, 2, 3, 5), (4,))))
    msg = wire.decode(reply).message
    assert isinstance(msg, wire.UnmaskShares)
    seeds, keys_ = {o for o, _ in msg.seed_shares}, {o for o, _ in msg.key_shares}
    assert not seeds & keys_ and 1 in seeds and keys_ <= {4}
    with pytest.raises(StageError):
        gw.handle(rig.sign(wire.UnmaskRequest((1, 2, 3, 4, 5), ())))


def test_provide_update_rejects_garbage() -> None:
    rig = make_rig()
    gw = rig.gateways[1]
    with pytest.raises(StageError):
        gw.provide_update(np.zeros(D, np.float32))
    gw.handle(_config_bytes(rig))
    for bad, weight in [
        (np.zeros(D, np.float64), 1),
        (np.zeros(D + 1, np.float32), 1),
        (np.zeros((2, 4), np.float32), 1),
        (np.zeros(D, np.float32), 2),
        (np.zeros(D, np.float32), -1),
        (np.full(D, np.nan, np.float32), 1),
        ([0.0] * D, 1),
    ]:
        with pytest.raises(InputError):
            gw.provide_update(bad, weight)  # type: ignore[arg-type]
    with pytest.raises(InputError):
        gw.provide_update(np.zeros(D, np.float32), rounding_seed=b"short")

"""MQTT topic builders: the only place fedgate makes topic strings.

Both sides build and parse topics here, so a renamed level cannot silently split a deployment in
two. The tree (``ROOT`` defaults to ``fedgate/v1``; ``{r}`` is a round id, ``{gw}`` a gateway id)::

    {ROOT}/announce                  aggregator -> all   retained: the current round announcement
    {ROOT}/rounds/{r}/broadcast      aggregator -> all   per-stage messages for every participant
    {ROOT}/rounds/{r}/down/{gw}      aggregator -> gw    messages for one gateway (relayed shares)
    {ROOT}/rounds/{r}/up/{gw}        gw -> aggregator    a gateway's protocol messages
    {ROOT}/status/{gw}               gw -> aggregator    retained presence (last will: offline)

Wearables talk to their gateway on the gateway's local broker, in a tree of their own
(``DEVICE_ROOT`` defaults to ``fedgate/dev``; ``{dev}`` is the frame header's device id, decimal)::

    {DEVICE_ROOT}/{dev}/frames       wearable -> gw      one device frame per message, QoS 0
    {DEVICE_ROOT}/{dev}/resend       gw -> wearable      u32 LE sequence numbers to send again

Identifiers are restricted to ``[A-Za-z0-9_-]{1,32}`` so that they can never contain the MQTT
wildcards ``+``/``#``, a level separator or a NUL, and fit the transport's fixed-width sender field.
Device ids are uint32 written without leading zeros, so each device has exactly one topic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from native.errors import InputError, InputTypeError, WireError

DEFAULT_ROOT = "fedgate/v1"
DEVICE_ROOT = "fedgate/dev"
MAX_ID_LEN = 32
MAX_DEVICE_ID = 2**32 - 1
MAX_ROUND_ID = 2**63 - 1

_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
_RESERVED_IDS = frozenset({"all", "broadcast"})

TopicKind = Literal["announce", "broadcast", "down", "up", "status"]
DeviceTopicKind = Literal["frames", "resend"]


@dataclass(frozen=True)
class ParsedTopic:
    """What a concrete topic names: its kind, and the round / gateway / device it is about."""

    kind: TopicKind
    round_id: int | None = None
    node_id: str | None = None


def check_id(value: object, what: str = "identifier") -> str:
    """Return ``value`` if it is a valid gateway/device/client id, else raise ``InputError``."""
    if not isinstance(value, str):
        raise InputTypeError(f"{what} must be a str, got {type(value).__name__}")
    if not _ID.fullmatch(value):
        raise InputError(f"{what} must match [A-Za-z0-9_-]{{1,{MAX_ID_LEN}}}, got {value!r}")
    if value in _RESERVED_IDS:
        raise InputError(f"{what} {value!r} is reserved")
    return value


def check_root(root: object) -> str:
    """Return ``root`` if every level of it is a plain identifier (no wildcards, no empty level)."""
    if not isinstance(root, str):
        raise InputTypeError(f"topic root must be a str, got {type(root).__name__}")
    levels = root.split("/")
    if len(levels) > 8 or not all(_ID.fullmatch(level) for level in levels):
        raise InputError(f"topic root must be 1-8 levels of [A-Za-z0-9_-], got {root!r}")
    return root


def check_round(round_id: object) -> int:
    """Return ``round_id`` if it is an int in [0, 2**63 - 1]."""
    if isinstance(round_id, bool) or not isinstance(round_id, int):
        raise InputTypeError(f"round id must be an int, got {type(round_id).__name__}")
    if not 0 <= round_id <= MAX_ROUND_ID:
        raise InputError(f"round id must be in [0, 2**63 - 1], got {round_id}")
    return round_id


def announce(root: str = DEFAULT_ROOT) -> str:
    """Retained round announcement topic."""
    return f"{check_root(root)}/announce"


def broadcast(round_id: int, root: str = DEFAULT_ROOT) -> str:
    """Aggregator-to-all topic of one round."""
    return f"{check_root(root)}/rounds/{check_round(round_id)}/broadcast"


def down(round_id: int, gateway_id: str, root: str = DEFAULT_ROOT) -> str:
    """Aggregator-to-one-gateway topic of one round."""
    return f"{check_root(root)}/rounds/{check_round(round_id)}/down/{check_id(gateway_id)}"


def up(round_id: int, gateway_id: str, root: str = DEFAULT_ROOT) -> str:
    """Gateway-to-aggregator topic of one round."""
    return f"{check_root(root)}/rounds/{check_round(round_id)}/up/{check_id(gateway_id)}"


def status(gateway_id: str, root: str = DEFAULT_ROOT) -> str:
    """Retained presence topic of a gateway (its last will lands here)."""
    return f"{check_root(root)}/status/{check_id(gateway_id)}"


def all_uplinks(root: str = DEFAULT_ROOT) -> str:
    """Filter the aggregator subscribes to for every gateway's messages of every round."""
    return f"{check_root(root)}/rounds/+/up/+"


def all_status(root: str = DEFAULT_ROOT) -> str:
    """Filter for every gateway's presence."""
    return f"{check_root(root)}/status/+"


def all_broadcasts(root: str = DEFAULT_ROOT) -> str:
    """Filter a gateway subscribes to for the per-round broadcasts."""
    return f"{check_root(root)}/rounds/+/broadcast"


def gateway_downlinks(gateway_id: str, root: str = DEFAULT_ROOT) -> str:
    """Filter a gateway subscribes to for its own per-round messages."""
    return f"{check_root(root)}/rounds/+/down/{check_id(gateway_id)}"


def parse(topic: object, root: str = DEFAULT_ROOT) -> ParsedTopic:
    """Parse a concrete topic of the tree; anything else is a ``WireError``."""
    if not isinstance(topic, str):
        raise WireError(f"topic must be a str, got {type(topic).__name__}")
    prefix = check_root(root) + "/"
    if not topic.startswith(prefix) or len(topic) > 512:
        raise WireError(f"topic {topic[:80]!r} is not under {root!r}")
    levels = topic[len(prefix) :].split("/")
    try:
        return _parse_levels(levels)
    except (InputError, InputTypeError, ValueError) as exc:
        raise WireError(f"malformed topic {topic[:80]!r}: {exc}") from None


def _parse_levels(levels: list[str]) -> ParsedTopic:
    if levels == ["announce"]:
        return ParsedTopic("announce")
    if len(levels) == 2 and levels[0] == "status":
        return ParsedTopic("status", node_id=check_id(levels[1]))
    if len(levels) >= 3 and levels[0] == "rounds":
        if not levels[1].isascii() or not levels[1].isdigit() or len(levels[1]) > 19:
            raise InputError(f"round level {levels[1][:20]!r} is not a decimal round id")
        round_id = check_round(int(levels[1]))
        if levels[2:] == ["broadcast"]:
            return ParsedTopic("broadcast", round_id=round_id)
        if len(levels) == 4 and levels[2] in ("up", "down"):
            kind: TopicKind = "up" if levels[2] == "up" else "down"
            return ParsedTopic(kind, round_id=round_id, node_id=check_id(levels[3]))
    raise InputError("unknown topic layout")


# -- wearable <-> gateway, on the gateway's local broker ------------------------------------------


@dataclass(frozen=True)
class DeviceTopic:
    """A parsed device topic: frames from, or resend requests to, one wearable."""

    kind: DeviceTopicKind
    device_id: int


def check_device_id(device_id: object) -> int:
    """Return ``device_id`` if it is an int in [0, 2**32 - 1] (the frame header's field)."""
    if isinstance(device_id, bool) or not isinstance(device_id, int):
        raise InputTypeError(f"device id must be an int, got {type(device_id).__name__}")
    if not 0 <= device_id <= MAX_DEVICE_ID:
        raise InputError(f"device id must be in [0, 2**32 - 1], got {device_id}")
    return device_id


def device_frames(device_id: int, root: str = DEVICE_ROOT) -> str:
    """Frames of one wearable (wearable -> gateway)."""
    return f"{check_root(root)}/{check_device_id(device_id)}/frames"


def device_resend(device_id: int, root: str = DEVICE_ROOT) -> str:
    """Resend requests for one wearable (gateway -> wearable)."""
    return f"{check_root(root)}/{check_device_id(device_id)}/resend"


def all_device_frames(root: str = DEVICE_ROOT) -> str:
    """Filter a gateway subscribes to for the frames of every wearable on its broker."""
    return f"{check_root(root)}/+/frames"


def parse_device(topic: object, root: str = DEVICE_ROOT) -> DeviceTopic:
    """Parse a concrete device topic; anything else is a ``WireError``."""
    if not isinstance(topic, str):
        raise WireError(f"topic must be a str, got {type(topic).__name__}")
    prefix = check_root(root) + "/"
    if not topic.startswith(prefix) or len(topic) > 512:
        raise WireError(f"topic {topic[:80]!r} is not under {root!r}")
    levels = topic[len(prefix) :].split("/")
    if len(levels) != 2 or levels[1] not in ("frames", "resend"):
        raise WireError(f"malformed device topic {topic[:80]!r}")
    dev = levels[0]
    # Decimal without leading zeros: "007" and "7" must not name the same device twice.
    if not (dev.isascii() and dev.isdigit() and len(dev) <= 10 and (dev == "0" or dev[0] != "0")):
        raise WireError(f"device level {dev[:20]!r} is not a decimal device id")
    device_id = int(dev)
    if device_id > MAX_DEVICE_ID:
        raise WireError(f"device id {device_id} does not fit 32 bits")
    kind: DeviceTopicKind = "frames" if levels[1] == "frames" else "resend"
    return DeviceTopic(kind, device_id)

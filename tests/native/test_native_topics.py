from __future__ import annotations

import contextlib

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from native import topics
from native.errors import InputError, InputTypeError, WireError

ids = st.from_regex(r"[A-Za-z0-9_-]{1,32}", fullmatch=True).filter(
    lambda s: s not in ("all", "broadcast")
)
rounds = st.integers(0, topics.MAX_ROUND_ID)


@given(ids, rounds)
def test_every_builder_parses_back(gw: str, r: int) -> None:
    assert topics.parse(topics.up(r, gw)) == topics.ParsedTopic("up", r, gw)
    assert topics.parse(topics.down(r, gw)) == topics.ParsedTopic("down", r, gw)
    assert topics.parse(topics.broadcast(r)) == topics.ParsedTopic("broadcast", r)
    assert topics.parse(topics.status(gw)) == topics.ParsedTopic("status", node_id=gw)
    assert topics.parse(topics.announce()) == topics.ParsedTopic("announce")


@given(ids, rounds)
def test_filters_match_exactly_their_topics(gw: str, r: int) -> None:
    match = mqtt.topic_matches_sub
    assert match(topics.all_uplinks(), topics.up(r, gw))
    assert not match(topics.all_uplinks(), topics.down(r, gw))
    assert match(topics.gateway_downlinks(gw), topics.down(r, gw))
    # Another id of the same length (an id is at most 32 characters, so not gw + "x").
    other = gw[:-1] + ("x" if gw[-1] != "x" else "y")
    assert not match(topics.gateway_downlinks(gw), topics.down(r, other))
    assert match(topics.all_broadcasts(), topics.broadcast(r))
    assert match(topics.all_status(), topics.status(gw))


def test_custom_root() -> None:
    assert topics.up(7, "gw-1", root="site/a") == "site/a/rounds/7/up/gw-1"
    assert topics.parse("site/a/rounds/7/up/gw-1", root="site/a").round_id == 7


@pytest.mark.parametrize(
    "bad", ["", "a/b", "a+", "#", "x" * 33, "gw 1", "gw\x00", "é", "all", "broadcast"]
)
def test_bad_ids_are_refused(bad: str) -> None:
    with pytest.raises(InputError):
        topics.up(1, bad)


@pytest.mark.parametrize("bad", [-1, 2**63, True, 1.0, "3", None])
def test_bad_round_ids_are_refused(bad: object) -> None:
    with pytest.raises((InputError, InputTypeError)):
        topics.broadcast(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["", "a//b", "a/+", "a/#", "/a", "a/", 5])
def test_bad_roots_are_refused(bad: object) -> None:
    with pytest.raises((InputError, InputTypeError)):
        topics.announce(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "topic",
    [
        "", "fedgate/v1", "fedgate/v1/", "other/v1/announce", "fedgate/v1/announce/x",
        "fedgate/v1/rounds/x/up/gw", "fedgate/v1/rounds/-1/up/gw", "fedgate/v1/rounds/1/up",
        "fedgate/v1/rounds/99999999999999999999/up/gw", "fedgate/v1/rounds/1/sideways/gw",
        "fedgate/v1/rounds/1/up/a+b", "fedgate/v1/status/", "fedgate/v1/status/a/b",
        "fedgate/v1/rounds/\u0661/up/gw", "fedgate/v1/" + "x/" * 300, b"fedgate/v1/announce", None,
    ],
)
def test_garbage_topics_are_wire_errors(topic: object) -> None:
    with pytest.raises(WireError):
        topics.parse(topic)


@given(st.text(max_size=80))
def test_parse_never_raises_anything_but_wire_error(text: str) -> None:
    with contextlib.suppress(WireError):
        topics.parse("fedgate/v1/" + text)


device_ids = st.integers(0, topics.MAX_DEVICE_ID)


@given(device_ids)
def test_device_topics_parse_back_and_match_their_filter(dev: int) -> None:
    frames, resend = topics.device_frames(dev), topics.device_resend(dev)
    assert frames == f"fedgate/dev/{dev}/frames" and resend == f"fedgate/dev/{dev}/resend"
    assert topics.parse_device(frames) == topics.DeviceTopic("frames", dev)
    assert topics.parse_device(resend) == topics.DeviceTopic("resend", dev)
    assert mqtt.topic_matches_sub(topics.all_device_frames(), frames)
    assert not mqtt.topic_matches_sub(topics.all_device_frames(), resend)


def test_device_topics_with_a_custom_root() -> None:
    assert topics.device_frames(7, root="site/gw-3/dev") == "site/gw-3/dev/7/frames"
    assert topics.parse_device("site/gw-3/dev/7/resend", root="site/gw-3/dev").device_id == 7
    with pytest.raises(WireError):
        topics.parse_device("fedgate/dev/7/frames", root="site/gw-3/dev")


@pytest.mark.parametrize("bad", [-1, 2**32, True, 1.5, "7", None])
def test_bad_device_ids_are_refused(bad: object) -> None:
    with pytest.raises((InputError, InputTypeError)):
        topics.device_frames(bad)  # type: ignore[arg-type]
    with pytest.raises((InputError, InputTypeError)):
        topics.device_resend(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "topic",
    [
        "", "fedgate/dev", "fedgate/dev/", "fedgate/dev/7", "fedgate/dev/7/frames/x",
        "fedgate/dev/7/status", "fedgate/dev/+/frames", "fedgate/dev/#", "fedgate/dev/-1/frames",
        "fedgate/dev/007/frames", "fedgate/dev/4294967296/frames", "fedgate/dev/1e3/frames",
        "fedgate/dev/\u0661/frames", "fedgate/dev/ 7/frames", "fedgate/v1/announce",
        "fedgate/dev/" + "9" * 600 + "/frames", b"fedgate/dev/7/frames", 7, None,
    ],
)
def test_garbage_device_topics_are_wire_errors(topic: object) -> None:
    with pytest.raises(WireError):
        topics.parse_device(topic)


@given(st.text(max_size=80))
def test_parse_device_never_raises_anything_but_wire_error(text: str) -> None:
    with contextlib.suppress(WireError):
        topics.parse_device("fedgate/dev/" + text)

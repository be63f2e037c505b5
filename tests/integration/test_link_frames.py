"""Hostile frames, generated: whatever the manager sends, the link stays up and every packet
the service sends back is one the manager accepts.

Frames come from the request shapes in `packets` (each field right, of a wrong JSON type,
null or missing), from arbitrary JSON, and from raw text no JSON parser enjoys: deep nesting,
integers with thousands of digits, NaN, lone surrogates.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from conftest import CHANNEL, TOKEN, Harness, HarnessFactory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.manager import outgoing, packets

MISSING = object()  # a field left out of the data

odd_text = st.text(st.characters(exclude_categories=()), max_size=30)  # surrogates too
plausible_text = st.sampled_from(
    ["", "f", "/", "/a/b", "a/b", CHANNEL, TOKEN, str(uuid.uuid4()), str(uuid.uuid4()).upper()]
)
json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | odd_text
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(odd_text, inner, max_size=3),
    max_leaves=8,
)


def right_type(kind: type) -> st.SearchStrategy[Any]:
    """A value of the field's JSON type, valid or not."""
    if kind is dict:  # the only object field is the configuration's `crypto`
        return shaped(packets.CRYPTO_SHAPE)
    if kind is int:
        edges = [0, -1, packets.MAX_SAFE_INTEGER, packets.MAX_SAFE_INTEGER + 1, -(2**63)]
        return st.integers() | st.sampled_from(edges)
    if kind is str:
        return plausible_text | odd_text
    return st.booleans()


def field(kind: type) -> st.SearchStrategy[Any]:
    wrong = json_values.filter(lambda value: type(value) is not kind)
    return st.one_of(right_type(kind), wrong, st.just(None), st.just(MISSING))


def shaped(shape: dict[str, type]) -> st.SearchStrategy[dict[str, Any]]:
    fields = st.fixed_dictionaries({name: field(kind) for name, kind in shape.items()})
    return fields.map(lambda data: {k: v for k, v in data.items() if v is not MISSING})


def envelope_for(packet_id: str) -> st.SearchStrategy[dict[str, Any]]:
    shape = packets.REQUEST_SHAPES.get(packet_id, {})
    return st.fixed_dictionaries(
        {
            "id": st.just(packet_id) | odd_text,
            "uuid": st.uuids().map(str) | odd_text,
            "data": shaped(shape) | json_values,
        },
        optional={"reply_uuid": st.uuids().map(str) | json_values},
    )


packet_ids = st.sampled_from([*packets.REQUEST_SHAPES, packets.BOOLEAN, packets.UPLOAD_FINISH])
shaped_frames = packet_ids.flatmap(envelope_for).map(json.dumps)


def with_number(digits: str) -> str:
    """A well-formed upload-start whose size is written as `digits`, verbatim."""
    head = json.dumps({"id": packets.UPLOAD_START, "uuid": str(uuid.uuid4())})[:-1]
    return head + ', "data": {"size": ' + digits + "}}"


raw_frames = st.one_of(
    st.integers(1_000, 200_000).map(lambda depth: "[" * depth),
    st.integers(1_000, 50_000).map(lambda depth: '{"a":' * depth),
    st.integers(21, 20_000).map(lambda n: with_number("9" * n)),
    st.sampled_from(["NaN", "-Infinity", "1e999", "-0", "0.0", "1" + "0" * 400 + ".5"]).map(
        with_number
    ),
    st.text(st.characters(codec="utf-8")),
    json_values.map(json.dumps),
)
frames = shaped_frames | raw_frames


@given(frames)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_decoding_raises_only_malformed_packet(text: str) -> None:
    try:
        incoming = packets.decode_request(text)
    except packets.MalformedPacket:
        return
    # a request that decodes can always be answered, even naming its odd values
    problems = "; ".join(incoming.request.problems) or None
    outgoing.check_outgoing(outgoing.reply(incoming.uuid, problems is None, problems))


@pytest.fixture
async def live(start_service: HarnessFactory) -> Harness:
    """One service for every example: the point is that it survives them all."""
    return await start_service()


@given(sent=st.lists(frames, min_size=1, max_size=4))
@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
async def test_the_link_survives_any_frame(live: Harness, sent: list[str]) -> None:
    for text in sent:
        await live.link.send_raw(text)
    await live.link.abort()  # answered after every frame before it: drops a job they started
    assert await live.configure() == {"success": True}
    assert (await live.link.start_upload(size=1))[1] == {"success": True}
    assert await live.link.abort() == {"success": True}
    assert live.service.slots[0].link.reconnects == 0
    # and the `manager` fixture checks that every packet the service sent was valid

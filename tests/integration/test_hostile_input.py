"""Generated hostile input: never a 500, never an unhandled exception, never a state change."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from typing import Any

import aiohttp
import httpx
import pytest
from conftest import SMALL_CHUNK, Harness, post_chunk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.jobs.job import Job
from service.local.driver import raw_chunk_body
from service.manager import packets

HYPOTHESIS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SIZE = 2 * SMALL_CHUNK + 10


def snapshot(job: Job) -> tuple[object, ...]:
    return (sorted(job.stored), sorted(job.in_flight), job.ended)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)
packet_ids = st.sampled_from(
    [
        packets.CONFIGURATION,
        packets.UPLOAD_START,
        packets.UPLOAD_ABORT,
        packets.UPLOAD_FINISH,
        "generic:boolean",
        "s2u:nope",
        "S2U:upload-start",
        "",
    ]
)


@st.composite
def frames(draw: st.DrawFn) -> str:
    """Frames near the protocol: right ids with wrong data, wrong ids, junk envelopes."""
    frame: dict[str, object] = draw(
        st.dictionaries(st.sampled_from(["id", "uuid", "data", "reply_uuid", "x"]), json_values)
    )
    if draw(st.booleans()):
        frame["id"] = draw(packet_ids)
        frame["uuid"] = draw(st.sampled_from([str(uuid.uuid4()), str(uuid.uuid4()).upper(), 7]))
    if draw(st.booleans()):
        frame["data"] = draw(
            st.dictionaries(
                st.sampled_from(
                    [
                        "name",
                        "path",
                        "size",
                        "client",
                        "upload_id",
                        "chunk_size",
                        "crypto",
                        "discord_bot_token",
                        "discord_channel_id",
                    ]
                ),
                json_values,
            )
        )
    return json.dumps(frame)


@st.composite
def chunk_posts(draw: st.DrawFn, upload_id: str) -> tuple[dict[str, str], bytes]:
    """A chunk POST that is right, slightly wrong, or badly wrong in one or more ways."""
    index = draw(st.sampled_from(["0", "1", "2", "3", "-1", "01", "1e1", "", "x" * 2000]))
    expected = SMALL_CHUNK if index in ("0", "1", "01") else 10
    length = draw(st.sampled_from([expected, expected - 1, expected + 1, 0]))
    chosen_id = draw(st.sampled_from([upload_id, str(uuid.uuid4()), "", "'; DROP"]))
    content_type, body = raw_chunk_body(chosen_id, 0, os.urandom(length))
    body = body.replace(b'name="chunk"\r\n\r\n0', b'name="chunk"\r\n\r\n' + index.encode())
    mangle = draw(
        st.sampled_from(
            [
                "none",
                "truncate",
                "no-boundary",
                "not-multipart",
                "extra-parts",
                "garbage-prefix",
                "huge-header",
            ]
        )
    )
    if mangle == "truncate":
        body = body[: draw(st.integers(0, len(body) - 1))]
    elif mangle == "no-boundary":
        content_type = "multipart/form-data"
    elif mangle == "not-multipart":
        content_type = "application/octet-stream"
    elif mangle == "extra-parts":
        boundary = content_type.split("boundary=")[1]
        extra = f'--{boundary}\r\nContent-Disposition: form-data; name="x"\r\n\r\ny\r\n'
        body = extra.encode() * draw(st.integers(1, 12)) + body
    elif mangle == "garbage-prefix":
        body = os.urandom(draw(st.integers(1, 64))) + body
    elif mangle == "huge-header":
        body = body.replace(b"Content-Type: application/octet-stream", b"X-Pad: " + b"a" * 9000, 1)
    return {"Content-Type": content_type}, body


async def test_the_chunk_endpoint_never_fails_on_generated_input(
    harness: Harness, client: httpx.AsyncClient
) -> None:
    upload_id = await harness.start(SIZE)
    job = harness.service.directory.find(upload_id).job
    loop = asyncio.get_running_loop()

    async def send(headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        response = await client.post(harness.address, content=body, headers=headers)
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        return response.status_code, response.content

    statuses: set[int] = set()

    @HYPOTHESIS
    @given(post=chunk_posts(upload_id))
    def check(post: tuple[dict[str, str], bytes]) -> None:
        before = snapshot(job)
        status, answer = asyncio.run_coroutine_threadsafe(send(*post), loop).result()
        statuses.add(status)
        assert status < 500, answer
        if status != 200:
            assert json.loads(answer)["error"]
            assert snapshot(job) == before

    await asyncio.to_thread(check)  # hypothesis drives the service's loop from a thread
    assert {400, 404} <= statuses  # the generator reached the refusals it aims at
    # whatever was thrown at it, the job still completes
    data = os.urandom(SIZE)
    for index in range(3):
        if index not in job.stored:
            chunk = data[index * SMALL_CHUNK : (index + 1) * SMALL_CHUNK]
            response = await post_chunk(client, harness.address, upload_id, index, chunk)
            assert response.status_code == 200
    assert (await harness.link.next_finish())["success"] is True


async def test_generated_frames_over_the_link_change_nothing(harness: Harness) -> None:
    loop = asyncio.get_running_loop()

    @HYPOTHESIS
    @given(text=frames())
    def check(text: str) -> None:
        asyncio.run_coroutine_threadsafe(harness.link.send_raw(text), loop).result()

    await asyncio.to_thread(check)
    # no frame started, configured away or aborted anything: the service is as it was
    assert (await harness.link.abort())["success"] is False
    await harness.start(1)


async def test_huge_bodies_are_refused_without_memory_growing(harness: Harness) -> None:
    """Stays on aiohttp's client, which stops sending once the 413 arrives: httpx reads no
    answer before its body is sent, and would push each declared GiB in full. The 413
    itself, for both framings, is checked with httpx in test_intake.py. Memory is measured
    by what the service read: the pytest process's peak RSS says nothing of it."""
    upload_id = await harness.start(SIZE)

    async def huge(chunked: bool) -> int:
        async def body() -> Any:
            _, head = raw_chunk_body(upload_id, 0, b"")
            yield head[: head.rfind(b"\r\n--")]
            for _ in range(1024):  # up to 1 GiB, far more than the service may read
                yield bytes(1024 * 1024)

        headers = {"Content-Type": raw_chunk_body(upload_id, 0, b"")[0]}
        if not chunked:
            headers["Content-Length"] = str(1024**3)
        try:
            async with harness.http.post(harness.address, data=body(), headers=headers) as r:
                return r.status
        except aiohttp.ClientError:
            pytest.fail("the service dropped the connection instead of answering 413")

    registry = harness.service.metrics.registry
    before = registry.get_sample_value("upload_received_bytes_total") or 0
    statuses = [await huge(chunked) for chunked in (False, True, False, True)]
    assert statuses == [413] * 4
    # Of the 4 GiB offered, the service read (so could hold) little more than a chunk's
    # worth of each body: a declared length is refused before its body, a chunked body once
    # it has passed the limit.
    read = (registry.get_sample_value("upload_received_bytes_total") or 0) - before
    assert read < 4 * 1024 * 1024, f"the service read {read} bytes of the huge bodies"

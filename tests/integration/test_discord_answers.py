"""Whatever a 2xx from Discord (or a proxy in front of it) holds, a chunk counts as stored
only when the answer shows it stored: the client gets 200 or a JSON 502, never a bare 500,
every packet the service sends stays valid, and the job completes afterwards."""

from __future__ import annotations

import asyncio
import itertools
import json
import os

from conftest import Harness, reassembled
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.local.discord_api import Fault

CHUNK = 1024
EXAMPLES = 25  # each costs a retry (0.5 s): the same nonce then finds the message
HYPOTHESIS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
# Messages that look almost right: every field of the faithful answer, of any type.
ALMOST = st.fixed_dictionaries(
    {
        "id": st.none() | st.integers() | st.text(max_size=25) | st.just("1" * 18),
        "attachments": st.none()
        | st.text(max_size=5)
        | st.lists(st.fixed_dictionaries({"size": JSON}) | JSON, max_size=2),
    }
)
BODIES = st.one_of(
    st.tuples(st.just("application/json"), ALMOST.map(lambda m: json.dumps(m).encode())),
    st.tuples(st.just("application/json"), JSON.map(lambda v: json.dumps(v).encode())),
    st.tuples(st.sampled_from(["application/json", "text/html", "text/plain"]), st.binary()),
)


async def test_arbitrary_2xx_bodies_never_count_as_stored_nor_escape_as_500(
    harness: Harness,
) -> None:
    chunks = EXAMPLES + 5
    data = os.urandom(chunks * CHUNK)
    upload_id = await harness.start(len(data), chunk_size=CHUNK)
    loop = asyncio.get_running_loop()
    indexes = itertools.count()
    statuses: set[int] = set()

    async def post_with_odd_answer(body: tuple[str, bytes]) -> tuple[int, str]:
        harness.discord.inject(Fault(body=body))
        index = next(indexes)
        status, text = await harness.post(upload_id, index, data[index * CHUNK :][:CHUNK])
        return status, text

    @HYPOTHESIS
    @given(body=BODIES)
    def check(body: tuple[str, bytes]) -> None:
        status, text = asyncio.run_coroutine_threadsafe(post_with_odd_answer(body), loop).result()
        statuses.add(status)
        assert status in (200, 502), text
        if status == 502:
            assert json.loads(text)["error"]

    await asyncio.to_thread(check)
    assert 200 in statuses  # the retry with the same nonce found the message
    for index in range(chunks):  # whatever was refused is sent again, as the browser does
        assert (await harness.post(upload_id, index, data[index * CHUNK :][:CHUNK]))[0] == 200
    finish = await harness.link.next_finish()
    assert finish["success"] is True
    assert reassembled(harness.discord, finish) == data

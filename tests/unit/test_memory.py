"""The chunk memory budget without sockets: reservations, waiting, reuse and the default."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from service.chunks.sealing import buffer_size
from service.jobs.layout import MANAGER_CHUNK_SIZE
from service.metrics import Metrics
from service.refusals import MemoryBusy
from service.uploads.memory import BASELINE, ChunkMemory, cgroup_memory_limit, default_budget

MIB = 1024 * 1024
ONE = buffer_size(MANAGER_CHUNK_SIZE)


def memory(budget: int) -> ChunkMemory:
    return ChunkMemory(budget, Metrics([], []))


async def test_a_returned_buffer_of_the_same_size_is_reused() -> None:
    chunks = memory(3 * 100)
    first = await chunks.take(100, owner="a", wait=0)
    first.give_back()
    assert (await chunks.take(100, owner="a", wait=0)).buffer is first.buffer
    assert chunks.in_use == 100


async def test_a_buffer_a_failed_post_may_still_read_is_not_reused() -> None:
    chunks = memory(300)
    first = await chunks.take(100, owner="a", wait=0)
    first.reusable = False
    first.give_back()
    assert (await chunks.take(100, owner="a", wait=0)).buffer is not first.buffer


async def test_a_buffer_is_given_back_once() -> None:
    chunks = memory(100)
    taken = await chunks.take(100, owner="a", wait=0)
    taken.give_back()
    taken.give_back()
    assert chunks.reserved == 0 and chunks.held_by("a") == 0


async def test_a_chunk_waits_for_memory_and_gets_it_when_another_gives_it_back() -> None:
    metrics = Metrics([], [])
    chunks = ChunkMemory(200, metrics)
    held = [await chunks.take(100, owner="a", wait=0), await chunks.take(100, owner="a", wait=0)]
    waiting = asyncio.create_task(chunks.take(100, owner="a", wait=30))
    await asyncio.sleep(0)
    assert not waiting.done()
    assert gauge(metrics, "upload_chunks_waiting_for_memory") == 1
    assert gauge(metrics, "upload_chunk_memory_bytes") == 200
    assert gauge(metrics, "upload_chunk_memory_budget_bytes") == 200
    held.pop().give_back()
    assert len((await waiting).buffer) == 100
    assert chunks.in_use == 200
    assert gauge(metrics, "upload_chunks_waiting_for_memory") == 0


def gauge(metrics: Metrics, name: str) -> float | None:
    return metrics.registry.get_sample_value(name)


async def test_a_chunk_that_waits_too_long_is_told_when_to_come_back() -> None:
    chunks = memory(100)
    await chunks.take(100, owner="a", wait=0)
    with pytest.raises(MemoryBusy) as refused:
        await chunks.take(100, owner="a", wait=0.01)
    assert refused.value.retry_after is not None and refused.value.retry_after > 0


async def test_idle_buffers_are_dropped_before_a_new_chunk_waits() -> None:
    chunks = memory(200)
    for buffer in [
        await chunks.take(100, owner="a", wait=0),
        await chunks.take(100, owner="a", wait=0),
    ]:
        buffer.give_back()
    assert chunks.in_use == 200
    other = await chunks.take(150, owner="a", wait=0)  # another size: the idle ones make room
    assert len(other.buffer) == 150 and chunks.in_use <= 200


async def test_freed_memory_goes_to_the_upload_holding_the_fewest_buffers() -> None:
    chunks = memory(3 * 100)
    flood = [await chunks.take(100, owner="flood", wait=0) for _ in range(3)]
    first = asyncio.create_task(chunks.take(100, owner="flood", wait=30))
    await asyncio.sleep(0)
    later = asyncio.create_task(chunks.take(100, owner="other", wait=30))
    await asyncio.sleep(0)
    flood.pop().give_back()
    await asyncio.sleep(0)
    assert later.done() and not first.done()  # "other" held none, "flood" 2
    flood.pop().give_back()
    await first
    assert chunks.held_by("flood") == 2 and chunks.held_by("other") == 1


async def test_a_chunk_first_in_line_that_gives_up_lets_the_ones_behind_it_in() -> None:
    chunks = memory(3 * 100)
    await chunks.take(100, owner="a", wait=0)
    large = asyncio.create_task(chunks.take(250, owner="large", wait=0.01))
    await asyncio.sleep(0)
    small = asyncio.create_task(chunks.take(100, owner="small", wait=30))
    await asyncio.sleep(0)
    assert not small.done()  # first come, first served: it waits behind the large one
    with pytest.raises(MemoryBusy):
        await large
    assert len((await small).buffer) == 100  # the 200 free bytes were there all along


async def test_a_newcomer_waits_behind_chunks_already_waiting() -> None:
    chunks = memory(2 * 100)
    held = [await chunks.take(100, owner="a", wait=0) for _ in range(2)]
    waiting = asyncio.create_task(chunks.take(100, owner="b", wait=30))
    await asyncio.sleep(0)
    held.pop().give_back()
    with pytest.raises(MemoryBusy):  # the freed buffer is the waiting chunk's
        await chunks.take(100, owner="c", wait=0.01)
    assert len((await waiting).buffer) == 100


async def test_an_upload_holding_five_buffers_gets_more_only_from_spare_memory() -> None:
    chunks = memory(11 * 100)
    for _ in range(5):
        await chunks.take(100, owner="flood", wait=0)
    await chunks.take(100, owner="flood", wait=0)  # 5 of 11 stay free after it: a burst
    with pytest.raises(MemoryBusy) as refused:  # only 4 would stay: another browser's 5
        await chunks.take(100, owner="flood", wait=30)
    assert "kept for other uploads" in str(refused.value)
    assert chunks.held_by("flood") == 6
    others = [await chunks.take(100, owner="other", wait=0) for _ in range(5)]
    assert len(others) == 5 and chunks.reserved == 1100


async def test_a_buffer_is_kept_for_each_upload_under_way_that_holds_none() -> None:
    chunks = memory(4 * 100)
    for owner in ("busy", "new", "later"):
        chunks.begin(owner, 100)
    for _ in range(2):
        await chunks.take(100, owner="busy", wait=0)
    with pytest.raises(MemoryBusy):  # the last 2 are kept for "new" and "later"
        await chunks.take(100, owner="busy", wait=0.01)
    assert await chunks.take(100, owner="new", wait=0)  # a new job begins at once
    chunks.end("later")  # its buffer is no longer kept: "busy" may have it
    assert await chunks.take(100, owner="busy", wait=0)


async def test_the_buffer_kept_for_an_upload_is_the_size_of_its_own_buffers() -> None:
    chunks = memory(4 * 100)
    chunks.begin("small", 100)
    chunks.begin("large", 300)
    await chunks.take(100, owner="small", wait=0)
    with pytest.raises(MemoryBusy):  # 300 are kept for "large", not 100
        await chunks.take(100, owner="small", wait=0.01)
    assert await chunks.take(300, owner="large", wait=0)


async def test_an_upload_alone_may_take_the_whole_budget() -> None:
    chunks = memory(5 * 100)
    chunks.begin("only", 100)
    taken = [await chunks.take(100, owner="only", wait=0) for _ in range(5)]
    assert len(taken) == 5 and chunks.reserved == 500


async def test_a_grant_that_comes_as_its_wait_is_cancelled_is_passed_on() -> None:
    chunks = memory(100)
    held = await chunks.take(100, owner="a", wait=0)
    gone = asyncio.create_task(chunks.take(100, owner="b", wait=30))
    await asyncio.sleep(0)
    after = asyncio.create_task(chunks.take(100, owner="c", wait=30))
    await asyncio.sleep(0)
    held.give_back()  # granted to "b" ...
    gone.cancel()  # ... whose client went away before it could run
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert await after and chunks.held_by("b") == 0 and chunks.reserved == 100


def test_default_budget_fits_five_chunks_per_slot_without_a_memory_limit() -> None:
    assert default_budget(slots=4, limit=None) == 4 * 5 * ONE


def test_default_budget_stays_within_a_cgroup_limit() -> None:
    limit = 384 * MIB
    budget = default_budget(slots=8, limit=limit)
    assert budget == int((limit - BASELINE) * 0.8)
    assert BASELINE + budget < limit
    assert default_budget(slots=1, limit=100 * MIB) == ONE  # never less than one chunk


@pytest.mark.parametrize(
    ("v2", "v1", "limit"),
    [
        pytest.param("402653184\n", None, 402653184, id="cgroup-v2-limit"),
        pytest.param("max\n", None, None, id="cgroup-v2-unlimited"),
        pytest.param(None, "9223372036854771712\n", None, id="cgroup-v1-unlimited"),
        pytest.param(None, "268435456\n", 268435456, id="cgroup-v1-limit"),
        pytest.param(None, None, None, id="no-cgroup-files"),
    ],
)
def test_the_cgroup_memory_limit_is_read_from_v2_or_v1(
    tmp_path: Path, v2: str | None, v1: str | None, limit: int | None
) -> None:
    paths = (tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes")
    for path, text in zip(paths, (v2, v1), strict=True):
        if text is not None:
            path.write_text(text)
    assert cgroup_memory_limit(paths) == limit


async def test_a_wait_that_times_out_in_the_turn_memory_frees_leaves_the_budget_whole() -> None:
    """A busy loop lets a waiting chunk's timeout and the give that would serve it fall due
    in one turn: the timeout cancels the wait first, then the give must not grant it."""
    chunks = memory(100)
    held = await chunks.take(100, owner="a", wait=0)
    wait = 0.2
    waiting = asyncio.create_task(chunks.take(100, owner="b", wait=wait))
    await asyncio.sleep(0)

    async def give_back() -> None:  # wakes one turn after its timer, as a task does
        await asyncio.sleep(wait * 0.9)
        held.give_back()

    giver = asyncio.create_task(give_back())
    await asyncio.sleep(0)
    busy = wait * 1.5  # both timers fall due while the loop is busy sealing a chunk
    asyncio.get_running_loop().call_soon(time.sleep, busy)
    await giver  # without the fix: InvalidStateError
    with pytest.raises(MemoryBusy):
        await waiting
    assert chunks.reserved == 0 and chunks.held_by("b") == 0
    assert await chunks.take(100, owner="c", wait=0)


async def test_a_wait_cancelled_in_the_turn_memory_frees_is_not_granted() -> None:
    chunks = memory(100)
    held = await chunks.take(100, owner="a", wait=0)
    gone = asyncio.create_task(chunks.take(100, owner="b", wait=30))
    await asyncio.sleep(0)
    gone.cancel()  # its client went away (or the service stops) ...
    held.give_back()  # ... in the turn "a" gives memory back
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert chunks.reserved == 0
    assert await chunks.take(100, owner="c", wait=0)


def test_a_buffer_the_kernel_refuses_gives_its_reservation_back() -> None:
    """Address space limited (RLIMIT_AS, in a process of its own): mapping a buffer fails
    after its memory was reserved, and the reservation must not be lost with it."""
    program = """
import asyncio, resource
from service.metrics import Metrics
from service.uploads.memory import ChunkMemory

GIB = 1024**3
resource.setrlimit(resource.RLIMIT_AS, (4 * GIB, 4 * GIB))

async def main():
    chunks = ChunkMemory(16 * GIB, Metrics([], []))
    try:
        await chunks.take(8 * GIB, owner="a", wait=0)
    except OSError:
        pass
    assert chunks.reserved == 0 and chunks.held_by("a") == 0, chunks.reserved
    print("ok")

asyncio.run(main())
"""
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout.strip() == "ok", done.stderr

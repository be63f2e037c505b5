"""The gate's order when the global limit is short: each channel's window opens first."""

from __future__ import annotations

import asyncio

from service.discord.gate import PaceGate
from service.discord.pacing import GlobalLimit, Pacer, RateHeaders


async def test_when_places_are_short_every_channel_opens_its_window_before_any_fills_one() -> None:
    """Posts to three channels arrive in bursts, three per channel; three places come free:
    one post per channel goes, so that each channel's window starts now, not later."""
    pacer = Pacer(GlobalLimit(3))
    now = asyncio.get_running_loop().time()
    for number, channel in enumerate("ABC"):  # each channel's limit known, its window over
        assert pacer.try_take(channel, now - 3.0)
        pacer.answered(channel, now - 3.0, RateHeaders(5, 4, 0.5, 100.0 + number))
    gate = PaceGate(pacer)
    gate.hold(None, 0.05)  # nothing goes until the queue has formed
    posts = {asyncio.create_task(gate.enter(channel, 30.0)): channel for channel in "AAABBBCCC"}

    for count, done in enumerate(asyncio.as_completed(posts), 1):
        await done
        if count == 3:  # no more places for a second
            break
    went = sorted(channel for task, channel in posts.items() if task.done())
    assert went == ["A", "B", "C"]
    for task in posts:
        task.cancel()
    gate.close()

"""The pacer without sockets: against a model of Discord's limits, it never over-grants.

`Discord` below judges requests the way Discord does (PROTOCOL.md section 3): a fixed window
per channel that opens with the first request after the previous one ended, and answers
whose headers report it. `simulate` plays requests through a `Pacer` and that model, in
simulated time, with whatever latencies hypothesis picks.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from conftest import CHANNEL
from hypothesis import given, settings
from hypothesis import strategies as st

from service.discord.pacing import COUNT_MARGIN, Bucket, GlobalLimit, Pacer, RateHeaders
from service.local.discord_api.ratelimit import busiest_second


@dataclass
class Discord:
    """One channel's bucket as Discord keeps it; its clock is ours plus `offset`."""

    limit: int
    window: float
    offset: float = 1_700_000_000.0
    ends: float = -math.inf
    used: int = 0
    refused: int = 0

    def judge(self, now: float) -> tuple[bool, RateHeaders]:
        if now >= self.ends:
            self.ends, self.used = now + self.window, 0
        admitted = self.used < self.limit
        self.used += admitted
        self.refused += not admitted
        reset_after = math.ceil((self.ends - now) * 1000) / 1000  # Discord rounds to ms
        reset = round(self.ends + self.offset, 3)
        return admitted, RateHeaders(self.limit, self.limit - self.used, reset_after, reset)


@dataclass(frozen=True)
class Request:
    up: float  # from its start until Discord judges it
    down: float  # from the judgement until its answer is in


@dataclass
class Run:
    answered: list[float] = field(default_factory=list)  # when each answer came in
    judged: list[float] = field(default_factory=list)  # when Discord counted each request


def simulate(
    discord: Discord,
    requests: Sequence[Request],
    *,
    concurrency: int = 5,
    pacer: Pacer | None = None,
    headers: bool = True,
) -> Run:
    """Play `requests` in order, `concurrency` at a time, through a pacer and `discord`.

    A refused request is held for the retry_after of its 429, then sent again."""
    pacer = pacer or Pacer(GlobalLimit(50))
    run = Run()
    events: list[tuple[float, int, str, int]] = []  # (time, order, what, request index)
    order = 0
    waiting = list(range(min(concurrency, len(requests))))
    following = len(waiting)
    admitted: dict[int, tuple[bool, RateHeaders]] = {}
    now = 0.0
    while waiting or events:
        while waiting and pacer.try_take(CHANNEL, now):
            index = waiting.pop(0)
            judge_at = now + requests[index].up
            heapq.heappush(events, (judge_at, order := order + 1, "judge", index))
        wake = pacer.wake_at(CHANNEL, now)
        if events and (wake is None or events[0][0] <= wake):
            now, _, what, index = heapq.heappop(events)
        elif wake is not None:
            now = wake
            continue
        else:
            raise AssertionError(f"the pacer holds {waiting} for ever")
        if what == "judge":
            admitted[index] = discord.judge(now)
            run.judged.append(now)
            answer_at = now + requests[index].down
            heapq.heappush(events, (answer_at, order := order + 1, "answer", index))
            continue
        counted, state = admitted.pop(index)
        pacer.answered(CHANNEL, now, state if headers else None, counted=counted)
        run.answered.append(now)
        if not counted:
            pacer.hold(CHANNEL, now + state.reset_after)
            waiting.insert(0, index)
        elif following < len(requests):
            waiting.append(following)
            following += 1
    return run


latency = st.floats(min_value=0.0, max_value=0.4)
requests = st.lists(st.builds(Request, up=latency, down=latency), min_size=1, max_size=40)


@settings(max_examples=300, deadline=None)
@given(
    limit=st.integers(1, 6),
    window=st.floats(min_value=0.2, max_value=3.0),
    requests=requests,
    concurrency=st.integers(1, 8),
)
def test_no_request_is_ever_refused_whatever_the_latencies(
    limit: int, window: float, requests: list[Request], concurrency: int
) -> None:
    discord = Discord(limit, window)
    run = simulate(discord, requests, concurrency=concurrency)
    assert discord.refused == 0
    assert len(run.answered) == len(requests)


@settings(max_examples=200, deadline=None)
@given(limit=st.integers(1, 6), window=st.floats(min_value=0.2, max_value=3.0), requests=requests)
def test_answers_without_headers_never_hold_a_channel_for_ever(
    limit: int, window: float, requests: list[Request]
) -> None:
    # Headers at first (the limit is learnt), then none: the pacer still finishes.
    pacer = Pacer(GlobalLimit(50))
    assert pacer.try_take(CHANNEL, -window)
    pacer.answered(CHANNEL, -window, RateHeaders(limit, limit - 1, window, 1000.0))
    discord = Discord(limit, window)
    run = simulate(discord, requests, pacer=pacer, headers=False)
    assert len(run.answered) - discord.refused == len(requests)


def test_a_burst_at_the_window_edge_is_paced_to_the_bucket() -> None:
    """30 posts, 5 at once, 5 per window: six windows, each used to the full, no 429."""
    discord = Discord(limit=5, window=2.0)
    run = simulate(discord, [Request(0.01, 0.01)] * 30)
    assert discord.refused == 0
    # The first window opens with the first post; the sixth holds the last five posts, and
    # their answers come in as soon as Discord has judged them.
    assert max(run.answered) <= 1.05 * 5 * 2.0


def test_the_first_answer_of_a_window_cannot_raise_the_count_above_what_was_spent() -> None:
    bucket = Bucket()
    assert bucket.room(0.0) == 1  # the limit is not known yet: one request probes it
    bucket.take()
    bucket.answered(0.05, RateHeaders(5, 4, 1.0, 100.0), counted=True)
    for _ in range(4):
        bucket.take()
    assert bucket.room(0.1) == 0
    for _ in range(4):
        bucket.answered(0.2, RateHeaders(5, 0, 0.85, 100.0), counted=True)
    # The window ends: five go out before any answer of the new window comes in ...
    assert bucket.room(1.1) == 5
    for _ in range(5):
        bucket.take()
    # ... and the first answer of the new window says 4 remain: discord.py believed it.
    bucket.answered(1.2, RateHeaders(5, 4, 0.99, 101.1), counted=True)
    assert bucket.room(1.2) == 0


def test_requests_in_flight_at_the_edge_are_charged_to_the_next_window() -> None:
    bucket = Bucket()
    bucket.take()
    bucket.answered(0.0, RateHeaders(3, 2, 1.0, 100.0), counted=True)
    bucket.take()
    bucket.take()  # both in flight when the window ends
    assert bucket.room(1.0) == 1
    # One of them counted in the old window after all: its place is given back.
    bucket.answered(1.01, RateHeaders(3, 0, 0.001, 100.0), counted=True)
    assert bucket.room(1.01) == 2
    # The other counted in the new window, which a fresh answer names.
    bucket.answered(1.02, RateHeaders(3, 2, 1.0, 101.0), counted=True)
    assert bucket.room(1.02) == 2


def test_a_new_window_seen_before_the_old_one_was_thought_over_starts_the_count_again() -> None:
    bucket = Bucket()
    bucket.take()
    # The probe's answer took 0.2 s to come in: the window is thought to end at 1.2, not 1.0.
    bucket.answered(0.5, RateHeaders(3, 2, 0.7, 100.0), counted=True)
    bucket.take()
    bucket.take()
    # One of those two counted in the next window, and its answer came in quickly.
    bucket.answered(1.05, RateHeaders(3, 2, 0.96, 101.0), counted=True)
    assert (bucket.window, bucket.spent, bucket.remaining) == (101.0, 2, 2)
    assert bucket.room(1.05) == 1
    bucket.answered(1.06, RateHeaders(3, 1, 0.95, 101.0), counted=True)
    assert bucket.room(1.06) == 1


def test_a_429_holds_the_channel_for_its_retry_after() -> None:
    pacer = Pacer(GlobalLimit(50))
    assert pacer.try_take(CHANNEL, 0.0)
    pacer.answered(CHANNEL, 0.1, None, counted=False)
    pacer.hold(CHANNEL, 2.1)
    assert not pacer.try_take(CHANNEL, 0.2)
    assert pacer.delay(CHANNEL, 0.2) == 2.1 - 0.2
    assert pacer.try_take("1100000000000000002", 0.2)  # other channels go on
    assert not pacer.try_take(CHANNEL, 2.0)
    assert pacer.try_take(CHANNEL, 2.1)


def test_a_429_with_the_buckets_headers_holds_for_its_own_wait_not_the_windows() -> None:
    pacer = Pacer(GlobalLimit(50))
    assert pacer.try_take(CHANNEL, 0.0)
    pacer.answered(CHANNEL, 0.1, RateHeaders(10_000, 9_999, 5.0, 100.0), counted=False)
    pacer.hold(CHANNEL, 0.9)
    assert pacer.delay(CHANNEL, 0.1) == 0.9 - 0.1


def test_a_full_window_with_nothing_in_flight_waits_for_its_end() -> None:
    pacer = Pacer(GlobalLimit(50))
    assert pacer.try_take(CHANNEL, 0.0)
    pacer.answered(CHANNEL, 0.1, RateHeaders(1, 0, 4.0, 100.0))
    assert pacer.delay(CHANNEL, 0.1) == pytest.approx(4.0)
    assert pacer.buckets[CHANNEL].wake_at(0.1) == pytest.approx(4.1)


def test_a_global_429_holds_every_channel() -> None:
    pacer = Pacer(GlobalLimit(50))
    pacer.hold(None, 1.0)
    assert not pacer.try_take(CHANNEL, 0.5)
    assert not pacer.try_take(None, 0.5)
    assert pacer.delay("1100000000000000002", 0.5) == 0.5
    assert pacer.try_take(CHANNEL, 1.0)


def test_a_request_granted_but_not_sent_gives_its_place_back() -> None:
    pacer = Pacer(GlobalLimit(1))
    assert pacer.try_take(CHANNEL, 0.0)
    assert not pacer.try_take(None, 0.0)
    pacer.untake(CHANNEL)
    assert pacer.try_take(None, 0.0)


@dataclass(frozen=True)
class Call:
    start: float  # when the caller wants to send it
    written: float  # when, between its start and its answer, its last byte is written (0..1)
    judged: float  # where, between its start and the last moment it can, Discord counts it
    duration: float  # from its start to its answer


WRITTEN, ANSWERED = 0, 1  # a last byte written comes before an answer at the same moment


def play(limit: GlobalLimit, calls: list[Call]) -> list[float]:
    """Send `calls` in order of their starts as `limit` allows; when Discord counted each:
    at the latest when its last byte has arrived (COUNT_MARGIN after it was written), or
    when it was answered, or, if the limit was careful when it was written, at any moment
    before its answer."""
    calls = sorted(calls, key=lambda call: call.start)
    events: list[tuple[float, int, int]] = []  # (time, WRITTEN or ANSWERED, order)
    released: dict[int, float | None] = {}
    counted: list[float] = []
    now = 0.0

    def handle(event: tuple[float, int, int]) -> None:
        at, what, order = event
        if what == WRITTEN:
            released[order] = limit.written(at)
        else:
            limit.answered(at, released=released.pop(order))

    for order, call in enumerate(calls):
        now = max(now, call.start)
        while events and events[0][0] <= now:
            handle(heapq.heappop(events))
        while limit.room(now) <= 0:
            wake = limit.wake_at(now)
            if events and (wake is None or events[0][0] <= wake):
                now = events[0][0]
                handle(heapq.heappop(events))
            else:
                assert wake is not None
                now = wake
        limit.take(now)
        written, answered = now + call.written * call.duration, now + call.duration
        careful = written < limit.careful_until  # when its last byte goes, the rule it gets
        latest = answered if careful else min(answered, written + COUNT_MARGIN)
        counted.append(now + call.judged * (latest - now))
        heapq.heappush(events, (written, WRITTEN, order))
        heapq.heappush(events, (answered, ANSWERED, order))
    return sorted(counted)


fraction = st.floats(min_value=0.0, max_value=1.0)
calls = st.lists(
    st.builds(
        Call,
        start=st.floats(min_value=0.0, max_value=3.0),
        written=fraction,
        judged=fraction,
        duration=st.floats(min_value=0.0, max_value=1.5),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(rate=st.integers(1, 12), calls=calls)
def test_no_second_of_discords_clock_sees_more_than_the_global_rate(
    rate: int, calls: list[Call]
) -> None:
    """Requests to many channels, wherever before their last byte arrives Discord counts
    them, however long it takes to answer."""
    assert busiest_second(play(GlobalLimit(rate), calls)) <= rate


@settings(max_examples=200, deadline=None)
@given(rate=st.integers(1, 12), calls=calls, careful_for=st.floats(0.0, 4.0))
def test_while_careful_the_rate_holds_wherever_before_the_answer_discord_counts(
    rate: int, calls: list[Call], careful_for: float
) -> None:
    limit = GlobalLimit(rate)
    limit.be_careful(careful_for)
    assert busiest_second(play(limit, calls)) <= rate


def test_a_place_frees_a_second_after_the_last_byte_not_after_the_answer() -> None:
    """Discord answers a post once it has stored its attachment, U seconds after counting
    it: the place is free again a second after the post's last byte, whatever U."""
    limit = GlobalLimit(1)
    limit.take(0.0)
    assert limit.room(0.0) == 0
    frees = limit.written(0.2)
    assert frees == pytest.approx(0.2 + COUNT_MARGIN + 1.0)
    assert limit.answered(2.0, released=frees) is None  # answered 1.8 s after its last byte
    assert limit.wake_at(0.5) == pytest.approx(1.2 + COUNT_MARGIN)
    assert limit.room(1.2 + COUNT_MARGIN) == 1


def test_while_careful_a_place_frees_only_a_second_after_the_answer() -> None:
    limit = GlobalLimit(1)
    limit.be_careful(60.0)
    limit.take(0.0)
    assert limit.written(0.2) is None
    limit.answered(2.0, released=None)
    assert limit.room(2.9) == 0
    assert limit.room(3.0) == 1
    # Once careful counting is over, the last byte frees the place again.
    limit.take(61.0)
    assert limit.written(61.1) is not None


def test_an_answer_sooner_than_the_margin_frees_the_place_a_second_after_the_answer() -> None:
    """Discord counted the request by its answer at the latest."""
    limit = GlobalLimit(1)
    limit.take(0.0)
    frees = limit.written(0.2)
    assert limit.answered(0.21, released=frees) == pytest.approx(1.21)
    assert limit.room(1.2) == 0
    assert limit.room(1.21) == 1


def test_a_pacer_tells_when_the_last_byte_frees_the_place() -> None:
    pacer = Pacer(GlobalLimit(2))
    assert pacer.try_take(CHANNEL, 0.0)
    frees = pacer.written(0.1)
    assert frees == pytest.approx(0.1 + COUNT_MARGIN + 1.0)
    pacer.answered(CHANNEL, 0.5, RateHeaders(5, 4, 5.0, 100.0), released=frees)
    assert pacer.global_limit.room(0.5) == 1
    assert pacer.global_limit.room(1.15) == 2


def test_rate_headers_are_parsed_or_refused() -> None:
    headers = {
        "X-RateLimit-Limit": "5",
        "X-RateLimit-Remaining": "4",
        "X-RateLimit-Reset": "1470173023.123",
        "X-RateLimit-Reset-After": "1.5",
    }
    assert RateHeaders.parse(headers) == RateHeaders(5, 4, 1.5, 1470173023.123)
    assert RateHeaders.parse({**headers, "X-RateLimit-Reset": "soon"}) == RateHeaders(
        5, 4, 1.5, None
    )
    assert RateHeaders.parse({}) is None
    assert RateHeaders.parse({**headers, "X-RateLimit-Remaining": "-1"}) is None
    assert RateHeaders.parse({**headers, "X-RateLimit-Reset-After": "nan"}) is None


def test_a_request_that_opens_a_window_is_told_from_one_that_fills_an_open_window() -> None:
    pacer = Pacer(GlobalLimit(50))
    assert pacer.opens_window(CHANNEL, 0.0)  # nothing known: it would open one
    assert pacer.try_take(CHANNEL, 0.0)
    assert not pacer.opens_window(CHANNEL, 0.0)  # in the window it opened
    pacer.answered(CHANNEL, 0.1, RateHeaders(5, 4, 5.0, 100.0))
    assert not pacer.opens_window(CHANNEL, 5.0)
    assert pacer.opens_window(CHANNEL, 5.1)  # the window ended: the next opens one
    assert pacer.opens_window(None, 0.0)  # the login fills no channel's window

"""The chunk memory's rules on their own (`uploads/memory/policy.py`), as properties that hold
whatever uploads begin, end, take and give back, in any order."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from service.jobs.layout import BROWSER_CHUNKS_IN_FLIGHT
from service.uploads.memory.policy import Claim, MemoryPolicy

SIZE = 100  # one chunk buffer
OWNERS = ("a", "b", "c")
STEPS = ("begin", "end", "give", "take", "take", "take")  # takes are likelier: bursts happen
steps = st.lists(st.tuples(st.sampled_from(STEPS), st.sampled_from(OWNERS)), max_size=80)
budgets = st.integers(min_value=1, max_value=24).map(lambda buffers: buffers * SIZE)


def run(budget: int, plan: list[tuple[str, str]]) -> MemoryPolicy:
    """Play `plan`, taking only what the rules allow, checking the rules before every take."""
    policy = MemoryPolicy(budget)
    under_way: set[str] = set()
    for step, owner in plan:
        if step == "begin":
            policy.begin(owner, SIZE)
            under_way.add(owner)
        elif step == "end":
            policy.end(owner)
            under_way.discard(owner)
        elif step == "give" and policy.held_by(owner):
            policy.give(owner, SIZE)
        elif step == "take" and allowed(policy, owner):
            check_take(policy, owner, under_way)
            policy.take(owner, SIZE)
        assert 0 <= policy.reserved <= policy.budget
    return policy


def allowed(policy: MemoryPolicy, owner: str) -> bool:
    if policy.is_burst(owner):
        return policy.grants_burst(owner, SIZE, queued=False)
    return policy.allows(owner, SIZE)


def check_take(policy: MemoryPolicy, owner: str, under_way: set[str]) -> None:
    free_after = policy.budget - policy.reserved - SIZE
    if policy.is_burst(owner):  # never the last 5 buffers' worth
        assert free_after >= BROWSER_CHUNKS_IN_FLIGHT * SIZE
    if policy.held_by(owner):  # one kept for each other upload under way that holds none
        holding_none = [o for o in under_way if o != owner and not policy.held_by(o)]
        assert free_after >= len(holding_none) * SIZE


@given(budgets, steps)
def test_the_budget_is_never_exceeded(budget: int, plan: list[tuple[str, str]]) -> None:
    run(budget, plan)  # every step checks it


@given(budgets, steps)
def test_a_burst_waits_for_nobody_and_never_takes_the_last_five_buffers(
    budget: int, plan: list[tuple[str, str]]
) -> None:
    policy = run(budget, plan)
    for owner in OWNERS:
        if policy.is_burst(owner):
            assert not policy.grants_burst(owner, SIZE, queued=True)
            if policy.grants_burst(owner, SIZE, queued=False):
                free_after = policy.budget - policy.reserved - SIZE
                assert free_after >= BROWSER_CHUNKS_IN_FLIGHT * SIZE


@given(budgets, steps)
def test_an_upload_holding_no_buffer_may_take_whatever_is_free(
    budget: int, plan: list[tuple[str, str]]
) -> None:
    policy = run(budget, plan)
    for owner in OWNERS:
        if not policy.held_by(owner):
            assert policy.allows(owner, SIZE) == (policy.reserved + SIZE <= policy.budget)


@given(budgets, steps, st.lists(st.sampled_from(OWNERS), min_size=1, max_size=8))
def test_memory_goes_to_the_claim_whose_upload_holds_fewest_then_the_earliest(
    budget: int, plan: list[tuple[str, str]], claimants: list[str]
) -> None:
    policy = run(budget, plan)
    claims = [Claim(owner, SIZE, arrived) for arrived, owner in enumerate(claimants)]
    fewest = min(policy.held_by(c.owner) for c in claims)
    first = next(c for c in claims if policy.held_by(c.owner) == fewest)
    turn = policy.next_turn(reversed(claims))  # the order they are listed in does not matter
    assert turn == (first if policy.allows(first.owner, SIZE) else None)


def test_an_upload_alone_may_take_the_whole_budget() -> None:
    policy = run(5 * SIZE, [("begin", "a")] + [("take", "a")] * 6)
    assert policy.reserved == 5 * SIZE

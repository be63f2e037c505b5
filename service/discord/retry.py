"""How a request to Discord is tried again: one policy for a chunk's post, and for a clean-up's
deletes and channel search.

- A rate limit (429) is not a failure: the client holds what it names and sends the request
  again when the gate lets it, up to `rate_limited_tries` times in a row; a wait longer than
  the caller may be held for is `DiscordBusy`, which says when to come back.
- A failure that another try may mend (`DiscordFailed`: a 5xx, a reset connection, a timeout,
  an answer that does not show what was asked for) is tried again after a backoff that
  doubles from `first_backoff`, `tries` times in all.
- A refusal (`DiscordRefused`: any other 4xx) is never tried again: the same request would be
  refused again; nor is a request the service can no longer send (`DiscordClosed`).
- Work nobody is waiting for (`patient`: the clean-up) also comes back after a `DiscordBusy`,
  within the same `tries`, waiting at most `longest_wait` each time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from ..refusals import DiscordBusy, DiscordFailed

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    tries: int = 3  # DISCORD_RETRIES
    first_backoff: float = 0.5  # DISCORD_RETRY_BACKOFF: seconds before the second try
    rate_limited_tries: int = 5
    longest_wait: float = 60.0  # seconds a patient request waits for a `DiscordBusy`

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed try number `attempt` (from 1)."""
        return self.first_backoff * 2.0 ** (attempt - 1)

    async def run(
        self,
        attempt: Callable[[], Awaitable[T]],
        *,
        patient: bool = False,
        failed: Callable[[int, DiscordFailed], None] = lambda attempt, failure: None,
    ) -> T:
        """`attempt()`'s result, tried again as the policy says; `failed` hears of each
        `DiscordFailed` before the next try. Raise the last error when the tries are spent."""
        number = 1
        while True:
            try:
                return await attempt()
            except DiscordBusy as busy:
                if not patient or number >= self.tries:
                    raise
                delay = min(busy.retry_after or self.backoff(number), self.longest_wait)
            except DiscordFailed as failure:
                failed(number, failure)
                if number >= self.tries:
                    raise
                delay = self.backoff(number)
            await asyncio.sleep(delay)
            number += 1

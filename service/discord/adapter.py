"""discord.py's REST client, fitted to the service's pacing: the one module that reaches into
discord.py's internals, checked against the versions in `SUPPORTED` by
tests/unit/test_discord_adapter.py, so that an upgrade fails a test, not production.

discord.py builds, sends and decodes every request. Two of its behaviours would fight the
service's pacer (`pacing.py`, `gate.py`), and are switched off here:

- Its per-route buckets over-grant at a window's edge (the first answer of a new window sets
  what is left from its own header, though other requests went out since) and make the
  request that empties a bucket sleep a whole window before it returns. `PacedHTTPClient`
  gives every route a bucket that never holds a request (`InertRatelimit`).
- It sends again on its own: after a 429 (unpaced, after sleeping; a 429 without `Via` and
  the fifth in a row become errors), after a 500, 502, 504 or 524, and after a reset
  connection on some platforms. The client reads each answer in aiohttp's trace before
  discord.py does, and raises a 429 as `RateLimited` and a 5xx as `DiscordServerError` from
  there, out of its hands; a second send of one request is `UnpacedResend`.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
import discord
from discord.http import HTTPClient, Ratelimit, json_or_text

SUPPORTED = ("2.7",)  # discord.py minor versions whose internals this module was checked against


class InertRatelimit(Ratelimit):
    """A discord.py bucket that never holds a request: the `Pacer` does that."""

    async def acquire(self) -> None:
        return None

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    def update(self, response: aiohttp.ClientResponse, *, use_clock: bool = False) -> None:
        return None


class PacedHTTPClient(HTTPClient):
    """discord.py's REST client with every bucket inert."""

    def get_ratelimit(self, key: str) -> Ratelimit:
        return InertRatelimit(None)


class UnpacedResend(aiohttp.ClientError):
    """discord.py tried to send a request again on its own: the service retries it, paced,
    instead."""


@dataclass(eq=False)
class RateLimited(Exception):
    """A 429, as Discord (with Via and a JSON body) or Cloudflare (without) sent it."""

    retry_after: float | None
    is_global: bool
    cloudflare: bool

    @classmethod
    async def read(cls, response: aiohttp.ClientResponse) -> RateLimited:
        try:
            body = await json_or_text(response)
        except ValueError:
            body = ""
        fields = body if isinstance(body, dict) else {}
        retry_after = fields.get("retry_after", response.headers.get("Retry-After"))
        try:
            seconds: float | None = float(retry_after) if retry_after is not None else None
        except (TypeError, ValueError):
            seconds = None
        return cls(
            retry_after=seconds,
            is_global=fields.get("global") is True
            or response.headers.get("X-RateLimit-Global", "").lower() == "true",
            cloudflare=not response.headers.get("Via") or not isinstance(body, dict),
        )


async def server_error(response: aiohttp.ClientResponse) -> discord.DiscordServerError:
    """A 5xx answer as the error discord.py would raise for it."""
    return discord.DiscordServerError(response, await json_or_text(response))

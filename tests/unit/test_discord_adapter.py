"""service/discord/adapter.py against the installed discord.py: what it overrides and calls
must still be there, with the same shape, and the version must be one it was checked
against. An upgrade of discord.py fails here first, naming what to re-check."""

from __future__ import annotations

import asyncio
import inspect

import discord
from discord.http import HTTPClient, Ratelimit

from service.discord.adapter import SUPPORTED, InertRatelimit, PacedHTTPClient


def test_the_installed_discord_py_is_a_version_the_adapter_was_checked_against() -> None:
    minor = ".".join(discord.__version__.split(".")[:2])
    assert minor in SUPPORTED, (
        f"discord.py {discord.__version__} is not one service/discord/adapter.py was checked "
        f"against ({', '.join(SUPPORTED)}): re-check how its HTTPClient uses Ratelimit and "
        "resends requests, then add the version to SUPPORTED"
    )


def shape(method: object) -> list[tuple[str, object]]:
    return [(p.name, p.kind) for p in inspect.signature(method).parameters.values()]  # type: ignore[arg-type]


def test_every_override_replaces_a_method_of_the_same_shape() -> None:
    for subclass, base, names in [
        (InertRatelimit, Ratelimit, ("acquire", "update", "__aexit__")),
        (PacedHTTPClient, HTTPClient, ("get_ratelimit",)),
    ]:
        for name in names:
            assert name in vars(base), f"{base.__name__}.{name} is gone: the override does nothing"
            if name == "__aexit__":  # ours takes whatever the context manager protocol passes
                assert len(shape(getattr(base, name))) == 4
                continue
            ours, theirs = shape(getattr(subclass, name)), shape(getattr(base, name))
            assert ours == theirs, f"{base.__name__}.{name} changed its parameters"


def test_discord_py_asks_its_client_for_a_bucket_for_every_request() -> None:
    """The buckets are inert only if `request` takes them from `get_ratelimit`."""
    assert "self.get_ratelimit(" in inspect.getsource(HTTPClient.request)


async def test_a_bucket_of_the_paced_client_never_holds_a_request() -> None:
    client = PacedHTTPClient(asyncio.get_running_loop())
    bucket = client.get_ratelimit("POST /channels/1/messages")
    assert isinstance(bucket, InertRatelimit)
    for _ in range(3):  # a real bucket of limit 1 would hold the second
        await bucket.acquire()
        await bucket.__aexit__(None, None, None)
    await client.close()

"""The invariant under load: many jobs back to back with random faults of every kind.

After each job: every chunk answered 200 is a message on Discord that decrypts to exactly
that chunk; a successful finish lists messages that reassemble byte-exact with a matching
hash; every job ended in exactly one finish packet, one acknowledged abort, or a lost link.

CI runs a short version. The long one (a few minutes):

    python -m pytest -m slow tests/integration/test_soak.py -s
"""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from conftest import CHANNEL, KEY, PASSWORD, TOKEN, expected_hash, messages_of, reassembled

from service.chunks.sealing import open_attachment
from service.local.browser import UploadFailed, chunk_form, upload
from service.local.discord_api import DiscordStandIn, Fault
from service.local.driver import raw_chunk_body
from service.local.loopback import loopback_settings
from service.local.manager import ManagerStandIn, ServiceConnection
from service.server import UploadService
from service.uploads.outcome import Outcome

CHUNK = 32 * 1024

DISCORD_FAULTS = {
    "429": lambda: Fault(status=429, retry_after=0.02),
    "global 429": lambda: Fault(status=429, retry_after=0.02, is_global=True),
    "503": lambda: Fault(status=503),
    "500": lambda: Fault(status=500),
    "dropped connection": lambda: Fault(drop=True),
    "lost response": lambda: Fault(store_then_drop=True),
    "latency": lambda: Fault(delay=0.05),
    "hang": lambda: Fault(hang=True),
    "403": lambda: Fault(status=403),
}
RARE = {"500", "hang", "403"}  # slow (discord.py sleeps, request timeouts) or job-ending
CLIENT_FAULTS = ("duplicate at once", "resend stored", "drop mid-body")
MANAGER_FAULTS = ("abort", "link cut")


@dataclass
class Tally:
    jobs: int = 0
    chunks: int = 0
    retries: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    losses: int = 0
    leftovers: int = 0  # messages of unsuccessful uploads still on Discord after clean-up

    def report(self) -> str:
        faults = ", ".join(f"{name}: {n}" for name, n in sorted(self.faults.items()))
        return (
            f"jobs {self.jobs} ({dict(self.outcomes)}), chunks stored {self.chunks}, "
            f"faults injected {sum(self.faults.values())} ({faults}), "
            f"client retries {self.retries}, losses: {self.losses}, "
            f"messages left behind: {self.leftovers}"
        )


class Progress:
    """The chunks acknowledged so far, and a way to wait for more."""

    def __init__(self) -> None:
        self.acknowledged: dict[int, bytes] = {}
        self._changed = asyncio.Event()

    def ack(self, index: int, chunk: bytes) -> None:
        self.acknowledged[index] = chunk
        self._changed.set()

    async def until(self, condition: Callable[[], bool], browser: asyncio.Task[None]) -> None:
        """Wait until `condition` holds or the browser is done."""
        while not condition() and not browser.done():
            self._changed.clear()
            changed = asyncio.create_task(self._changed.wait())
            await asyncio.wait([changed, browser], return_when=asyncio.FIRST_COMPLETED)
            changed.cancel()


class Soak:
    def __init__(
        self,
        rng: random.Random,
        service: UploadService,
        discord: DiscordStandIn,
        manager: ManagerStandIn,
        http: aiohttp.ClientSession,
    ) -> None:
        self.rng, self.discord, self.manager, self.http = rng, discord, manager, http
        self.service = service
        self.tally = Tally()
        self.link: ServiceConnection | None = None

    async def connect(self) -> ServiceConnection:
        link = await self.manager.next_service()
        assert await link.configure(token=TOKEN, channel_id=CHANNEL, crypto_key=KEY) == {
            "success": True
        }
        self.link = link
        return link

    async def one_job(self) -> None:
        link = self.link or await self.connect()
        rng = self.rng
        data = os.urandom(rng.choice([0, 1, CHUNK, 3 * CHUNK, 4 * CHUNK + rng.randrange(CHUNK)]))
        finishes_before = len(link.finishes)
        succeeded_before = self.succeeded()
        upload_id, reply = await link.start_upload(size=len(data), chunk_size=CHUNK)
        assert reply == {"success": True}
        self.tally.jobs += 1

        for _ in range(rng.randrange(4)):
            name = rng.choice([n for n in DISCORD_FAULTS if n not in RARE or rng.random() < 0.2])
            self.discord.inject(DISCORD_FAULTS[name]())
            self.tally.faults[name] += 1
        manager_fault = rng.choice([*MANAGER_FAULTS, *[None] * 6]) if data else None

        progress = Progress()
        browser = asyncio.create_task(self.browser(link, upload_id, data, progress))
        clients = [
            self.client_fault(link, upload_id, data, progress, browser)
            for _ in range(rng.randrange(3))
        ]
        if manager_fault is not None:
            # strike after a random number of acknowledged chunks (or at the end)
            strike_after = rng.randrange(-(-len(data) // CHUNK))
            await progress.until(lambda: len(progress.acknowledged) >= strike_after, browser)
            self.tally.faults[manager_fault] += 1
            if not link.finishes[finishes_before:] and await self.strike(link, manager_fault):
                await asyncio.gather(browser, *clients)
                assert len(link.finishes) == finishes_before  # no finish after either
                if self.succeeded() > succeeded_before:  # its finish went as the link closed
                    self.tally.outcomes["voided by lost link"] -= 1
                    self.tally.outcomes["success finish lost with the link"] += 1
                    return
                await self.check_cleaned(upload_id)
                return
        await asyncio.gather(browser, *clients)
        finish = await link.next_finish()
        assert len(link.finishes) == finishes_before + 1  # exactly one finish
        self.tally.outcomes["succeeded" if finish["success"] else "failed"] += 1
        if finish["success"]:
            self.check_acknowledged(upload_id, progress.acknowledged)
            self.check_file(finish, data)
        else:
            await self.check_cleaned(upload_id)

    async def strike(self, link: ServiceConnection, manager_fault: str) -> bool:
        """Abort the job or cut the link; False if the job ended on its own first (its last
        chunk was stored, or Discord refused it, while its finish packet was on the way)."""
        if manager_fault == "abort":
            reply = await link.abort()
            if reply == {"success": False, "message": "there is no upload to abort"}:
                return False
            assert reply == {"success": True}
            self.tally.outcomes["aborted"] += 1
            return True
        await link.close()
        self.tally.outcomes["voided by lost link"] += 1
        self.link = None
        return True

    async def browser(
        self, link: ServiceConnection, upload_id: str, data: bytes, progress: Progress
    ) -> None:
        try:
            report = await upload(
                self.http,
                link.own_address,
                upload_id,
                data,
                CHUNK,
                give_up_on=frozenset({404, 410}),  # the job is over: the manager says so
                on_chunk_done=progress.ack,
            )
            self.tally.retries += report.retries
        except* UploadFailed:
            pass  # the job ended under it (abort, link cut, Discord refusal)

    async def client_fault(
        self,
        link: ServiceConnection,
        upload_id: str,
        data: bytes,
        progress: Progress,
        browser: asyncio.Task[None],
    ) -> None:
        """A second, badly behaved client of the same job."""
        if not data:
            return
        name = self.rng.choice(CLIENT_FAULTS)
        self.tally.faults[name] += 1
        index = self.rng.randrange(-(-len(data) // CHUNK))
        if name == "resend stored":
            await progress.until(lambda: bool(progress.acknowledged), browser)
            index = next(iter(progress.acknowledged), index)
        chunk = data[index * CHUNK : (index + 1) * CHUNK]
        if name == "drop mid-body":
            content_type, body = raw_chunk_body(upload_id, index, chunk)
            port = int(link.own_address.rsplit(":", 1)[1].split("/")[0])
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            head = (
                f"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            )
            writer.write(head.encode() + body[: len(body) // 2])
            await writer.drain()
            writer.close()
            return
        form = chunk_form(upload_id, index, chunk)
        async with self.http.post(link.own_address, data=form) as response:
            if response.status == 200:
                progress.ack(index, chunk)

    def succeeded(self) -> float:
        """Jobs the service ended with a success finish (sent, whether or not it arrived)."""
        registry = self.service.metrics.registry
        return registry.get_sample_value("upload_jobs_total", {"outcome": Outcome.SUCCEEDED}) or 0.0

    async def check_cleaned(self, upload_id: str) -> None:
        """An upload that did not succeed leaves none of its messages on Discord."""
        await self.service.endpoint.idle()  # a client that went away: its chunk may be posting
        await self.service.cleanup.settled()
        self.tally.leftovers += len(messages_of(self.discord, upload_id))
        assert self.tally.leftovers == 0

    def check_acknowledged(self, upload_id: str, acknowledged: dict[int, bytes]) -> None:
        """Every chunk answered 200 is on Discord and decrypts to exactly that chunk."""
        for index, chunk in acknowledged.items():
            text = f"discord-cloud upload {upload_id}, chunk {index}"
            stored = [
                open_attachment(KEY, m.attachments[0].data)
                for m in self.discord.messages(CHANNEL)
                if m.content == text
            ]
            if chunk not in stored:
                self.tally.losses += 1
            self.tally.chunks += 1
        assert self.tally.losses == 0

    def check_file(self, finish: dict[str, Any], data: bytes) -> None:
        assert reassembled(self.discord, finish) == data
        assert finish["hash"] == expected_hash(data, CHUNK)


async def soak(jobs: int, seed: int) -> Tally:
    async with (
        DiscordStandIn(token=TOKEN) as discord,
        ManagerStandIn(password=PASSWORD) as manager,
        aiohttp.ClientSession() as http,
    ):
        settings = loopback_settings(
            discord, manager, PASSWORD, discord_request_timeout=0.5, upload_inactivity_timeout=30
        )
        async with UploadService(settings) as service:
            run = Soak(random.Random(seed), service, discord, manager, http)
            for _ in range(jobs):
                await run.one_job()
        assert manager.dropped == []
        print(f"\nsoak (seed {seed}): {run.tally.report()}")
        return run.tally


async def test_soak_short() -> None:
    tally = await soak(jobs=10, seed=int(os.environ.get("SOAK_SEED", "1")))
    assert tally.losses == 0 and tally.leftovers == 0 and tally.jobs == 10


@pytest.mark.slow
async def test_soak_long() -> None:
    tally = await soak(jobs=int(os.environ.get("SOAK_JOBS", "150")), seed=random.randrange(10**6))
    assert tally.losses == 0 and tally.leftovers == 0

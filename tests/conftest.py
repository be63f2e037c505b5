"""The test harness: the real service on a free loopback port, between the two stand-ins.

Every test that uses `manager` ends by checking that the manager stand-in dropped none of
the service's packets: a packet the real manager would drop is a bug in any test.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import importlib.util
import json
import os
import resource
import ssl
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import aiohttp
import httpx
import pytest

from service.config import Settings
from service.local.browser import chunk_form
from service.local.discord_api import DiscordStandIn
from service.local.loopback import loopback_settings
from service.local.manager import ManagerStandIn, ServiceConnection
from service.local.redis_server import RedisServer, redis_server_path
from service.local.verify import attachments_in, opened
from service.server import UploadService
from service.uploads.cleanup import content_prefix

TOKEN = "test-bot-token-Zm9vYmFy.secret"
PASSWORD = "test-service-password-7d1f"
CHANNEL = "1100000000000000001"
KEY = bytes(range(32))
SMALL_CHUNK = 64 * 1024
DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
# Known answers made by Node's crypto: a copy of the project's ../shared/vectors.json.
VECTORS = json.loads((Path(__file__).parent / "unit" / "vectors.json").read_text())

# Every process the tests start (xdist's workers, the service's, the tools') would load the
# CA bundle into each TLS context it makes, aiohttp two at import: 40-75 ms of CPU a process,
# for tests that speak TLS only to certificates they name (test_tls). An empty file spares it;
# a certificate directory (SSL_CERT_DIR, the system's) still serves, looked up on demand.
os.environ["SSL_CERT_FILE"] = os.devnull


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto` (the README's test command): two workers a core. Most tests spend their time
    waiting on real clocks (Discord's one-second windows, timeouts), and every test is safe
    beside any other (free ports, its own temporary files), so a core waiting for one test
    runs another's."""
    return 2 * len(os.sched_getaffinity(0))


def missing(what: str, how: str) -> NoReturn:
    """`what` a test needs is not installed: in CI (`CI` set, as .ci/run sets it) the test
    fails; elsewhere it is skipped, saying `how` to install it."""
    message = f"{what} is not installed ({how})"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def deploy_script(name: str) -> ModuleType:
    """A script of deploy/ (it is not part of the package), imported as a module."""
    spec = importlib.util.spec_from_file_location(name, DEPLOY / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def stopped_stderr(process: asyncio.subprocess.Process) -> str:
    """Stop a service spawned with `stderr=PIPE` (SIGTERM) and return all it wrote there."""
    if process.returncode is None:
        process.terminate()
    _, stderr = await process.communicate()
    return stderr.decode("utf-8", "replace")


@pytest.fixture
async def discord() -> AsyncIterator[DiscordStandIn]:
    async with DiscordStandIn(token=TOKEN) as standin:
        yield standin


@pytest.fixture
async def manager() -> AsyncIterator[ManagerStandIn]:
    async with ManagerStandIn(password=PASSWORD) as standin:
        yield standin
        assert standin.dropped == [], "the manager would have dropped these packets"


@pytest.fixture
def settings(discord: DiscordStandIn, manager: ManagerStandIn) -> Settings:
    """The service's settings for a test: its own defaults but for the times a test would
    otherwise wait out on the real clock (a request timeout, the backoff between tries)."""
    return loopback_settings(
        discord, manager, PASSWORD, discord_request_timeout=5.0, discord_retry_backoff=0.05
    )


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client independent of aiohttp, for the tests of the HTTP contract: a quirk
    shared by aiohttp's client and server cannot hide behind it."""
    # The standard library's context reads SSL_CERT_FILE as OpenSSL does (empty is no CA);
    # httpx's own loads it explicitly, and fails on an empty file.
    verify = ssl.create_default_context()
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0), verify=verify) as independent:
        yield independent


ChunkFiles = dict[str, tuple[None, str] | tuple[str, bytes, str]]


def chunk_files(upload_id: str, index: int | str, data: bytes) -> ChunkFiles:
    """The browser's form as httpx `files=`: `id`, `chunk`, then the bytes as a file named
    `blob`. httpx writes the parts in the dict's order; a `None` filename makes a plain field."""
    return {
        "id": (None, upload_id),
        "chunk": (None, str(index)),
        "file": ("blob", bytes(data), "application/octet-stream"),
    }


async def post_chunk(
    client: httpx.AsyncClient, url: str, upload_id: str, index: int | str, data: bytes
) -> httpx.Response:
    """POST one chunk with httpx, as the browser does."""
    return await client.post(url, files=chunk_files(upload_id, index, data))


def expected_hash(data: bytes, chunk_size: int) -> str:
    """The file hash of PROTOCOL.md section 4, computed independently of the service."""
    digests = [
        hashlib.sha256(data[i : i + chunk_size]).hexdigest()
        for i in range(0, len(data), chunk_size)
    ]
    return hashlib.sha256("".join(digests).encode()).hexdigest()


def messages_of(discord: DiscordStandIn, upload_id: str) -> list[str]:
    """The ids of the upload's messages in CHANNEL, found by their text as the service's
    clean-up finds them."""
    prefix = content_prefix(upload_id)
    return [m.id for m in discord.messages(CHANNEL) if m.content.startswith(prefix)]


def reassembled(discord: DiscordStandIn, finish: dict[str, Any], channel: str = CHANNEL) -> bytes:
    """The file as the manager rebuilds it: each listed message's attachment, decrypted with
    KEY, in the finish packet's order."""
    attachment_of = attachments_in(discord, channel)
    pieces = [opened(KEY, attachment_of(message_id) or b"") for message_id in finish["messages"]]
    assert None not in pieces, "a listed attachment does not decrypt"
    return b"".join(piece for piece in pieces if piece is not None)


@dataclass
class Harness:
    """A running service, its manager link, and helpers to play the browser."""

    service: UploadService
    link: ServiceConnection
    discord: DiscordStandIn
    http: aiohttp.ClientSession

    @property
    def address(self) -> str:
        return self.link.own_address

    async def configure(self, crypto_key: bytes | None = KEY) -> dict[str, Any]:
        return await self.link.configure(token=TOKEN, channel_id=CHANNEL, crypto_key=crypto_key)

    async def start(self, size: int, chunk_size: int = SMALL_CHUNK, **fields: Any) -> str:
        upload_id, reply = await self.link.start_upload(size=size, chunk_size=chunk_size, **fields)
        assert reply == {"success": True}
        return upload_id

    async def post(
        self,
        upload_id: str,
        index: int | str,
        data: bytes,
        *,
        url: str | None = None,
    ) -> tuple[int, str]:
        form = chunk_form(upload_id, index, data)
        async with self.http.post(url or self.address, data=form) as response:
            return response.status, await response.text()

    def metric(self, name: str) -> float:
        """One unlabelled sample of the service's metrics, as /metrics shows it (0: none yet)."""
        return self.service.metrics.registry.get_sample_value(name) or 0.0

    def stored(self) -> list[bytes]:
        """The attachments in the channel, in posting order."""
        return [m.attachments[0].data for m in self.discord.messages(CHANNEL)]


async def store_some(
    link: ServiceConnection, http: aiohttp.ClientSession, stored: int, chunks: int
) -> str:
    """Start an upload of `chunks` chunks of SMALL_CHUNK bytes on the service behind `link`
    and store the first `stored` (each answered 200); its upload id."""
    upload_id, reply = await link.start_upload(size=chunks * SMALL_CHUNK, chunk_size=SMALL_CHUNK)
    assert reply == {"success": True}
    for index in range(stored):
        form = chunk_form(upload_id, index, os.urandom(SMALL_CHUNK))
        async with http.post(link.own_address, data=form) as response:
            assert response.status == 200
    return upload_id


HarnessFactory = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def start_service(
    settings: Settings,
    manager: ManagerStandIn,
    discord: DiscordStandIn,
    http: aiohttp.ClientSession,
) -> AsyncIterator[HarnessFactory]:
    """Start the service with settings overrides; it connects to the manager stand-in."""
    services: list[UploadService] = []

    async def start(**overrides: Any) -> Harness:
        service = UploadService(dataclasses.replace(settings, **overrides))
        await service.startup()
        services.append(service)
        link = await manager.next_service()
        return Harness(service, link, discord, http)

    yield start
    for service in services:
        await service.shutdown()


@pytest.fixture
async def harness(start_service: HarnessFactory) -> Harness:
    """A service configured with encryption on, ready for `upload-start`."""
    harness = await start_service()
    assert await harness.configure() == {"success": True}
    return harness


async def until(holds: Callable[[], bool], within: float = 10.0) -> None:
    """Until `holds()`, for what offers no event to await; fail after `within` seconds."""
    async with asyncio.timeout(within):
        while not holds():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def refuse_journal_writes(pid: int, state_dir: Path) -> None:
    """Let process `pid` grow no file past its journal's WAL now (RLIMIT_FSIZE: the kernel
    refuses with EFBIG, as a full disk would): its next commit fails, and every one after."""
    wal = max(path.stat().st_size for path in state_dir.glob("*.sqlite-wal"))
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (wal, wal))


@pytest.fixture
def redis_installed() -> None:
    """redis-server is installed (`missing` if not)."""
    if redis_server_path() is None:
        missing("redis-server", "apt-get install redis-server; .ci/run does")


@pytest.fixture
async def redis_server(redis_installed: None) -> AsyncIterator[RedisServer]:
    """A real redis-server on a free port (no persistence: a restart comes back empty)."""
    async with RedisServer() as server:
        yield server

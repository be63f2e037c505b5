"""One bot token's global limit shared through a real Redis (REDIS_URL) by several processes.

Each "process" here is what a service process holds for a token: a `DiscordClient` whose
global limit is a `SharedGlobalLimit` with a Redis connection of its own; one test kills a
real process. The Discord stand-in counts every request against the token's global limit
when its whole body has arrived, and no test measures time: each proves its point by what
the stand-in or Redis counted.

The fleets of `fleet()` pace as after a global 429 (careful: a place frees a second after
the request's answer), because here the stand-in runs in the clients' own event loop: on a
loaded machine it may take a post in hand well after `COUNT_MARGIN` from its last byte,
which is Discord counting late (and which the service meets by being careful,
`test_global_limit`). The answer is the one bound this harness keeps under any load, so
Discord's verdict must be exact: no global 429, never more than RATE in any second. One
fleet paces as a service starts, a place freeing a second after its last byte: its test
sends one second's budget and a few more, so that Discord's window opens with the logins,
before any post, and its verdict does not depend on how late the stand-in counts a post.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis.asyncio
from conftest import CHANNEL, SMALL_CHUNK, TOKEN, HarnessFactory, until
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from discord.http import Route
from test_global_limit import post

from service.discord.client import CAREFUL_SECONDS, DiscordClient, DiscordClients
from service.discord.shared_limit import (
    SCRIPT,
    TICK,
    SharedGlobalLimit,
    SharedLimits,
    redis_error,
    token_keys,
)
from service.local.discord_api import DiscordStandIn, Limit
from service.local.loopback import free_port
from service.local.redis_server import RedisServer
from service.metrics import Metrics

RATE = 50  # the token's global limit (Discord's), in the stand-in and the service alike
WAIT = 30.0  # seconds a test waits for what it awaits before it fails
SHARED_LIMIT_LOG = "service.discord.shared_limit"


def kept_to_one_budget(discord: DiscordStandIn) -> None:
    """Discord's own verdict (its fixed windows) refused no request for the global limit, and
    no second, wherever it starts, counted more than RATE: two processes not sharing the
    budget draw dozens of global 429s here."""
    assert discord.rate_limited_by_scope["global"] == 0
    assert discord.busiest_second() <= RATE


@pytest.fixture
async def discord(request: pytest.FixtureRequest) -> AsyncIterator[DiscordStandIn]:
    """The stand-in enforcing the token's global limit (each post answered `param` s after
    it is counted)."""
    answer_delay = getattr(request, "param", 0.0)
    async with DiscordStandIn(
        token=TOKEN, global_limit=Limit(RATE, 1.0), answer_delay=answer_delay
    ) as standin:
        yield standin


@pytest.fixture
def discord_base(discord: DiscordStandIn) -> Iterator[None]:
    base, Route.BASE = Route.BASE, discord.base_url
    yield
    Route.BASE = base


def now() -> float:
    return asyncio.get_running_loop().time()


def wanting(limit: SharedGlobalLimit, places: int) -> None:
    """Ask for `places` whenever the limit has news, as the gate of waiting requests does."""
    limit.watch(lambda: limit.want(places, now()))
    limit.want(places, now())


@contextlib.asynccontextmanager
async def fleet(
    url: str | None, processes: int, *, careful: bool = True
) -> AsyncIterator[list[DiscordClient]]:
    """`processes` logged-in clients of TOKEN, each with its own connection to Redis at `url`
    (None: each keeps to RATE alone, as without REDIS_URL), careful from their first request
    unless told otherwise (the module's docstring says why)."""
    registries = [
        DiscordClients(
            global_rate=RATE,
            request_timeout=WAIT,
            metrics=(metrics := Metrics([], [])),
            shared=None if url is None else SharedLimits(url, rate=RATE, metrics=metrics),
        )
        for _ in range(processes)
    ]
    try:
        clients = [registry.client(TOKEN) for registry in registries]
        if careful:
            for client in clients:
                client.gate.be_careful(CAREFUL_SECONDS)
        await asyncio.gather(*(client.login(WAIT) for client in clients))
        yield clients
    finally:
        for registry in registries:
            await registry.close()


def shared_limit(client: DiscordClient) -> SharedGlobalLimit:
    limit = client.gate.pacer.global_limit
    assert isinstance(limit, SharedGlobalLimit)
    return limit


async def post_many(client: DiscordClient, count: int, first_channel: int) -> None:
    """`count` posts, ten at a time, to ten channels (the stand-in limits none of them)."""
    queue = list(range(count))

    async def worker(channel: str) -> None:
        while queue:
            queue.pop()
            await post(client, channel, 4096)

    await asyncio.gather(*(worker(str(first_channel + k)) for k in range(10)))


async def test_processes_sharing_a_token_keep_to_its_one_budget(
    redis_server: RedisServer, discord: DiscordStandIn, discord_base: None
) -> None:
    """Each process alone would send RATE a second: together they still send RATE."""
    async with fleet(redis_server.url, 2) as clients:
        await asyncio.gather(
            *(
                post_many(client, 60, 1100000000000000100 + 10 * k)
                for k, client in enumerate(clients)
            )
        )
    assert discord.posts_stored == 120
    kept_to_one_budget(discord)


@pytest.mark.parametrize("discord", [60.0], indirect=True)
async def test_processes_sharing_a_token_free_each_place_on_its_last_byte_not_its_answer(
    redis_server: RedisServer, discord: DiscordStandIn, discord_base: None
) -> None:
    """As a service starts (not careful), a place shared through Redis frees a second after
    its request's last byte, and not before. Discord answers each post a minute after
    counting it, yet the two processes send more than one second's budget without a global
    429: places held until the answers would keep the posts past RATE waiting a minute, and
    places not held in Redis once written would let them all go in the first second."""
    async with fleet(redis_server.url, 2, careful=False) as clients:
        # A channel each: a channel's second post would wait for the answer to its first,
        # which tells the channel's bucket.
        posts = [
            asyncio.create_task(post(clients[n % 2], str(1100000000000000300 + n), 4096))
            for n in range(RATE + 10)
        ]
        try:
            async with asyncio.timeout(WAIT):
                await discord.wait_for_posts(RATE + 10)
            assert discord.rate_limited_by_scope["global"] == 0
            assert not any(task.done() for task in posts)  # no answer yet
        finally:
            for task in posts:
                task.cancel()
            await asyncio.gather(*posts, return_exceptions=True)


async def test_redis_away_and_back_empty_loses_no_post_and_keeps_the_rate(
    redis_server: RedisServer,
    discord: DiscordStandIn,
    discord_base: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=SHARED_LIMIT_LOG)
    async with fleet(redis_server.url, 2) as clients:
        limits = [shared_limit(client) for client in clients]
        load = asyncio.gather(
            *(
                post_many(client, 100, 1100000000000000200 + 10 * k)
                for k, client in enumerate(clients)
            )
        )
        await until(lambda: discord.posts_stored >= RATE, WAIT)
        await redis_server.stop()
        await until(lambda: all(limit.shared is False for limit in limits), WAIT)
        assert [limit.share for limit in limits] == [RATE // 2, RATE // 2]
        stored = discord.posts_stored
        # Posts go on without Redis.
        await until(lambda: discord.posts_stored >= stored + RATE // 2, WAIT)
        await redis_server.start()  # empty
        await until(lambda: all(limit.shared is True for limit in limits), WAIT)
        await load
    assert discord.posts_stored == 200
    kept_to_one_budget(discord)
    # Each process says that it keeps to its share, and then that Redis is back.
    said = [r.getMessage() for r in caplog.records if r.name == SHARED_LIMIT_LOG]
    away = sum("has not answered" in line for line in said)
    back = sum(line.startswith("Redis answers again") for line in said)
    assert away == back >= len(limits)


async def test_a_redis_that_comes_back_empty_gets_back_the_places_still_held(
    redis_server: RedisServer,
) -> None:
    in_flight_key = token_keys(TOKEN)[1]
    first = SharedLimits(redis_server.url, rate=RATE, metrics=Metrics([], []))
    second = SharedLimits(redis_server.url, rate=RATE, metrics=Metrics([], []))
    inspector = redis.asyncio.from_url(redis_server.url)
    try:
        holder = first.limit(TOKEN)
        await until(lambda: holder.shared is True and not holder.warming(now()), WAIT)
        wanting(holder, 4)
        await until(lambda: holder.room(now()) >= 4, WAIT)
        for _ in range(4):  # four requests on their way: their places are held
            holder.take(now())
        wanting(holder, 0)

        await redis_server.stop()
        await redis_server.start()  # empty
        newcomer = second.limit(TOKEN)
        wanting(newcomer, RATE)
        await until(lambda: holder.warming(now()), WAIT)  # it has called the empty Redis
        assert sum(int(n) for n in await inspector.hvals(in_flight_key)) == 4
        # A process that never saw the fleet takes nothing until every process had its turn.
        await until(lambda: newcomer.shared is True, WAIT)
        assert newcomer.warming(now()) and newcomer.room(now()) == 0
        # Then it gets all but the places held, never more. (On a loaded machine it may know
        # the fleet a moment before the state is STALE old: meanwhile it keeps to its share.)
        await until(lambda: newcomer.room(now()) >= RATE - 4, WAIT)
        assert newcomer.room(now()) == RATE - 4
    finally:
        await inspector.aclose()
        await first.close()
        await second.close()


async def test_every_call_puts_back_the_requests_still_counted_and_grants_only_the_rest(
    redis_server: RedisServer,
) -> None:
    """The script alone: a call names each request of its process that still holds a place
    (with the time it holds it for), so a Redis that lost them has them again."""
    client = redis.asyncio.from_url(redis_server.url)
    script = client.register_script(SCRIPT)
    keys = token_keys(TOKEN)

    async def call(process: str, number: int, want: int, *held: str) -> list[int]:
        held_for = [arg for member in held for arg in (member, 10_000)]
        args = [process, number, 0, want, RATE, 1500, 0, 0, 60_000, 0, *held_for]
        return [int(value) for value in await script(keys=keys, args=args)]

    try:
        granted, alive, *_ = await call("a", 1, 0, "a:1", "a:2", "a:3")
        assert (granted, alive) == (0, 1)
        await client.flushall()  # Redis came back empty
        assert await client.zcard(keys[0]) == 0
        await call("a", 2, 0, "a:1", "a:2", "a:3")
        assert await client.zcard(keys[0]) == 3
        granted, alive, *_ = await call("b", 1, RATE)
        assert (granted, alive) == (RATE - 3, 2)
        # A late call of a process (one that timed out, then ran) changes nothing.
        assert (await call("a", 1, RATE))[0] == -1
    finally:
        await client.aclose()


async def test_without_redis_each_process_keeps_to_its_share_of_those_it_saw(
    redis_server: RedisServer,
) -> None:
    registries = [SharedLimits(redis_server.url, rate=30, metrics=Metrics([], [])) for _ in "abc"]
    try:
        limits = [registry.limit(TOKEN) for registry in registries]
        await until(lambda: all(lim.shared and lim.alive == 3 for lim in limits), WAIT)
        await until(lambda: not any(lim.warming(now()) for lim in limits), WAIT)
        await redis_server.stop()
        await until(lambda: all(limit.shared is False for limit in limits), WAIT)
        assert [limit.room(now()) for limit in limits] == [10, 10, 10]
        limits[0].take(now())
        assert limits[0].room(now()) == 9
        wanting(limits[0], 30)  # asking for more changes nothing without Redis
        assert limits[0].room(now()) == 9
    finally:
        for registry in registries:
            await registry.close()


HOLDER = """
import asyncio, sys
from service.discord.shared_limit import SharedLimits
from service.metrics import Metrics

async def main(url, token, rate):
    limit = SharedLimits(url, rate=rate, metrics=Metrics([], [])).limit(token)
    loop = asyncio.get_running_loop()
    while limit.room(loop.time()) < rate:
        limit.want(rate, loop.time())
        await asyncio.sleep(0.02)
    for _ in range(rate):  # sent, and never written nor answered: held while it lives
        limit.take(loop.time())
    limit.want(0, loop.time())
    print("holding", flush=True)
    await asyncio.Event().wait()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


async def test_a_killed_process_holds_its_places_only_until_its_heartbeat_expires(
    redis_server: RedisServer,
) -> None:
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLDER, redis_server.url, TOKEN, str(RATE),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    survivor = SharedLimits(redis_server.url, rate=RATE, metrics=Metrics([], []))
    inspector = redis.asyncio.from_url(redis_server.url)
    try:
        assert holder.stdout is not None
        async with asyncio.timeout(WAIT):
            assert await holder.stdout.readline() == b"holding\n"
        limit = survivor.limit(TOKEN)
        wanting(limit, RATE)
        await until(lambda: limit.alive == 2, WAIT)
        in_flight = await inspector.hvals(token_keys(TOKEN)[1])
        assert sorted(int(places) for places in in_flight) == [0, RATE]
        assert limit.room(now()) == 0

        holder.send_signal(signal.SIGKILL)
        await holder.wait()
        await until(lambda: limit.room(now()) == RATE, WAIT)
        assert limit.alive == 1
        assert await inspector.zcard(token_keys(TOKEN)[2]) == 1
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()
        await inspector.aclose()
        await survivor.close()


async def test_a_redis_that_kept_its_state_grants_none_of_the_places_taken_without_it(
    redis_installed: None,
) -> None:
    """Redis away for every process and back with its state (a partition, a Redis that
    stalled or failed over to its replica; not empty, so nothing looks young): the places a
    process took on its own share meanwhile are unknown to Redis until it calls, so the first
    process back must not be granted them. Here each process reaches Redis as a user of its
    own, which the test turns off and on again, so that the idle one comes back first."""
    users = [arg for user in "ab" for arg in ("--user", user, "on", f">{user}", "~*", "+@all")]
    async with RedisServer(options=users) as server:
        inspector = redis.asyncio.from_url(server.url)
        urls = [server.url.replace("//", f"//{user}:{user}@") for user in "ab"]
        fleet = [SharedLimits(url, rate=RATE, metrics=Metrics([], [])) for url in urls]
        try:
            busy, idle = (registry.limit(TOKEN) for registry in fleet)
            await until(lambda: busy.alive == idle.alive == 2, WAIT)
            await until(lambda: not (busy.warming(now()) or idle.warming(now())), WAIT)
            for user in "ab":
                await inspector.acl_setuser(user, enabled=False)
                await inspector.client_kill_filter(user=user)
            await until(lambda: busy.shared is False and idle.shared is False, WAIT)
            taken = busy.room(now())
            assert taken == RATE // 2
            for _ in range(taken):  # on their way, sent on its own share
                busy.take(now())

            wanting(idle, RATE)
            await inspector.acl_setuser("b", enabled=True)
            await until(lambda: idle.shared is True, WAIT)
            await until(lambda: idle.warming(now()) or idle.room(now()) == RATE, WAIT)
            await inspector.acl_setuser("a", enabled=True)
            await until(lambda: busy.shared is True and not idle.warming(now()), WAIT)
            assert idle.room(now()) == RATE - taken
        finally:
            for registry in fleet:
                await registry.close()
            await inspector.aclose()


async def test_a_process_that_keeps_coming_back_from_its_share_starves_no_newcomer(
    redis_server: RedisServer,
) -> None:
    """Each process back from its own share begins the state anew; one whose link to Redis
    keeps failing does so again and again (here the script is called as it would). A process
    that joins meanwhile waits while the state is young and it does not know the fleet, and
    knows it once it has been answered for STALE all the same: every process called since."""
    client = redis.asyncio.from_url(redis_server.url)
    script = client.register_script(SCRIPT)
    keys = token_keys(TOKEN)

    stop = asyncio.Event()  # not the cancel alone: redis-py (8.2) can lose one mid-call

    async def coming_back() -> None:
        for number in itertools.count(1):
            args: list[str | int] = ["back", number, 0, 0, RATE, 1500, 0, 0, 60_000, 1]
            assert (await script(keys=keys, args=args))[4] == 0  # the state begins anew
            if stop.is_set():
                return
            await asyncio.sleep(TICK)

    flapping = asyncio.create_task(coming_back())
    newcomer = SharedLimits(redis_server.url, rate=RATE, metrics=Metrics([], []))
    try:
        limit = newcomer.limit(TOKEN)
        wanting(limit, RATE)
        await until(lambda: limit.room(now()) > 0, WAIT)
        assert limit.warming(now()) and limit.room(now()) == RATE // 2  # its share while young
    finally:
        stop.set()
        flapping.cancel()
        [ended] = await asyncio.gather(flapping, return_exceptions=True)
        await newcomer.close()
        await client.aclose()
    assert not isinstance(ended, AssertionError), ended  # it kept beginning the state anew


async def test_the_service_shares_through_redis_and_does_without_it(
    redis_server: RedisServer, start_service: HarnessFactory
) -> None:
    """No chunk fails and /readyz stays ready while Redis is away; the gauge says which."""
    harness = await start_service(redis_url=redis_server.url)
    assert await harness.configure() == {"success": True}
    registry = harness.service.metrics.registry
    gauge = {"redis": f"127.0.0.1:{redis_server.port}"}
    data = os.urandom(2 * SMALL_CHUNK)
    upload_id = await harness.start(len(data))
    assert (await harness.post(upload_id, 0, data[:SMALL_CHUNK]))[0] == 200
    assert registry.get_sample_value("upload_discord_global_limit_shared", gauge) == 1

    await redis_server.stop()
    await until(
        lambda: registry.get_sample_value("upload_discord_global_limit_shared", gauge) == 0, WAIT
    )
    async with harness.http.get(f"http://127.0.0.1:{harness.service.port}/readyz") as ready:
        assert ready.status == 200
    assert (await harness.post(upload_id, 1, data[SMALL_CHUNK:]))[0] == 200
    finish = await harness.link.next_finish()
    assert finish["success"] is True
    assert len(harness.discord.messages(CHANNEL)) == 2


def tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A certificate authority and a certificate it signed for 127.0.0.1: (ca, cert, key)."""
    now = datetime.now(UTC)
    authority_key, key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(2))
    authority_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test authority")])

    def signed(
        subject: x509.Name, public_key: ec.EllipticCurvePublicKey
    ) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(authority_name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(hours=1))
        )

    authority = (
        signed(authority_name, authority_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(authority_key, hashes.SHA256())
    )
    address = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
    server = (
        signed(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "redis")]), key.public_key())
        .add_extension(x509.SubjectAlternativeName([address]), critical=False)
        .sign(authority_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(authority.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    pem = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8
    paths[2].write_bytes(key.private_bytes(*pem, serialization.NoEncryption()))
    return paths


async def test_a_redis_behind_tls_with_a_user_and_password_shares_the_limit(
    tmp_path: Path, redis_installed: None, caplog: pytest.LogCaptureFixture
) -> None:
    """rediss:// with an ACL user and its password in REDIS_URL, as a managed Redis asks. A
    wrong password, or a user who may not run scripts, is Redis not answering (each process
    keeps to its share), and the log says what Redis answered, without user or password."""
    caplog.set_level(logging.WARNING, logger=SHARED_LIMIT_LOG)
    ca, cert, key = tls_files(tmp_path)
    secret, port = secrets.token_hex(12), free_port()
    reader = f"reader{secrets.token_hex(4)}"  # may read keys, not run scripts
    options = [
        *("--port", "0", "--tls-port", str(port), "--tls-auth-clients", "no"),
        *("--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca)),
        *("--user", "default", "off", "--user", "uploader", "on", f">{secret}", "~*", "+@all"),
        *("--user", reader, "on", f">{secret}", "~*", "+@read"),
    ]
    wrong = secrets.token_hex(12)
    async with RedisServer(options=options):
        url = f"rediss://uploader:{secret}@127.0.0.1:{port}/0?ssl_ca_certs={ca}"
        urls = {
            url: True,
            url.replace(secret, wrong): False,
            url.replace("uploader", reader): False,
        }
        for tried, shared in urls.items():
            limits = SharedLimits(tried, rate=RATE, metrics=Metrics([], []))
            try:
                limit = limits.limit(TOKEN)
                await until(lambda: limit.shared is shared, WAIT)  # noqa: B023 - awaited here
            finally:
                await limits.close()
    password, permission = [r.getMessage() for r in caplog.records if r.name == SHARED_LIMIT_LOG]
    assert "(AuthenticationError: invalid username-password pair" in password
    assert "(NoPermissionError: this user has no permissions to run the 'evalsha'" in permission
    for line in (password, permission):
        assert wrong not in line and secret not in line and reader not in line


def test_what_redis_said_is_logged_without_the_urls_user_and_password() -> None:
    url = "rediss://upload%20er:p%40ss@redis.example:6380/0"
    error = redis.exceptions.ResponseError("user upload er (password p@ss) may not")
    assert redis_error(error, url) == "ResponseError: user [hidden] (password [hidden]) may not"

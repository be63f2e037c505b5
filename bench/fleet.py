"""The fleet benchmark: one bot token's global limit across slots and processes (issue 20).

    python bench/fleet.py [--smoke] [--scenario NAME-PREFIX ...]

Each scenario: a Discord stand-in (in a process of its own) enforcing the token's global
limit and each channel's window, answering every post `answer` s after counting it; service
processes sharing the token through one real redis-server when there are several, every
slot configured; jobs of small chunks (encryption on) uploaded by browser stand-ins (5 chunks
in flight, retries) on the processes the scenario loads. Reported: the time the limits allow
(the posts at the token's rate, or each channel's windows) against the time taken, the
stand-in's 429s and busiest second (any second, not only its windows), failed jobs, each
process's loop lag (GET /healthz timed from another process: p99/max) and its peak RSS
against idle + CHUNK_MEMORY_MIB + 16 MiB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import secrets
import sys
import time
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.config import Settings, environment_of  # noqa: E402
from service.local.browser import upload  # noqa: E402
from service.local.loopback import free_port  # noqa: E402
from service.local.manager import ManagerStandIn, ServiceConnection  # noqa: E402
from service.local.redis_server import RedisServer  # noqa: E402

CHUNK = 64 * 1024
MEMORY_MIB = 32  # CHUNK_MEMORY_MIB of every process
MIB = 1024 * 1024
CHANNEL_BASE = 1500000000000000000


@dataclass(frozen=True)
class Scenario:
    name: str
    busy: tuple[int, ...]  # jobs on each process
    rate: int  # the token's global limit, requests per second
    per_window: int  # each channel's posts per window
    window: float
    answer: float  # seconds from counting a post to answering it
    chunks: int  # per job
    target: float  # ideal / taken
    slots: int = 0  # slots per process, if more than its jobs
    redis_outage: float = 0.0  # seconds Redis is stopped a third of the way in (back empty)


SCENARIOS = [
    Scenario("one process, 12 slots, 3 x the limit", (12,), 20, 5, 1.0, 0.5, 30, 0.9),
    Scenario("one process, 12 slots, answers 1 s late", (12,), 20, 5, 1.0, 1.0, 30, 0.9),
    Scenario("3 processes, jobs on one", (8, 0, 0), 20, 5, 1.0, 0.5, 30, 0.9, slots=8),
    Scenario("3 processes, 6 x the limit", (8, 8, 8), 20, 5, 1.0, 0.5, 15, 0.9),
    Scenario("3 processes, Redis away 3 s", (8, 8, 8), 20, 5, 1.0, 0.5, 20, 0.9, redis_outage=3),
    Scenario("one process, 50 slots", (50,), 50, 5, 5.0, 0.2, 12, 0.85),
]

DISCORD = """
import asyncio, json, sys
from service.local.discord_api import DiscordStandIn, Limit
async def main(token, rate, per_window, window, answer):
    async with DiscordStandIn(
        token=token, messages_per_window=int(per_window), window=float(window),
        global_limit=Limit(int(rate), 1.0), answer_delay=float(answer),
    ) as discord:
        print(discord.base_url, flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        counts = [discord.posts_stored, discord.rate_limited_by_scope, discord.busiest_second()]
        print(json.dumps(counts), flush=True)
asyncio.run(main(*sys.argv[1:]))
"""
PROBE = """
import http.client, json, sys, threading, time
ports, samples, stop = sys.argv[1:], {p: [] for p in sys.argv[1:]}, threading.Event()
def probe(port):
    connection = http.client.HTTPConnection("127.0.0.1", int(port), timeout=10)
    while not stop.wait(0.05):
        started = time.perf_counter()
        connection.request("GET", "/healthz")
        connection.getresponse().read()
        samples[port].append(time.perf_counter() - started)
threads = [threading.Thread(target=probe, args=(p,)) for p in ports]
for thread in threads: thread.start()
print("ready", flush=True); sys.stdin.readline(); stop.set()
for thread in threads: thread.join()
print(json.dumps(list(samples.values())), flush=True)
"""


@dataclass
class Result:
    scenario: Scenario
    ideal: float
    taken: float
    failed: int
    lag: list[list[float]]  # per process: /healthz times (seconds)
    rss: list[tuple[int, int]]  # per process: idle, peak (bytes)
    posts: int = 0
    scopes: dict[str, int] | None = None
    busiest: int = 0

    def line(self) -> str:
        s, ratio = self.scenario, self.ideal / self.taken
        lags = ", ".join(f"{percentile(v, 0.99) * 1e3:.0f}/{max(v) * 1e3:.0f}" for v in self.lag)
        rss = ", ".join(
            f"{peak / MIB:.0f} of {idle / MIB + MEMORY_MIB + 16:.0f}" for idle, peak in self.rss
        )
        verdict = "ok" if ratio >= s.target and not self.failed else "BELOW TARGET"
        return (
            f"{s.name}: {self.posts} posts in {self.taken:.1f} s, ideal {self.ideal:.1f} s: "
            f"{ratio:.2f} (target {s.target}) {verdict}; 429 {self.scopes}; busiest second "
            f"{self.busiest} (limit {s.rate}); failed jobs {self.failed}; loop lag p99/max ms "
            f"{lags}; peak RSS MiB {rss}"
        )


def status_bytes(pid: int, field: str) -> int:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return next(int(line.split()[1]) * 1024 for line in lines if line.startswith(field + ":"))


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values) or [math.nan]
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Child:
    """`python ARGS` with its stdin and stdout piped; its stderr drained, the tail kept."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.tail: deque[str] = deque(maxlen=20)
        self.ready = ""  # the line it was ready with
        self._drain: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, *args: str, ready: str, env: dict[str, str] | None = None) -> Child:
        """Return once it shows `ready` on stdout, or with `env` on stderr (the service's log)."""
        pipe = asyncio.subprocess.PIPE
        environ = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        process = await asyncio.create_subprocess_exec(
            sys.executable, *args, env=environ, stdin=pipe, stdout=pipe, stderr=pipe
        )
        child = cls(process)
        async with asyncio.timeout(60):
            while ready not in (line := await child.line(from_stderr=env is not None)):
                if not line:
                    raise RuntimeError(f"{args[:2]} did not start:\n" + "\n".join(child.tail))
        child.ready = line
        child._drain = asyncio.create_task(child._drain_log())
        return child

    async def line(self, from_stderr: bool = True) -> str:
        stream = self.process.stderr if from_stderr else self.process.stdout
        assert stream is not None
        line = (await stream.readline()).decode(errors="replace").rstrip()
        if line and from_stderr:
            self.tail.append(line)
        return line

    async def ask(self) -> bytes:
        """Tell it to finish; the last line it prints before it exits."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(b"\n")
        output = await self.process.stdout.read()
        await self.process.wait()  # before `stop` could signal it: Popen would reap it first
        return output.splitlines()[-1]

    async def _drain_log(self) -> None:
        while await self.line():
            pass

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
        await self.process.wait()


async def run_job(
    session: aiohttp.ClientSession, link: ServiceConnection, upload_id: str, data: bytes
) -> bool:
    try:
        await upload(session, link.own_address, upload_id, data, CHUNK)
        return bool((await link.next_finish())["success"])
    except Exception as error:  # a failed job is a figure, not the benchmark's end
        print(f"  a job failed: {type(error).__name__}: {error}", file=sys.stderr)
        return False


async def outage(redis: RedisServer, after: float, seconds: float) -> None:
    await asyncio.sleep(after)
    await redis.stop()
    await asyncio.sleep(seconds)
    await redis.start()  # empty: no persistence


async def run_scenario(s: Scenario, redis: RedisServer | None) -> Result:
    token, password, key = secrets.token_urlsafe(24), secrets.token_urlsafe(16), os.urandom(32)
    limits = (str(s.rate), str(s.per_window), str(s.window), str(s.answer))
    discord = await Child.start("-c", DISCORD, token, *limits, ready="http")
    children = [discord]
    try:
        async with ManagerStandIn(password=password) as manager:
            addresses = []
            for jobs in s.busy:
                port = free_port()
                settings = Settings(
                    manager.address, password, f"http://127.0.0.1:{port}/upload", port=port,
                    host="127.0.0.1", discord_api_base=discord.ready, slots=max(jobs, s.slots, 1),
                    discord_global_rate=s.rate, chunk_memory_mib=MEMORY_MIB,
                    redis_url=None if redis is None else redis.url,
                )  # fmt: skip
                run = ("-m", "service", "run")
                ready, env = "accepting chunks on port", environment_of(settings)
                children.append(await Child.start(*run, ready=ready, env=env))
                addresses.append(settings.own_address)
            result = await load(s, children[1:], addresses, manager, redis, token, key)
        posts, scopes, busiest = json.loads(await discord.ask())
        return replace(result, posts=posts, scopes=scopes, busiest=busiest)
    except BaseException:
        for child in children:
            print("--- " + "\n".join(child.tail), file=sys.stderr)
        raise
    finally:
        await asyncio.gather(*(child.stop() for child in children))


async def load(
    s: Scenario, services: list[Child], addresses: list[str], manager: ManagerStandIn,
    redis: RedisServer | None, token: str, key: bytes,
) -> Result:  # fmt: skip
    links = [await manager.next_service() for _ in range(sum(max(j, s.slots, 1) for j in s.busy))]
    for number, link in enumerate(links):  # every slot ready, busy or not
        await link.configure(token=token, channel_id=str(CHANNEL_BASE + number), crypto_key=key)
    data = os.urandom(s.chunks * CHUNK)
    jobs: list[tuple[ServiceConnection, str]] = []
    for address, count in zip(addresses, s.busy, strict=True):
        for link in [link for link in links if link.own_address == address][:count]:
            jobs.append((link, (await link.start_upload(size=len(data), chunk_size=CHUNK))[0]))
    idle = [status_bytes(service.process.pid, "VmRSS") for service in services]
    ports = [address.split(":")[2].split("/")[0] for address in addresses]
    probe = await Child.start("-c", PROBE, *ports, ready="ready")
    windows = math.ceil(s.chunks / s.per_window) - 1
    ideal = max(len(jobs) * s.chunks / s.rate, windows * s.window)
    outages = [outage(redis, ideal / 3, s.redis_outage)] if redis and s.redis_outage else []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        started = time.perf_counter()
        done, *_ = await asyncio.gather(
            asyncio.gather(*(run_job(session, link, upload_id, data) for link, upload_id in jobs)),
            *outages,
        )
        taken = time.perf_counter() - started
    lag = json.loads(await probe.ask())
    peaks = [status_bytes(service.process.pid, "VmHWM") for service in services]
    return Result(s, ideal, taken, done.count(False), lag, list(zip(idle, peaks, strict=True)))


async def run_fleet(scenarios: list[Scenario], smoke: bool = False) -> list[Result]:
    """Run each scenario (a smoke run: a third of the chunks); print and return the results."""
    results = []
    for scenario in scenarios:
        if smoke:
            scenario = replace(scenario, chunks=max(scenario.per_window + 1, scenario.chunks // 3))
        print(f"{scenario.name} ...", file=sys.stderr, flush=True)
        if len(scenario.busy) > 1:
            async with RedisServer() as redis:
                result = await run_scenario(scenario, redis)
        else:
            result = await run_scenario(scenario, None)
        print(result.line(), flush=True)
        results.append(result)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a third of the chunks")
    parser.add_argument("--scenario", action="append", help="run those whose names start so")
    args = parser.parse_args()
    chosen = [s for s in SCENARIOS if any(s.name.startswith(n) for n in args.scenario or [""])]
    results = asyncio.run(run_fleet(chosen, args.smoke))
    return 0 if not any(result.failed for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())

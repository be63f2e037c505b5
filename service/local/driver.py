"""Driving the real service from outside, as the tests and the benchmark both do: start it as
a process of its own, write a chunk POST by hand (whole, or trickled a byte at a time), and
read its /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import aiohttp

from ..config import Settings, environment_of

BOUNDARY = "----chunk-boundary-7MA4YWxkTrZu0gW"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
FORM_TAIL = f"\r\n--{BOUNDARY}--\r\n".encode()
# The directory that holds this `service` package: a child process imports the same code.
_PACKAGE_ROOT = Path(__file__).resolve().parent.parent.parent
# What a child takes from this process's environment: where programs are, and the trust store
# if this process was given one (the tests give an empty one: tests/conftest.py says why).
_INHERITED = ("PATH", "SSL_CERT_FILE", "SSL_CERT_DIR")

Output = int | IO[bytes] | None  # what asyncio.create_subprocess_exec takes for stdout/stderr


async def spawn_service(
    settings: Settings, *, stdout: Output = None, stderr: Output = None, **environment: str
) -> asyncio.subprocess.Process:
    """`python -m service run` as its own process, configured by the environment alone (the
    settings', then `environment`), importing the same `service` package as this process."""
    env = child_environment(**(environment_of(settings) | environment))
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", "run", env=env, stdout=stdout, stderr=stderr
    )


def child_environment(**environment: str) -> dict[str, str]:
    """A child's whole environment: `environment`, this process's PATH (and trust store, if
    given one), and PYTHONPATH to import the same `service` package as this process."""
    inherited = {name: os.environ[name] for name in _INHERITED if name in os.environ}
    return {**inherited, "PYTHONPATH": str(_PACKAGE_ROOT), **environment}


async def stop_service(process: asyncio.subprocess.Process, patience: float = 15.0) -> None:
    """SIGTERM (the service's cue to shut down), then SIGKILL if it has not exited after
    `patience` seconds."""
    if process.returncode is None:
        process.terminate()
    try:
        async with asyncio.timeout(patience):
            await process.wait()
    except TimeoutError:
        process.kill()
        await process.wait()


def form_head(upload_id: str, index: int) -> bytes:
    """The browser's form up to the file part's bytes: the `id` and `chunk` fields, then the
    file part's headers (a file named `blob`). The file's bytes and FORM_TAIL follow."""
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="id"\r\n\r\n{upload_id}\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="chunk"\r\n\r\n{index}\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="blob"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()


def raw_chunk_body(upload_id: str, index: int, data: bytes) -> tuple[str, bytes]:
    """The browser's form written out by hand: (Content-Type, body), for tests that cut it."""
    return CONTENT_TYPE, form_head(upload_id, index) + data + FORM_TAIL


def request_head(port: int, path: str, length: int, content_type: str = CONTENT_TYPE) -> bytes:
    """An HTTP/1.1 POST's head for a body of `length` bytes."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


@dataclass(frozen=True)
class Trickled:
    """What a trickling client got: the start of the service's answer (b"" if none came)
    and the seconds from its claim to the answer, or to giving up."""

    answer: bytes
    seconds: float

    @property
    def status(self) -> int | None:
        parts = self.answer.split(b"\r\n", 1)[0].split()
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


async def trickle(
    port: int,
    path: str,
    upload_id: str,
    index: int,
    chunk: bytes | memoryview,
    *,
    interval: float,
    first_bytes: int = 0,
    stop: asyncio.Event | None = None,
    give_up_after: float = math.inf,
) -> Trickled:
    """Claim chunk `index` of the upload (the head, the fields and `first_bytes` of the file
    part), then send one more byte every `interval` seconds until the service answers, `stop`
    is set or `give_up_after` seconds pass."""
    head = form_head(upload_id, index)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        body_length = len(head) + len(chunk) + len(FORM_TAIL)
        writer.write(request_head(port, path, body_length) + head + chunk[:first_bytes])
        await writer.drain()
        claimed = time.perf_counter()
        answer = asyncio.create_task(reader.read(4096))
        sent = first_bytes
        while not (await asyncio.wait([answer], timeout=interval))[0]:
            waited = time.perf_counter() - claimed
            if (stop is not None and stop.is_set()) or waited > give_up_after:
                answer.cancel()
                return Trickled(b"", waited)
            writer.write(chunk[sent : sent + 1])
            sent += 1
        seconds = time.perf_counter() - claimed
        return Trickled(b"" if answer.exception() else answer.result(), seconds)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text exposition as {'name{labels}': value}, each sample as written."""
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


async def scrape_metrics(session: aiohttp.ClientSession, port: int) -> dict[str, float]:
    """The service's /metrics on 127.0.0.1:`port`, parsed."""
    async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
        response.raise_for_status()
        return parse_metrics(await response.text())

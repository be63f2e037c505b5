"""A real redis-server on a free loopback port, for tests and the benchmark: no persistence,
so a restart comes back empty, as a Redis pod that was rescheduled does."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Sequence
from typing import Self

from .loopback import free_port

READY_LINE = b"Ready to accept connections"
START_TIMEOUT = 10.0


def redis_server_path() -> str | None:
    """The redis-server executable (Debian's package installs /usr/bin/redis-server)."""
    return shutil.which("redis-server")


class RedisServer:
    """`redis-server` in a directory of its own; `stop` and `start` again keep the port.
    `options` are more of its command-line options (TLS, users)."""

    def __init__(self, executable: str | None = None, options: Sequence[str] = ()) -> None:
        found = executable or redis_server_path()
        if found is None:
            raise FileNotFoundError("redis-server is not installed (apt install redis-server)")
        self._executable = found
        self.port = free_port()
        self._directory = tempfile.TemporaryDirectory(prefix="redis-")
        self._options = list(options)
        self._process: asyncio.subprocess.Process | None = None
        self._drainer: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        """Start it (empty) and return once it accepts connections."""
        self._process = await asyncio.create_subprocess_exec(
            self._executable,
            *("--port", str(self.port), "--bind", "127.0.0.1", "--dir", self._directory.name),
            *("--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", ""),
            *self._options,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert self._process.stdout is not None
        seen: list[bytes] = []
        async with asyncio.timeout(START_TIMEOUT):
            while READY_LINE not in (line := await self._process.stdout.readline()):
                if not line:
                    output = b"".join(seen).decode(errors="replace")
                    raise RuntimeError(f"redis-server did not start:\n{output}")
                seen.append(line)
        self._drainer = asyncio.create_task(self._drain(self._process.stdout))

    async def stop(self) -> None:
        """Kill it at once, as a crash or a rescheduled pod would: nothing is saved."""
        if self._process is None:
            return
        process, self._process = self._process, None
        process.kill()
        await process.wait()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
        self._directory.cleanup()

    @staticmethod
    async def _drain(stream: asyncio.StreamReader) -> None:
        while await stream.readline():
            pass

"""One way to run a child process of the benchmark: start it, wait for its ready line, keep
its output, stop it.

The service, the relay (relay.py) and the health prober (probe.py) each run in a process of
their own so that their CPU and memory are their own. Each says on its output when it is
ready (the relay `ready PORT`, the prober `ready`, the service its log line "accepting
chunks on port ..."); its stdout and stderr are kept, line by line, for the failure message
and for what the prober reports when it stops. Every child imports this checkout's
`service`: the benchmark's own directory is put first on its PYTHONPATH.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from console import BenchFailure

REPO = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 60.0  # seconds a child may take to say it is ready
STOP_TIMEOUT = 15.0  # seconds a child may take to exit once asked, before it is killed
LINE_LIMIT = 16 * 1024 * 1024  # the longest line kept (the prober's report is one line)


def child_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment, this checkout first on PYTHONPATH, then `extra`."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **extra}


class Child:
    """A running child process and what it has written so far (`lines`)."""

    def __init__(self, name: str, process: asyncio.subprocess.Process) -> None:
        self.name = name
        self.lines: list[str] = []
        self._process = process
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(
        cls, name: str, args: Sequence[str], *, ready: str, env: Mapping[str, str] | None = None
    ) -> tuple[Child, str]:
        """Run `python ARGS...` from the checkout; the child and its first output line that
        contains `ready`. Fail, naming the child and its output, if it exits or takes longer
        than READY_TIMEOUT first."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *args,
            cwd=REPO,
            env=child_environment(env or {}),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            limit=LINE_LIMIT,
        )
        child = cls(name, process)
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                line = await child._ready_line(ready)
        except TimeoutError:
            await child.terminate()
            raise child.failure(f"did not say it was ready within {READY_TIMEOUT:g} s") from None
        except BaseException:
            await child.terminate()
            raise
        child._reader = asyncio.create_task(child._keep_output())
        return child, line

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.returncode

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.lines[-lines:])

    def summary(self) -> str:
        """Its name, whether it runs or how it exited, and its last output."""
        state = "running" if self.returncode is None else f"exit status {self.returncode}"
        return f"{self.name} ({state}), its last output:\n{self.tail()}"

    def failure(self, what: str) -> BenchFailure:
        return BenchFailure(f"{self.name} {what}\n--- {self.summary()}")

    async def finish(self, message: bytes = b"", patience: float = STOP_TIMEOUT) -> None:
        """Send `message`, close the child's stdin (the helpers' cue to end) and wait up to
        `patience` seconds for it to exit."""
        stdin = self._process.stdin
        if stdin is not None and not stdin.is_closing():
            with contextlib.suppress(ConnectionError):
                stdin.write(message)
                await stdin.drain()
            stdin.close()
        await self._wait(patience)

    async def terminate(self) -> None:
        """SIGTERM (the service's cue to shut down), and wait for the child to exit."""
        if self._process.returncode is None:
            self._process.terminate()
        await self._wait()

    async def _wait(self, patience: float = STOP_TIMEOUT) -> None:
        """Wait up to `patience` seconds for the child to exit, then kill it; read its output."""
        try:
            async with asyncio.timeout(patience):
                await self._process.wait()
        except TimeoutError:
            self._process.kill()
            await self._process.wait()
        if self._reader is not None:
            await self._reader

    async def _ready_line(self, ready: str) -> str:
        assert self._process.stdout is not None
        while raw := await self._process.stdout.readline():
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            if ready in line:
                return line
        await self._process.wait()
        raise self.failure("exited before it was ready")

    async def _keep_output(self) -> None:
        assert self._process.stdout is not None
        while raw := await self._process.stdout.readline():
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

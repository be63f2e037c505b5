"""A function in a process of its own, for the benchmark's clients whose work must not share
the measuring process and its loop: the health prober and the browser-like uploaders.

The child gets one end of a pipe as its first argument, sends READY once it is about to
begin, then whatever it reports. Processes are spawned, not forked: the benchmark's process
runs an event loop and threads, which a fork would copy half-way."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from report import BenchFailure

READY = "ready"
READY_TIMEOUT = 60.0  # seconds a child may take to start (it imports the benchmark)
STOP_TIMEOUT = 15.0  # seconds a child may take to exit once its pipe closes
_CONTEXT = multiprocessing.get_context("spawn")


class Child:
    """`target(pipe, *args)` in a child process, as an async context manager that waits for
    its READY on entry and for its exit on leaving."""

    def __init__(self, name: str, target: Callable[..., None], *args: object) -> None:
        self.name = name
        self._pipe, self._child_end = _CONTEXT.Pipe()
        self._process = _CONTEXT.Process(target=target, args=(self._child_end, *args))

    async def __aenter__(self) -> Child:
        self._process.start()
        self._child_end.close()
        if await self.receive(READY_TIMEOUT) != READY:
            raise BenchFailure(f"{self.name} did not say it was ready")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._pipe.close()
        await asyncio.to_thread(self._process.join, STOP_TIMEOUT)
        if self._process.is_alive():
            self._process.kill()
            await asyncio.to_thread(self._process.join)

    def send(self, message: object) -> None:
        self._pipe.send(message)

    async def receive(self, patience: float) -> Any:
        """The child's next message; BenchFailure if it exits or is silent for `patience` s."""

        def wait() -> Any:
            if not self._pipe.poll(patience):
                raise BenchFailure(f"{self.name} said nothing for {patience:g} s")
            return self._pipe.recv()

        try:
            return await asyncio.to_thread(wait)
        except EOFError:
            await asyncio.to_thread(self._process.join, STOP_TIMEOUT)
            raise BenchFailure(
                f"{self.name} exited (status {self._process.exitcode}); see its output above"
            ) from None


def stopped(pipe: Connection) -> None:
    """(In a child) until the parent sends anything or closes its end."""
    with contextlib.suppress(EOFError):
        pipe.recv()

"""The benchmark's two helper scripts, seen from the benchmark: the health prober (probe.py)
and the relay (relay.py), each a `Child` used as an async context manager."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from children import Child
from console import BenchFailure

HERE = Path(__file__).resolve().parent
PROBE = HERE / "probe.py"
RELAY = HERE / "relay.py"
PROBE_INTERVAL = 0.02


class Prober:
    """probe.py in its own process, timing GET /healthz on each port every PROBE_INTERVAL;
    once left, `seconds` holds every response time and `failures` the failed probes."""

    def __init__(self, ports: Sequence[int]) -> None:
        self._args = [str(PROBE), str(PROBE_INTERVAL), *map(str, ports)]
        self._child: Child | None = None
        self.seconds: list[float] = []
        self.failures = 0

    async def __aenter__(self) -> Prober:
        self._child, _ = await Child.start("the health prober", self._args, ready="ready")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._child is not None
        await self._child.finish(b"stop\n")
        if self._child.returncode != 0 or not self._child.lines:
            raise self._child.failure("failed")
        try:
            report = json.loads(self._child.lines[-1])
        except json.JSONDecodeError:
            raise self._child.failure("did not end with its report") from None
        for samples in report.values():
            self.seconds += samples["seconds"]
            self.failures += samples["failures"]


class Relay:
    """relay.py in its own process: the chunks received, parsed and re-sent to the Discord
    stand-in with no crypto (see that file); `address` takes them as the service would."""

    def __init__(self, base_url: str, token: str, channel: str, jobs: int, size: int) -> None:
        self._args = [str(RELAY), base_url, token, channel, str(jobs), str(size)]
        self._child: Child | None = None
        self.address = ""

    @property
    def pid(self) -> int:
        assert self._child is not None
        return self._child.pid

    async def __aenter__(self) -> Relay:
        self._child, ready = await Child.start("the relay (relay.py)", self._args, ready="ready")
        try:
            port = int(ready.split()[1])
        except (IndexError, ValueError):
            await self._child.finish()
            raise BenchFailure(f"the relay's ready line {ready!r} names no port") from None
        self.address = f"http://127.0.0.1:{port}/"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._child is not None
        await self._child.finish()

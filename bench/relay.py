"""Transport floor: what receiving, parsing and re-sending a chunk costs, with no crypto.

A bare relay built from the same parts as the service: aiohttp's server, the service's
streaming form reader (python-multipart), a pooled buffer, and aiohttp's client posting the
buffer to Discord's messages route through the service's memoryview payload. It copies each
chunk into its buffer where the service hashes and encrypts it, and it has no jobs, no
manager and no discord.py. Its CPU seconds per GiB are therefore what moving the bytes
costs on this machine with these libraries, the service's own work aside: the "other half"
of issue 6's CPU target. The benchmark checks that it stored every chunk intact.

Protocol (used by helpers.py): `python relay.py DISCORD_BASE_URL TOKEN CHANNEL JOBS SIZE`; the
relay takes chunks of files of SIZE bytes, keeps buffers for JOBS jobs' chunks in flight (as
the service does for its slots), prints
`ready PORT` once it listens on 127.0.0.1, answers each chunk POST (`id`, `chunk`, `file`)
with 200 once Discord stored it, and exits when stdin reaches EOF.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys

import aiohttp
from aiohttp import web

from service.chunks.memory_file import MemoryReader
from service.chunks.sealing import buffer_size
from service.intake.form import StreamingForm, boundary_of
from service.jobs.layout import BROWSER_CHUNKS_IN_FLIGHT, MANAGER_CHUNK_SIZE, ChunkLayout
from service.metrics import Metrics
from service.uploads.memory import ChunkMemory


def message_form(index: str, attachment: object) -> aiohttp.FormData:
    """A Discord message POST carrying one chunk: its index as content and filename, and the
    attachment (bytes, a memoryview or a `MemoryReader`) as `files[0]`."""
    message = {"content": index, "attachments": [{"id": 0, "filename": index}]}
    form = aiohttp.FormData()
    form.add_field("payload_json", json.dumps(message), content_type="application/json")
    form.add_field("files[0]", attachment, filename=index, content_type="application/octet-stream")
    return form


class CopySink:
    """Where the service's sealer hashes and encrypts a piece, this only copies it."""

    def __init__(self, buffer: bytearray, length: int) -> None:
        self.length = length
        self.view = memoryview(buffer)
        self.size = 0

    def write(self, data: memoryview) -> None:
        self.view[self.size : self.size + len(data)] = data
        self.size += len(data)


class Relay:
    def __init__(
        self, session: aiohttp.ClientSession, url: str, token: str, jobs: int, size: int
    ) -> None:
        self._session = session
        self._url = url
        self._headers = {"Authorization": f"Bot {token}"}
        budget = BROWSER_CHUNKS_IN_FLIGHT * jobs * buffer_size(MANAGER_CHUNK_SIZE)
        self._memory = ChunkMemory(budget, Metrics([], []))  # the service's buffers
        self._layout = ChunkLayout(size, MANAGER_CHUNK_SIZE)
        self._requests = itertools.count()

    async def post(self, request: web.Request) -> web.Response:
        owner = f"request {next(self._requests)}"  # no upload id before the fields: no bursts
        taken = await self._memory.take(buffer_size(MANAGER_CHUNK_SIZE), owner=owner, wait=60)
        read = request.content.readany
        with taken:
            with StreamingForm(boundary_of(request.headers["Content-Type"])) as form:
                fields = await form.read_fields(read)
                sink = CopySink(taken.buffer, self._layout.length(int(fields.chunk)))
                await form.read_file(read, sink)
            await self._store(fields.chunk, sink.view[: sink.size])
        return web.Response(text=fields.chunk)

    async def _store(self, index: str, payload: memoryview) -> None:
        form = message_form(index, MemoryReader(payload))
        async with self._session.post(self._url, data=form, headers=self._headers) as response:
            await response.read()
            response.raise_for_status()


async def main(base_url: str, token: str, channel: str, jobs: str, size: str) -> None:
    async with aiohttp.ClientSession() as session:
        url = f"{base_url}/channels/{channel}/messages"
        relay = Relay(session, url, token, int(jobs), int(size))
        app = web.Application()
        app.router.add_post("/", relay.post)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        print(f"ready {runner.addresses[0][1]}", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))

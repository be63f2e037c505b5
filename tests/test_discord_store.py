"""How a sealed chunk is handed to aiohttp: the buffer itself, in slices, its length known."""

from __future__ import annotations

import aiohttp.payload

from service.storage.discord_store import MemoryReader


class Collect:
    """Stands in for aiohttp's stream writer: keeps what it is given, as given."""

    def __init__(self) -> None:
        self.writes: list[object] = []

    async def write(self, chunk: object) -> None:
        self.writes.append(chunk)


async def test_sealed_chunk_is_sent_from_its_buffer_without_a_copy() -> None:
    buffer = bytearray(range(256)) * 4096  # 1 MiB, more than one slice
    payload = aiohttp.payload.get_payload(MemoryReader(memoryview(buffer)))
    assert payload.size == len(buffer)  # so the request has a Content-Length, not chunks

    writer = Collect()
    await payload.write(writer)  # type: ignore[arg-type]

    assert len(writer.writes) > 1
    assert all(isinstance(w, memoryview) and w.obj is buffer for w in writer.writes)
    assert b"".join(writer.writes) == buffer  # type: ignore[arg-type]

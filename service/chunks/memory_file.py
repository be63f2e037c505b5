"""A chunk in memory as a file that aiohttp sends from the memory itself.

Two senders need it: the store, whose sealed chunk goes to discord.py as an attachment (a
file), and the browser stand-in, whose chunk goes out in a form. Given bytes, aiohttp writes
them whole, and asyncio copies what the socket does not take at once into a buffer of its
own: another chunk-sized allocation per send. Given a file, aiohttp reads it in a thread,
a copy per piece. A `MemoryReader` is sent in slices of its memoryview instead, with its
length known up front (so the request has a Content-Length, as a browser's does).
"""

from __future__ import annotations

import io
from typing import Any

import aiohttp.abc
import aiohttp.payload


class MemoryReader(io.BufferedIOBase):
    """A seekable, read-only file over a memoryview (discord.py takes attachments as files);
    aiohttp sends it through `_MemoryPayload`."""

    def __init__(self, view: memoryview) -> None:
        self.view = view
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: len(self.view)}
        self._position = max(0, base[whence] + offset)
        return self._position

    def read(self, size: int | None = -1) -> bytes:
        end = len(self.view) if size is None or size < 0 else self._position + size
        data = self.view[self._position : end].tobytes()
        self._position += len(data)
        return data


class _MemoryPayload(aiohttp.payload.Payload):
    """Sends a `MemoryReader` from its memoryview, in slices, with its length known up front.

    Slices keep asyncio's transport buffer small: what the socket does not take at once is
    copied there, so one 10 MiB write would mean another 10 MiB in memory.
    """

    SLICE = 256 * 1024
    _value: MemoryReader

    def __init__(self, value: MemoryReader, *args: Any, **kwargs: Any) -> None:
        super().__init__(value, *args, **kwargs)
        self._size = len(value.view)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return self._value.view.tobytes().decode(encoding, errors)

    async def as_bytes(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return self._value.view.tobytes()  # the bytes themselves, not decoded as text

    async def write(self, writer: aiohttp.abc.AbstractStreamWriter) -> None:
        view = self._value.view
        for start in range(0, len(view), self.SLICE):
            await writer.write(view[start : start + self.SLICE])


aiohttp.payload.PAYLOAD_REGISTRY.register(
    _MemoryPayload, MemoryReader, order=aiohttp.payload.Order.try_first
)

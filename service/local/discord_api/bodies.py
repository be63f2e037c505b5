"""Reading a request's whole body before it is judged.

Discord (behind Cloudflare) receives a request's whole body before its rate limits and checks
answer, so a refused 10 MiB upload has still crossed the network: these readers consume the
body to its end and report its size.
"""

import json
import re
from dataclasses import dataclass, field
from typing import Any

from aiohttp import BodyPartReader, hdrs, web

_CHUNK = 64 * 1024
_FILE_FIELD = re.compile(r"files\[([0-9]+)\]")


@dataclass
class File:
    """One `files[n]` part of a message post."""

    index: int
    filename: str | None
    content_type: str
    data: bytes


@dataclass
class MessagePost:
    """A message post's body: payload_json (or the JSON body) and its files."""

    size: int  # bytes received
    payload: dict[str, Any] = field(default_factory=dict)
    files: list[File] = field(default_factory=list)
    too_large: bool = False  # an attachment exceeded the size limit (and was not kept)
    invalid_json: bool = False


async def read_message_post(request: web.Request, max_attachment_size: int) -> MessagePost:
    """The whole post, read to its end; ConnectionResetError if the client leaves midway."""
    post = MessagePost(size=0)
    try:
        if request.content_type == "application/json":
            post.payload = json.loads(await request.read())
        elif request.content_type == "multipart/form-data":
            async for part in await request.multipart():
                if isinstance(part, BodyPartReader):
                    await _read_part(part, post, max_attachment_size)
    except (json.JSONDecodeError, UnicodeDecodeError):
        post.invalid_json = True
    if not isinstance(post.payload, dict):
        post.payload, post.invalid_json = {}, True
    await request.release()
    post.size = request.content.total_bytes
    return post


async def read_json(request: web.Request) -> tuple[Any, int]:
    """The body as JSON (None when it is not JSON) and its size."""
    body = await request.read()
    try:
        return json.loads(body), len(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None, len(body)


async def _read_part(part: BodyPartReader, post: MessagePost, limit: int) -> None:
    if part.name == "payload_json":
        post.payload = json.loads(await part.text())
    elif match := _FILE_FIELD.fullmatch(part.name or ""):
        data = await _read_at_most(part, limit)
        if data is None:
            post.too_large = True
            return
        content_type = part.headers.get(hdrs.CONTENT_TYPE, "application/octet-stream")
        post.files.append(File(int(match[1]), part.filename, content_type, data))


async def _read_at_most(part: BodyPartReader, limit: int) -> bytes | None:
    """The part's bytes, or None once it exceeds limit (the rest is left for release())."""
    pieces: list[bytes] = []
    size = 0
    while piece := await part.read_chunk(_CHUNK):
        pieces.append(piece)
        size += len(piece)
        if size > limit:
            return None
    return b"".join(pieces)

"""Why a chunk is not taken: every refusal the service gives, one exception class each.

Domain code raises these; it knows nothing of HTTP. The one table that turns each into a
status, a `Retry-After` and a metric reason is `intake/answers.py`. The message of every
refusal is the sentence the client reads.

    Refusal
    ├── UnknownUpload       no upload with this id is running here or ended lately
    ├── UploadEnded         the upload has ended (finished, timed out, aborted, failed)
    ├── ChunkInFlight       the same chunk is being received or stored already
    ├── ChunkConflict       the chunk was stored already with other bytes
    ├── BadIndex            the chunk index is not a whole number, or out of range
    ├── MalformedForm       the body is not the form the browser sends
    │   └── WrongLength     the file part is not exactly the chunk's length
    ├── BodyTooLarge        the body is larger than any chunk of the upload can be
    ├── ClientStalled       the client sent nothing for too long in the middle of a chunk
    ├── ClientGone          the connection was lost in the middle of the chunk
    ├── TooManyChunks       too many chunks of the upload in flight       (retry_after)
    ├── MemoryBusy          chunk memory stayed spent for too long       (retry_after)
    ├── ShuttingDown        the service is stopping                      (retry_after)
    └── StoreError          storing on Discord failed
        ├── DiscordFailed   Discord or the way to it failed; retrying the chunk may help
        ├── DiscordBusy     Discord asks for a longer wait than a client is held for (retry_after)
        ├── DiscordRefused  Discord refuses this job's requests (token, channel, size): the job ends
        └── DiscordClosed   the service closed its Discord session, stopping   (retry_after)
"""

from __future__ import annotations

import math


class Refusal(Exception):
    """A chunk that cannot be taken; `str()` is the sentence for the client.

    `retry_after` is the seconds after which the same chunk may succeed, when that is known.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UnknownUpload(Refusal):
    pass


class UploadEnded(Refusal):
    pass


class ChunkInFlight(Refusal):
    pass


class ChunkConflict(Refusal):
    pass


class BadIndex(Refusal):
    pass


class MalformedForm(Refusal):
    pass


class WrongLength(MalformedForm):
    pass


class BodyTooLarge(Refusal):
    pass


class ClientStalled(Refusal):
    pass


class ClientGone(Refusal):
    pass


class TooManyChunks(Refusal):
    pass


class MemoryBusy(Refusal):
    pass


class ShuttingDown(Refusal):
    def __init__(self, message: str = "the upload service is shutting down") -> None:
        super().__init__(message, retry_after=5.0)


class StoreError(Refusal):
    """`maybe_stored`: a try of the post went out without a definite answer, so Discord may
    hold its message under an id nobody learned, whatever the last try's answer was."""

    maybe_stored = False


class DiscordFailed(StoreError):
    pass


class DiscordBusy(StoreError):
    def __init__(self, retry_after: float, message: str | None = None) -> None:
        seconds = math.ceil(retry_after)  # as the Retry-After header rounds it
        unit = "second" if seconds == 1 else "seconds"
        message = message or f"Discord rate-limits this channel for {seconds} more {unit}"
        super().__init__(message, retry_after)


class DiscordRefused(StoreError):
    pass


class DiscordClosed(StoreError):
    """The service closed its Discord session (it is stopping): the request was not sent, and
    is not tried again."""

    def __init__(self) -> None:
        super().__init__("the Discord session was closed: the service is stopping", 5.0)

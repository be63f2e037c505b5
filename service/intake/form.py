"""A streaming reader for the chunk POST's multipart/form-data body.

Small fields (`id`, `chunk`) are collected as text until the `file` part begins
(`read_fields`); the caller then chooses where the file's bytes go, and they stream straight
to that sink (`read_file`), so a chunk is never buffered whole before it is hashed and
encrypted. Every limit is counted here because python-multipart enforces none of them.

The sink knows how long the file part must be (the chunk's exact length), so its bytes are
counted rather than scanned: python-multipart parses everything else, but each write to it
stops where a header block ends, and once the file part's headers are read the next
`length` bytes go to the sink without the parser searching them for the boundary. The
parser then sees an empty file part and checks the rest of the body as usual. That search
was about a tenth of the service's CPU per chunk.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from python_multipart.exceptions import FormParserError, MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from ..refusals import MalformedForm, WrongLength

FILE_FIELD = "file"
FIELD_LIMIT = 1024  # bytes in a small field's value
HEADER_LIMIT = 8192  # bytes in one part's headers
PART_LIMIT = 8  # parts in one body
_HEADERS_END = b"\r\n\r\n"  # a header block's last line break and the empty line after it


Read = Callable[[], Awaitable[bytes]]  # the body's next piece; b"" at its end


@dataclass(frozen=True)
class ChunkFields:
    """The small fields sent before the file part: which upload, which chunk."""

    upload_id: str
    chunk: str


class Sink(Protocol):
    length: int  # exactly how many bytes the file part must have

    def write(self, data: memoryview) -> None: ...


def boundary_of(content_type: str) -> bytes:
    """The multipart boundary named in a Content-Type header; raise `MalformedForm` if none."""
    kind, options = parse_options_header(content_type)
    if kind != b"multipart/form-data":
        raise MalformedForm(f"the body must be multipart/form-data, not {kind.decode('latin-1')!r}")
    boundary = options.get(b"boundary", b"")
    if not boundary:
        raise MalformedForm("the multipart/form-data Content-Type has no boundary")
    return boundary


class StreamingForm:
    """Read the body's fields, then stream its file part into a sink.

    `read_fields` and `read_file` pull the body through a `Read`; `feed`, `open_file` and
    `finish` are the same steps for bytes at hand. Use it as a context manager: leaving it
    breaks the reference cycle between the form and its parser, so the sink (a chunk's
    buffer) is freed at once rather than by the garbage collector some chunks later.
    """

    def __init__(self, boundary: bytes) -> None:
        self.fields: dict[str, str] = {}
        self.file_seen = False
        self._sink: Sink | None = None
        self._awaiting_sink = False  # the file part has begun; `open_file` has not been called
        self._pending: tuple[bytes, int] = (b"", 0)  # the piece it began in, where its bytes start
        self._parts = 0
        self._complete = False
        self._headers: dict[str, bytes] = {}
        self._header_size = 0
        self._field = bytearray()
        self._value = bytearray()
        self._name: str | None = None
        self._text = bytearray()
        self._delimiter = b"\r\n--" + boundary  # what must follow the file part's bytes
        self._seam = b""  # the last bytes written before the file part, up to 3
        self._file_length = 0  # what the sink said the file part's length must be
        self._counting = 0  # file bytes still to pass to the sink without the parser
        self._after_file = b""  # the part of the delimiter still to be checked
        try:
            self._parser = MultipartParser(
                boundary,
                {
                    "on_part_begin": self._part_begin,
                    "on_header_field": self._header_field,
                    "on_header_value": self._header_value,
                    "on_header_end": self._header_end,
                    "on_headers_finished": self._headers_finished,
                    "on_part_data": self._part_data,
                    "on_part_end": self._part_end,
                    "on_end": self._end,
                },
            )
        except FormParserError as error:  # a boundary it cannot take (over 256 bytes)
            raise MalformedForm(f"the multipart boundary is unusable: {error}") from None

    async def read_fields(self, read: Read) -> ChunkFields:
        """Read up to the start of the file part; the fields that came before it."""
        while not self.file_seen:
            piece = await read()
            if not piece:
                self.finish()  # names a body cut short
                raise MalformedForm(f"the field {FILE_FIELD!r} is missing")
            self.feed(piece)
        for name in ("id", "chunk"):
            if name not in self.fields:
                raise MalformedForm(f"the field {name!r} is missing (it must come before 'file')")
        return ChunkFields(self.fields["id"], self.fields["chunk"])

    async def read_file(self, read: Read, sink: Sink) -> None:
        """Stream the file part into `sink`, then read the rest of the body to its end."""
        self.open_file(sink)
        while piece := await read():
            self.feed(piece)
        self.finish()

    def feed(self, data: bytes, start: int = 0) -> None:
        """Parse the next piece of the body from `start`; once the file part begins, keep the
        rest of the piece (not a copy of it) until `open_file` says where it goes."""
        if self._awaiting_sink:
            raise RuntimeError("the file part has begun: open_file must come first")
        while start < len(data):
            if self._counting:
                start = self._count_file_bytes(data, start)
            elif not self.file_seen:
                start = self._write(data, start, self._end_of_headers(data, start))
                if self._awaiting_sink:
                    self._pending = (data, start)
                    return
            else:
                self._check_delimiter(data, start)
                start = self._write(data, start, len(data))

    def open_file(self, sink: Sink) -> None:
        """The file part's bytes go to `sink`, which must take exactly `sink.length`."""
        self._sink = sink
        self._awaiting_sink = False
        self._file_length = self._counting = sink.length
        self._after_file = self._delimiter
        (data, start), self._pending = self._pending, (b"", 0)
        self.feed(data, start)

    def __enter__(self) -> StreamingForm:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._parser.callbacks = {}
        self._sink = None

    def finish(self) -> None:
        """The body has ended; raise `MalformedForm` if the form was cut short."""
        if self._counting:
            raise WrongLength(
                f"the file part is shorter than the {self._file_length} bytes it must have"
            )
        if not self._complete:
            raise MalformedForm("the multipart body ended before its closing boundary")

    # --- writing to the parser, and around it --------------------------------------------

    def _write(self, data: bytes, start: int, end: int) -> int:
        """Parse `data[start:end]`; return `end`."""
        try:
            self._parser.write(data if (start, end) == (0, len(data)) else data[start:end])
        except MultipartParseError as error:
            raise MalformedForm(f"the multipart body is malformed: {error}") from None
        return end

    def _end_of_headers(self, data: bytes, start: int) -> int:
        """Just past the first header block end after `start` (its CRLF CRLF may have begun
        in the previous piece), or `len(data)`: so that a header block never ends in the
        middle of a write, and the file's bytes can be counted from the write's end."""
        seam = self._seam + data[start : start + 3]
        found = seam.find(_HEADERS_END)
        if found >= 0:
            end = start + found + len(_HEADERS_END) - len(self._seam)
        else:
            found = data.find(_HEADERS_END, start)
            end = found + len(_HEADERS_END) if found >= 0 else len(data)
        self._seam = (self._seam + data[max(start, end - 3) : end])[-3:]
        return end

    def _count_file_bytes(self, data: bytes, start: int) -> int:
        """Pass the file part's next bytes to the sink; return where they end in `data`."""
        assert self._sink is not None
        end = min(start + self._counting, len(data))
        self._sink.write(memoryview(data)[start:end])
        self._counting -= end - start
        return end

    def _check_delimiter(self, data: bytes, start: int) -> None:
        """Right after the file part's `length` bytes its delimiter must begin; if not, the
        file part has another length (the parser would only see stray bytes)."""
        seen = data[start : start + len(self._after_file)]
        if not self._after_file.startswith(seen):
            raise self._not_exactly_the_length()
        self._after_file = self._after_file[len(seen) :]

    def _not_exactly_the_length(self) -> WrongLength:
        return WrongLength(
            f"the file part is not exactly {self._file_length} bytes long: "
            "no boundary follows its last byte"
        )

    # --- parser callbacks ----------------------------------------------------------------

    def _part_begin(self) -> None:
        self._parts += 1
        if self._parts > PART_LIMIT:
            raise MalformedForm(f"the form has more than {PART_LIMIT} parts")
        self._headers.clear()
        self._header_size = 0
        self._name = None
        self._sink = None
        self._text.clear()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._value += data[start:end]

    def _count_header(self, size: int) -> None:
        self._header_size += size
        if self._header_size > HEADER_LIMIT:
            raise MalformedForm(f"a part's headers are longer than {HEADER_LIMIT} bytes")

    def _header_end(self) -> None:
        self._headers[self._field.decode("latin-1").lower()] = bytes(self._value)
        self._field.clear()
        self._value.clear()

    def _headers_finished(self) -> None:
        disposition, options = parse_options_header(self._headers.get("content-disposition"))
        name = options.get(b"name")
        if disposition != b"form-data" or name is None:
            raise MalformedForm("a part has no Content-Disposition: form-data header with a name")
        self._name = name.decode("utf-8", "replace")
        if self._name in self.fields or (self._name == FILE_FIELD and self.file_seen):
            raise MalformedForm(f"the field {self._name!r} appears twice")
        if self._name == FILE_FIELD:
            self.file_seen = self._awaiting_sink = True

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._sink is not None:  # its `length` bytes were counted: the file part goes on
            raise self._not_exactly_the_length()
        self._text += data[start:end]
        if len(self._text) > FIELD_LIMIT:
            raise MalformedForm(f"the field {self._name!r} is longer than {FIELD_LIMIT} bytes")

    def _part_end(self) -> None:
        if self._name is not None and self._name != FILE_FIELD:
            try:
                self.fields[self._name] = self._text.decode("utf-8")
            except UnicodeDecodeError:
                raise MalformedForm(f"the field {self._name!r} is not UTF-8 text") from None

    def _end(self) -> None:
        self._complete = True

"""Reading the chunk POST's multipart/form-data body as it streams in (PROTOCOL.md section 2)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.intake.form import StreamingForm, boundary_of
from service.local.browser import chunk_form
from service.refusals import MalformedForm, WrongLength

BOUNDARY = b"----WebKitFormBoundary7MA4YWxkTrZu0gW"
UPLOAD_ID = "0b4c2f63-3f7e-4a53-9d0e-1c1f6f1a9c2e"
# File bytes that look like the start of a boundary, line breaks and binary noise.
TRICKY = b"\r\n--" + BOUNDARY[:-1] + b"\r\n--\r\n" + random.Random(4).randbytes(3000) + b"\r\n"


class Collect:
    """A sink for a file part of `length` bytes that keeps a copy of every byte it is given."""

    def __init__(self, length: int = 0) -> None:
        self.length = length
        self.data = bytearray()

    def write(self, data: memoryview) -> None:
        self.data += data


def part(
    name: bytes, value: bytes, *, filename: bytes | None = None, headers: bytes = b""
) -> bytes:
    disposition = b'form-data; name="' + name + b'"'
    if filename is not None:
        disposition += b'; filename="' + filename + b'"'
    return (
        b"--" + BOUNDARY + b"\r\nContent-Disposition: " + disposition + b"\r\n"
        + headers + b"\r\n" + value + b"\r\n"
    )  # fmt: skip


def body(*parts: bytes) -> bytes:
    return b"".join(parts) + b"--" + BOUNDARY + b"--\r\n"


def chunk_body(file_bytes: bytes, index: bytes = b"0") -> bytes:
    """The body the browser client sends: fields `id`, `chunk`, `file` in that order."""
    file_headers = b"Content-Type: application/octet-stream\r\n"
    return body(
        part(b"id", UPLOAD_ID.encode()),
        part(b"chunk", index),
        part(b"file", file_bytes, filename=b"blob", headers=file_headers),
    )


def read(
    data: bytes, file_length: int = 0, step: int = 7, boundary: bytes = BOUNDARY
) -> tuple[StreamingForm, Collect]:
    """Feed `data` `step` bytes at a time and close the form; the file part, if any, must
    have `file_length` bytes."""
    opened = False
    sink = Collect(file_length)
    form = StreamingForm(boundary)
    for offset in range(0, len(data), step):
        form.feed(data[offset : offset + step])
        if form.file_seen and not opened:
            form.open_file(sink)
            opened = True
    form.finish()
    return form, sink


def test_browser_form_gives_fields_and_exactly_the_file_bytes() -> None:
    form, sink = read(chunk_body(TRICKY, b"12"), len(TRICKY))
    assert form.fields == {"id": UPLOAD_ID, "chunk": "12"}
    assert bytes(sink.data) == TRICKY
    assert form.file_seen


async def test_the_browser_stand_ins_form_is_read() -> None:
    writer = chunk_form(UPLOAD_ID, 3, TRICKY)._gen_form_data()
    encoded = await writer.as_bytes()
    assert writer.size == len(encoded)  # sent with a Content-Length, as a browser's form is
    form, sink = read(encoded, len(TRICKY), boundary=boundary_of(writer.content_type))
    assert form.fields == {"id": UPLOAD_ID, "chunk": "3"}
    assert bytes(sink.data) == TRICKY


class Writes:
    """A stream writer that keeps what it is given."""

    def __init__(self) -> None:
        self.pieces: list[bytes | memoryview] = []

    async def write(self, piece: bytes | memoryview) -> None:
        self.pieces.append(piece)


async def test_the_browser_stand_in_sends_a_chunk_from_its_memory_in_slices() -> None:
    data = random.Random(5).randbytes(1024 * 1024)
    writes = Writes()
    await chunk_form(UPLOAD_ID, 0, data)._gen_form_data().write(writes)  # type: ignore[arg-type]
    slices = [p for p in writes.pieces if isinstance(p, memoryview) and p.obj is data]
    assert len(slices) > 1 and b"".join(slices) == data  # no copy, and none of it whole
    assert all(len(piece) < len(data) for piece in writes.pieces)


def test_empty_file_part_gives_no_bytes() -> None:
    form, sink = read(chunk_body(b""))
    assert form.file_seen
    assert sink.data == b""


def test_form_ending_without_a_final_line_break_is_complete() -> None:
    form, sink = read(chunk_body(b"abc").removesuffix(b"\r\n"), 3)
    assert (form.fields["chunk"], bytes(sink.data)) == ("0", b"abc")


async def test_read_fields_stops_where_the_file_begins_and_read_file_streams_the_rest() -> None:
    data = chunk_body(b"payload", b"4")
    pieces = [data[i : i + 5] for i in range(0, len(data), 5)]

    async def next_piece() -> bytes:
        return pieces.pop(0) if pieces else b""

    sink = Collect(len(b"payload"))
    with StreamingForm(BOUNDARY) as form:
        fields = await form.read_fields(next_piece)
        assert (fields.upload_id, fields.chunk) == (UPLOAD_ID, "4")
        assert sink.data == b""
        await form.read_file(next_piece, sink)
    assert bytes(sink.data) == b"payload"


@given(file_bytes=st.binary(max_size=2000), step=st.integers(1, 300))
def test_any_file_bytes_in_any_piece_size_arrive_intact(file_bytes: bytes, step: int) -> None:
    form, sink = read(chunk_body(file_bytes), len(file_bytes), step=step)
    assert bytes(sink.data) == file_bytes
    assert form.fields["chunk"] == "0"


@pytest.mark.parametrize("step", [1, 3, 7, 64, 10_000])
def test_header_block_ends_split_anywhere_or_inside_a_field_leave_the_file_intact(
    step: int,
) -> None:
    """The file's bytes are counted from where its headers end, so that end must be found
    wherever the pieces split it, and a blank line inside a field must not be taken for it."""
    data = body(
        part(b"id", UPLOAD_ID.encode()),
        part(b"note", b"a\r\n\r\nb\r\n"),
        part(b"chunk", b"0"),
        part(b"file", TRICKY, filename=b"blob"),
    )
    form, sink = read(data, len(TRICKY), step=step)
    assert form.fields["note"] == "a\r\n\r\nb\r\n"
    assert bytes(sink.data) == TRICKY


@pytest.mark.parametrize("step", [7, 10_000])
@pytest.mark.parametrize(
    ("sent", "complaint"),
    [
        pytest.param(99, "not exactly 100 bytes long", id="1-short"),
        pytest.param(97, "not exactly 100 bytes long", id="3-short"),
        pytest.param(20, "shorter than the 100 bytes", id="much-shorter"),
        pytest.param(101, "not exactly 100 bytes long", id="1-long"),
        pytest.param(500, "not exactly 100 bytes long", id="much-longer"),
    ],
)
def test_file_part_of_another_length_is_refused_naming_the_length(
    sent: int, complaint: str, step: int
) -> None:
    with pytest.raises(WrongLength, match=complaint):
        read(chunk_body(TRICKY[:sent] + b"x" * (sent - len(TRICKY[:sent]))), 100, step=step)


# --- the Content-Type ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/form-data; boundary=abc123",
        'multipart/form-data; boundary="abc123"',
        "Multipart/Form-Data; charset=utf-8; boundary=abc123",
    ],
)
def test_boundary_is_read_from_the_content_type(content_type: str) -> None:
    assert boundary_of(content_type) == b"abc123"


@pytest.mark.parametrize(
    ("content_type", "complaint"),
    [
        pytest.param("application/json", "application/json", id="json"),
        pytest.param("application/x-www-form-urlencoded", "multipart/form-data", id="urlencoded"),
        pytest.param("multipart/mixed; boundary=abc", "multipart/mixed", id="multipart-mixed"),
        pytest.param("", "multipart/form-data", id="no-content-type"),
        pytest.param("multipart/form-data", "boundary", id="no-boundary"),
        pytest.param("multipart/form-data; boundary=", "boundary", id="empty-boundary"),
    ],
)
def test_unusable_content_type_is_refused_naming_why(content_type: str, complaint: str) -> None:
    with pytest.raises(MalformedForm, match=complaint):
        boundary_of(content_type)


# --- bodies that are refused -----------------------------------------------------------------


@pytest.mark.parametrize(
    "cut",
    [
        pytest.param(0, id="empty-body"),
        pytest.param(60, id="inside-the-headers"),
        pytest.param(-200, id="inside-the-file"),
        pytest.param(-len(BOUNDARY) - 6, id="before-the-closing-boundary"),
        pytest.param(-3, id="closing-boundary-without-its-dashes"),
    ],
)
def test_truncated_body_is_refused_on_close(cut: int) -> None:
    with pytest.raises(MalformedForm):
        read(chunk_body(TRICKY)[:cut], len(TRICKY))


def test_field_of_1024_bytes_is_accepted() -> None:
    form, _ = read(body(part(b"id", b"x" * 1024)))
    assert form.fields["id"] == "x" * 1024


def test_field_over_1024_bytes_is_refused() -> None:
    with pytest.raises(MalformedForm, match="longer than 1024"):
        read(body(part(b"id", b"x" * 1025)))


def test_headers_under_8192_bytes_are_accepted() -> None:
    headers = b"X-A: " + b"a" * 3900 + b"\r\nX-B: " + b"b" * 3900 + b"\r\n"
    form, _ = read(body(part(b"id", b"1", headers=headers)))
    assert form.fields == {"id": "1"}


def test_headers_over_8192_bytes_are_refused() -> None:
    headers = b"".join(b"X-%d: " % n + b"h" * 3000 + b"\r\n" for n in range(3))
    with pytest.raises(MalformedForm):
        read(body(part(b"id", b"1", headers=headers)))


def test_eight_parts_are_accepted() -> None:
    form, _ = read(body(*(part(b"f%d" % n, b"v") for n in range(8))))
    assert len(form.fields) == 8


def test_more_than_eight_parts_are_refused() -> None:
    with pytest.raises(MalformedForm, match="more than 8 parts"):
        read(body(*(part(b"f%d" % n, b"v") for n in range(9))))


@pytest.mark.parametrize(
    "parts",
    [
        pytest.param((part(b"id", b"a"), part(b"id", b"b")), id="field"),
        pytest.param(
            (part(b"file", b"a", filename=b"blob"), part(b"file", b"b", filename=b"blob")),
            id="file",
        ),
    ],
)
def test_duplicate_field_is_refused(parts: tuple[bytes, ...]) -> None:
    with pytest.raises(MalformedForm, match="twice"):
        read(body(*parts), file_length=1)


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(b"Content-Type: text/plain\r\n", id="no-content-disposition"),
        pytest.param(b"Content-Disposition: form-data\r\n", id="no-name"),
        pytest.param(b'Content-Disposition: attachment; name="id"\r\n', id="not-form-data"),
    ],
)
def test_part_without_a_form_data_name_is_refused(headers: bytes) -> None:
    with pytest.raises(MalformedForm, match="Content-Disposition"):
        read(b"--" + BOUNDARY + b"\r\n" + headers + b"\r\nvalue\r\n--" + BOUNDARY + b"--\r\n")


def test_field_that_is_not_utf8_is_refused() -> None:
    with pytest.raises(MalformedForm, match="UTF-8"):
        read(body(part(b"chunk", b"\xff\xfe")))


def test_body_that_is_not_multipart_is_refused() -> None:
    with pytest.raises(MalformedForm):
        read(b'{"id": "x", "chunk": "0"}')

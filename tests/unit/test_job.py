"""Chunk arithmetic (PROTOCOL.md section 2) and one job's chunk bookkeeping (section 5)."""

from __future__ import annotations

import hashlib
import uuid

import pytest
from conftest import expected_hash
from hypothesis import given
from hypothesis import strategies as st

from service.jobs.job import Job, StoredChunk
from service.jobs.layout import MANAGER_CHUNK_SIZE, ChunkLayout
from service.refusals import BadIndex, ChunkInFlight, UploadEnded

MAX_SAFE_INTEGER = 2**53 - 1
PNG_HEAD = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
)
PDF_HEAD = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n"


def lengths(layout: ChunkLayout) -> list[int]:
    return [layout.length(i) for i in range(layout.count)]


def make_job(size: int = 25, chunk_size: int = 10) -> Job:
    return Job(str(uuid.uuid4()), ChunkLayout(size, chunk_size))


def stored(index: int) -> StoredChunk:
    return StoredChunk(f"10000000000000000{index}", hashlib.sha256(bytes([index])).hexdigest())


# --- ChunkLayout -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "chunk_size", "expected"),
    [
        pytest.param(25, 10, [10, 10, 5], id="remainder-in-last-chunk"),
        pytest.param(30, 10, [10, 10, 10], id="exact-multiple-last-chunk-is-full"),
        pytest.param(10, 10, [10], id="one-full-chunk"),
        pytest.param(3, 10, [3], id="smaller-than-a-chunk"),
        pytest.param(1, 1, [1], id="one-byte"),
        pytest.param(0, 10, [], id="empty-file-has-no-chunks"),
    ],
)
def test_chunk_lengths_follow_the_protocol(size: int, chunk_size: int, expected: list[int]) -> None:
    layout = ChunkLayout(size, chunk_size)
    assert layout.count == len(expected)
    assert lengths(layout) == expected


def test_production_chunk_size_exact_multiple_ends_with_a_full_chunk() -> None:
    layout = ChunkLayout(3 * MANAGER_CHUNK_SIZE, MANAGER_CHUNK_SIZE)
    assert layout.count == 3
    assert layout.length(2) == MANAGER_CHUNK_SIZE


@given(
    size=st.integers(0, 5000) | st.integers(0, MAX_SAFE_INTEGER),
    chunk_size=st.integers(1, 600) | st.integers(1, MAX_SAFE_INTEGER),
)
def test_lengths_sum_to_size_and_each_is_1_to_chunk_size(size: int, chunk_size: int) -> None:
    layout = ChunkLayout(size, chunk_size)
    assert layout.count == -(-size // chunk_size)  # exact integer ceiling
    if layout.count == 0:
        assert size == 0
        return
    first, last = layout.length(0), layout.length(layout.count - 1)
    assert 1 <= last <= chunk_size
    assert first == (chunk_size if layout.count > 1 else last)
    assert chunk_size * (layout.count - 1) + last == size
    if size <= 5000:
        assert sum(lengths(layout)) == size
        assert all(1 <= n <= chunk_size for n in lengths(layout))


@pytest.mark.parametrize(("text", "index"), [("0", 0), ("1", 1), ("2", 2)])
def test_parse_index_accepts_decimal_indexes(text: str, index: int) -> None:
    assert ChunkLayout(25, 10).parse_index(text) == index


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("-1", id="negative"),
        pytest.param("1.0", id="decimal-point"),
        pytest.param(" 1", id="leading-space"),
        pytest.param("1\n", id="trailing-newline"),
        pytest.param("+1", id="plus-sign"),
        pytest.param("1_0", id="underscore"),
        pytest.param("abc", id="letters"),
        pytest.param("", id="empty"),
        pytest.param("\u0663", id="arabic-indic-digit"),
        pytest.param("\uff11", id="fullwidth-digit"),
        pytest.param("3", id="one-past-the-last"),
        pytest.param("99999999999999999999", id="huge"),
    ],
)
def test_parse_index_refuses_what_is_not_a_chunk_index(text: str) -> None:
    with pytest.raises(BadIndex):
        ChunkLayout(25, 10).parse_index(text)


def test_empty_file_accepts_no_chunk_index() -> None:
    with pytest.raises(BadIndex):
        ChunkLayout(0, 10).parse_index("0")


# --- Job -------------------------------------------------------------------------------------


def test_chunk_being_received_cannot_be_claimed_again() -> None:
    job = make_job()
    assert job.claim(1) is None
    with pytest.raises(ChunkInFlight):
        job.claim(1)


def test_released_chunk_can_be_sent_again() -> None:
    job = make_job()
    job.claim(1)
    job.release(1)
    assert job.claim(1) is None


def test_claiming_a_stored_chunk_returns_it_for_a_resend() -> None:
    job = make_job()
    job.claim(0)
    job.record(0, stored(0), PNG_HEAD)
    assert job.claim(0) == stored(0)
    assert job.claim(0) == stored(0)


@pytest.mark.parametrize("index", [0, 1])
def test_ended_job_refuses_chunks(index: int) -> None:
    job = make_job()
    job.claim(0)
    job.record(0, stored(0), PNG_HEAD)
    job.end()
    with pytest.raises(UploadEnded):
        job.claim(index)


def test_end_reports_true_only_once() -> None:
    job = make_job()
    assert [job.end(), job.end(), job.end()] == [True, False, False]


def test_job_is_complete_only_when_every_chunk_is_stored() -> None:
    job = make_job(25, 10)
    for index in (2, 0):
        job.claim(index)
        job.record(index, stored(index), PNG_HEAD)
        assert not job.complete
    job.claim(1)
    job.record(1, stored(1), PNG_HEAD)
    assert job.complete


def test_empty_file_job_is_complete_at_once() -> None:
    job = make_job(0, 10)
    assert job.complete
    assert job.messages() == []


def test_messages_are_in_chunk_order_whatever_the_recording_order() -> None:
    job = make_job(45, 10)
    for index in (3, 0, 4, 2, 1):
        job.claim(index)
        job.record(index, stored(index), PNG_HEAD)
    assert job.messages() == [stored(i).message_id for i in range(5)]


def test_file_hash_is_sha256_of_chunk_digests_in_chunk_order() -> None:
    data = bytes(range(256)) * 3
    chunks = [data[i : i + 100] for i in range(0, len(data), 100)]
    digests = [hashlib.sha256(chunk).hexdigest() for chunk in chunks]
    job = make_job(len(data), 100)
    for index in reversed(range(len(chunks))):
        job.record(index, StoredChunk(f"20000000000000000{index}", digests[index]), chunks[index])
    assert job.file_hash() == expected_hash(data, 100)


def test_head_for_sniffing_comes_from_chunk_zero() -> None:
    job = make_job()
    job.record(1, stored(1), PNG_HEAD)
    assert job.head is None
    job.record(0, stored(0), PDF_HEAD)
    job.record(2, stored(2), PNG_HEAD)
    assert job.head == PDF_HEAD

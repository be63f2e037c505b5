"""A chunk's attachment, digest and MIME type (PROTOCOL.md section 4), checked against Node."""

from __future__ import annotations

import base64
import hashlib
import itertools
import random
from typing import Any

import pytest
from conftest import VECTORS
from cryptography.exceptions import InvalidTag
from hypothesis import given
from hypothesis import strategies as st
from puremagic.main import magic_header_array

from service.chunks.mime import sniff_mime
from service.chunks.sealing import (
    SNIFF_SIZE,
    ChunkDigest,
    ChunkSealer,
    SealedChunk,
    open_attachment,
)
from service.jobs.job import file_hash
from service.manager.packets import MIME_TYPE_PATTERN

AES = VECTORS["aes_256_gcm"]
KEY = base64.b64decode(AES["key_base64"])
IV = bytes.fromhex(AES["iv_hex"])
PIECE_SIZES = [1, 0, 15, 16, 17, 3, 100, 7]  # uneven, across AES block boundaries


def pieces(data: bytes, sizes: list[int] = PIECE_SIZES) -> list[bytes]:
    """Split `data` into pieces of the given sizes (some non-zero), cycling until it is used up."""
    out: list[bytes] = []
    offset = 0
    for size in itertools.cycle(sizes):
        out.append(data[offset : offset + size])
        offset += size
        if offset >= len(data):
            return out
    raise AssertionError("unreachable")


def seal(plaintext: bytes, key: bytes | None, iv: bytes | None = None) -> SealedChunk:
    sealer = ChunkSealer(len(plaintext), key, iv)
    for piece in pieces(plaintext):
        sealer.write(piece)
    return sealer.seal()


@pytest.fixture(params=AES["vectors"], ids=lambda v: f"{len(v['plaintext_hex']) // 2}-bytes")
def vector(request: pytest.FixtureRequest) -> dict[str, Any]:
    chosen: dict[str, Any] = request.param
    return chosen


def test_attachment_matches_nodes_known_answer(vector: dict[str, Any]) -> None:
    plaintext = bytes.fromhex(vector["plaintext_hex"])
    assert bytes(seal(plaintext, KEY, IV).payload).hex() == vector["attachment_hex"]


def test_attachment_opens_to_the_plaintext(vector: dict[str, Any]) -> None:
    plaintext = bytes.fromhex(vector["plaintext_hex"])
    assert open_attachment(KEY, bytes.fromhex(vector["attachment_hex"])) == plaintext


def test_digest_is_sha256_of_the_plaintext(vector: dict[str, Any]) -> None:
    plaintext = bytes.fromhex(vector["plaintext_hex"])
    assert seal(plaintext, KEY, IV).digest == hashlib.sha256(plaintext).hexdigest()


@pytest.mark.parametrize("position", [0, 15, 16, 31, 32, -1], ids=lambda p: f"byte-{p}")
def test_flipped_bit_is_rejected(position: int) -> None:
    attachment = bytearray(bytes(seal(b"discord-cloud chunk 0\n", KEY, IV).payload))
    attachment[position] ^= 0x01
    with pytest.raises(InvalidTag):
        open_attachment(KEY, bytes(attachment))


def test_attachment_is_iv_tag_ciphertext_of_32_extra_bytes() -> None:
    plaintext = random.Random(7).randbytes(5000)
    payload = bytes(seal(plaintext, KEY, IV).payload)
    assert len(payload) == len(plaintext) + 32
    assert payload[:16] == IV


def test_each_chunk_gets_a_fresh_random_iv() -> None:
    first, second = (bytes(seal(b"same bytes", KEY).payload) for _ in range(2))
    assert first[:16] != second[:16]
    assert open_attachment(KEY, first) == open_attachment(KEY, second) == b"same bytes"


def test_without_a_key_the_payload_is_the_plaintext() -> None:
    plaintext = random.Random(3).randbytes(1000)
    sealed = seal(plaintext, None)
    assert bytes(sealed.payload) == plaintext
    assert sealed.digest == hashlib.sha256(plaintext).hexdigest()


@pytest.mark.parametrize("key", [KEY, None], ids=["encrypted", "plain"])
def test_zero_length_chunk_seals(key: bytes | None) -> None:
    sealed = ChunkSealer(0, key, IV).seal()
    assert sealed.digest == hashlib.sha256(b"").hexdigest()
    assert len(sealed.payload) == (32 if key else 0)


@given(plaintext=st.binary(max_size=3000), sizes=st.lists(st.integers(0, 70), min_size=1))
def test_any_split_seals_and_opens_to_the_same_bytes(plaintext: bytes, sizes: list[int]) -> None:
    if not any(sizes):
        sizes = [1]
    sealer = ChunkSealer(len(plaintext), KEY, IV)
    for piece in pieces(plaintext, sizes):
        sealer.write(piece)
    sealed = sealer.seal()
    assert open_attachment(KEY, bytes(sealed.payload)) == plaintext
    assert sealed.digest == hashlib.sha256(plaintext).hexdigest()


def test_head_is_the_start_of_the_plaintext() -> None:
    plaintext = random.Random(5).randbytes(20000)
    assert seal(plaintext, KEY, IV).head == plaintext[:8192]
    assert seal(plaintext[:100], None).head == plaintext[:100]
    sealer = ChunkSealer(len(plaintext), KEY, IV, head_size=0)  # a chunk after the first
    sealer.write(plaintext)
    assert sealer.seal().head == b""


@pytest.mark.parametrize("key", [KEY, None], ids=["encrypted", "plain"])
def test_writing_past_the_length_raises(key: bytes | None) -> None:
    sealer = ChunkSealer(10, key, IV)
    sealer.write(b"123456789")
    with pytest.raises(ValueError):
        sealer.write(b"ab")


@pytest.mark.parametrize("key", [KEY, None], ids=["encrypted", "plain"])
def test_sealing_a_short_chunk_raises(key: bytes | None) -> None:
    sealer = ChunkSealer(10, key, IV)
    sealer.write(b"123456789")
    with pytest.raises(ValueError):
        sealer.seal()


def test_digest_alone_matches_the_sealers_and_refuses_extra_bytes() -> None:
    """A chunk sent again is only digested: the same digest as when it was sealed."""
    plaintext = random.Random(9).randbytes(5000)
    digest = ChunkDigest(len(plaintext))
    for piece in pieces(plaintext):
        digest.write(piece)
    assert digest.hexdigest() == seal(plaintext, KEY, IV).digest
    with pytest.raises(ValueError):
        digest.write(b"x")
    assert digest.hexdigest() == hashlib.sha256(plaintext).hexdigest()


def test_file_hash_matches_the_worked_example() -> None:
    example = VECTORS["file_hash"]
    digests = [hashlib.sha256(text.encode()).hexdigest() for text in example["chunks_utf8"]]
    assert digests == example["chunk_sha256_hex"]
    assert file_hash(digests) == example["file_hash"]
    assert file_hash(iter(digests)) == example["file_hash"]


def test_file_hash_depends_on_chunk_order() -> None:
    digests = VECTORS["file_hash"]["chunk_sha256_hex"]
    assert file_hash(reversed(digests)) != VECTORS["file_hash"]["file_hash"]


# --- MIME type -------------------------------------------------------------------------------

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n"
MP4 = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41" + bytes(32)


@pytest.mark.parametrize(
    ("head", "mime"),
    [
        pytest.param(PNG, "image/png", id="png"),
        pytest.param(PDF, "application/pdf", id="pdf"),
        pytest.param(MP4, "video/mp4", id="mp4"),
        pytest.param(random.Random(0).randbytes(4096), "application/octet-stream", id="random"),
        pytest.param(bytes(4096), "application/octet-stream", id="zeros"),
        pytest.param(b"", "application/octet-stream", id="empty"),
    ],
)
def test_mime_type_is_sniffed_from_magic_bytes(head: bytes, mime: str) -> None:
    assert sniff_mime(head) == mime


def test_sealed_head_sniffs_like_the_file() -> None:
    assert sniff_mime(seal(PNG + random.Random(1).randbytes(9000), KEY, IV).head) == "image/png"


# Every header signature of puremagic's database that fits in what is sniffed.
SIGNATURES = [row for row in magic_header_array if row.offset + len(row.byte_match) <= SNIFF_SIZE]


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    """Arbitrary first bytes, half of them carrying one of the database's signatures."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=SNIFF_SIZE))
    row = draw(st.sampled_from(SIGNATURES))
    before = draw(st.binary(min_size=row.offset, max_size=row.offset))
    signature: bytes = row.byte_match
    return before + signature + draw(st.binary(max_size=256))


@given(heads())
def test_every_sniffed_type_is_an_rfc_6838_type_and_subtype(head: bytes) -> None:
    assert MIME_TYPE_PATTERN.fullmatch(sniff_mime(head))


def test_every_signature_of_the_database_sniffs_as_an_rfc_6838_type() -> None:
    odd = {}
    for row in SIGNATURES:
        mime = sniff_mime(bytes(row.offset) + row.byte_match + bytes(16))
        if not MIME_TYPE_PATTERN.fullmatch(mime):
            odd[row.name] = mime
    assert odd == {}


@pytest.mark.parametrize(
    ("head", "mime"),
    [
        pytest.param(b"ISc(", "application/vnd.ms-cab-compressed", id="leading-space"),
        pytest.param(b"BEGIN:IMELODY", "text/x-imelody", id="upper-case"),
    ],
)
def test_a_type_the_database_spells_untidily_is_tidied(head: bytes, mime: str) -> None:
    assert sniff_mime(head + bytes(64)) == mime

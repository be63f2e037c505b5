"""What a chunk becomes on Discord: its SHA-256 and, with a key, AES-256-GCM ciphertext.

The attachment layout is `iv (16) | tag (16) | ciphertext` (PROTOCOL.md section 4). A
`ChunkSealer` takes the chunk's bytes as they stream in and hashes and encrypts each piece
straight into one buffer allocated once per chunk, so the bytes are never copied whole again.
"""

from __future__ import annotations

import hashlib
import mmap
import os
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

IV_SIZE = 16
TAG_SIZE = 16
HEADER_SIZE = IV_SIZE + TAG_SIZE
SNIFF_SIZE = 8192  # how much of a chunk's plaintext MIME sniffing looks at
_SLACK = 15  # older cryptography releases want block_size - 1 spare bytes in update_into


@dataclass(frozen=True)
class SealedChunk:
    payload: memoryview  # the attachment's bytes
    digest: str  # lowercase hex SHA-256 of the plaintext
    head: bytes  # the plaintext's first `head_size` bytes (SNIFF_SIZE unless told)


def buffer_size(chunk_size: int) -> int:
    """The buffer a chunk of up to `chunk_size` bytes needs, encrypted or not."""
    return HEADER_SIZE + chunk_size + _SLACK


class ChunkDigest:
    """SHA-256 of exactly `length` plaintext bytes written in pieces.

    On its own it is all a chunk sent again after it was stored needs: its digest, to
    compare with the stored one, without a buffer or a copy of its bytes.
    """

    def __init__(self, length: int) -> None:
        self.length = length
        self.received = 0
        self._hash = hashlib.sha256()

    def write(self, data: bytes | memoryview) -> None:
        """Take the next piece; past `length` is a caller's bug (the form counts the bytes)."""
        if self.received + len(data) > self.length:
            raise ValueError(f"the chunk is longer than the {self.length} bytes it must have")
        self._hash.update(data)
        self.received += len(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class ChunkSealer:
    """Hash, and with a key encrypt, exactly `length` plaintext bytes written in pieces,
    keeping a copy of the first `head_size` (what MIME sniffing reads of a file's first chunk;
    0 for the others)."""

    def __init__(
        self,
        length: int,
        key: bytes | None,
        iv: bytes | None = None,
        buffer: bytearray | mmap.mmap | None = None,
        head_size: int = SNIFF_SIZE,
    ) -> None:
        self.length = length
        self._digest = ChunkDigest(length)
        self._head = bytearray()
        self._head_size = head_size
        self._offset = HEADER_SIZE if key is not None else 0
        self.buffer = buffer if buffer is not None else bytearray(buffer_size(length))
        if len(self.buffer) < buffer_size(length):
            raise ValueError(f"a {length}-byte chunk needs a buffer of {buffer_size(length)}")
        self._view = memoryview(self.buffer)
        self._encryptor = None
        if key is not None:
            iv = iv if iv is not None else os.urandom(IV_SIZE)
            self._view[:IV_SIZE] = iv
            self._encryptor = Cipher(algorithms.AES(key), modes.GCM(iv)).encryptor()

    def write(self, data: bytes | memoryview) -> None:
        """Take the next piece; past `length` raises `ValueError`, as `ChunkDigest` does."""
        start = self._offset + self._digest.received
        self._digest.write(data)
        if len(self._head) < self._head_size:
            self._head += data[: self._head_size - len(self._head)]
        if self._encryptor is None:
            self._view[start : start + len(data)] = data
        else:
            self._encryptor.update_into(data, self._view[start:])

    def seal(self) -> SealedChunk:
        """Finish the chunk; only valid once exactly `length` bytes were written."""
        if self._digest.received != self.length:
            raise ValueError(f"chunk has {self._digest.received} of {self.length} bytes")
        if self._encryptor is not None:
            self._encryptor.finalize()
            self._view[IV_SIZE:HEADER_SIZE] = self._encryptor.tag
        end = self._offset + self.length
        return SealedChunk(self._view[:end], self._digest.hexdigest(), bytes(self._head))


def open_attachment(key: bytes, attachment: bytes) -> bytes:
    """Decrypt an attachment made by `ChunkSealer` (as the manager does); raise on tampering."""
    iv, tag, ciphertext = (
        attachment[:IV_SIZE],
        attachment[IV_SIZE:HEADER_SIZE],
        attachment[HEADER_SIZE:],
    )
    return AESGCM(key).decrypt(iv, ciphertext + tag, None)

"""The file's MIME type, sniffed from the magic bytes at the start of chunk 0."""

from __future__ import annotations

import puremagic

FALLBACK = "application/octet-stream"
# puremagic's confidence grows with the signature's length; below three bytes a match on
# arbitrary data is too likely (a binary chunk starting with "{" is not JSON).
MIN_CONFIDENCE = 0.3


def sniff_mime(head: bytes) -> str:
    """The MIME type `head` (the file's first bytes) announces, or `FALLBACK`."""
    if not head:
        return FALLBACK
    try:
        matches = puremagic.magic_string(head)
    except (puremagic.PureError, ValueError):
        return FALLBACK
    return next(
        (m.mime_type for m in matches if m.mime_type and m.confidence >= MIN_CONFIDENCE),
        FALLBACK,
    )

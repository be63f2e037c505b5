"""The file's MIME type, sniffed from the magic bytes at the start of chunk 0."""

from __future__ import annotations

import puremagic

from ..manager.packets import MIME_TYPE_PATTERN

FALLBACK = "application/octet-stream"
# puremagic's confidence grows with the signature's length; below three bytes a match on
# arbitrary data is too likely (a binary chunk starting with "{" is not JSON).
MIN_CONFIDENCE = 0.3


def sniff_mime(head: bytes) -> str:
    """The MIME type `head` (the file's first bytes) announces, or `FALLBACK`: always a
    lower-case RFC 6838 `type/subtype`, as the finish packet must carry."""
    if not head:
        return FALLBACK
    try:
        matches = puremagic.magic_string(head)
    except (puremagic.PureError, ValueError):
        return FALLBACK
    confident = (m.mime_type for m in matches if m.confidence >= MIN_CONFIDENCE)
    # The signature database is not always tidy: " application/vnd.ms-cab-compressed".
    tidied = (mime_type.strip().lower() for mime_type in confident)
    return next((t for t in tidied if MIME_TYPE_PATTERN.fullmatch(t)), FALLBACK)

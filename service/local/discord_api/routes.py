"""The rate-limited routes and the opaque bucket hashes Discord names their buckets by."""

from enum import StrEnum

API_PREFIX = "/api/v10"


class Route(StrEnum):
    """A route with its own rate-limit bucket (per token and channel) and its own fault queue."""

    CREATE_MESSAGE = "POST /channels/{channel_id}/messages"
    DELETE_MESSAGE = "DELETE /channels/{channel_id}/messages/{message_id}"
    BULK_DELETE = "POST /channels/{channel_id}/messages/bulk-delete"
    LIST_MESSAGES = "GET /channels/{channel_id}/messages"


MESSAGES_BUCKET = "80c17d2f203122d936070c88c8d10f33"
# X-RateLimit-Bucket: one hash per route, shared by all its channels (the bucket is hash +
# channel), so a client learns from one channel's answer how another's is limited.
BUCKETS: dict[Route, str] = {
    Route.CREATE_MESSAGE: MESSAGES_BUCKET,
    Route.DELETE_MESSAGE: "b05c0d8c2ab83895085006a8eae073a3",
    Route.BULK_DELETE: "3b0f4e4e3bcf5a2e2d5c0d6f0e1a9c47",
    Route.LIST_MESSAGES: "2d6c3f1a9e0b47c58f2e6a1d0c9b3e74",
}

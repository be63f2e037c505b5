"""A stand-in for Discord's REST API (https://discord.com/api/v10) on a local aiohttp server.

It answers the routes discord.py's ``HTTPClient`` uses to upload and delete attachments, with
Discord's status codes, JSON bodies and rate limits (per-channel buckets, a global limit, the
headers and 429s of both), and can inject faults (429s, 5xx, Cloudflare pages, latency,
dropped or hanging connections, odd answers) for tests, the demo and the benchmark.
"""

from .faults import Fault, OddAnswer
from .ratelimit import Limit, Scope
from .routes import API_PREFIX, BUCKETS, MESSAGES_BUCKET, Route
from .server import DiscordStandIn
from .store import DISCORD_EPOCH_MS, Attachment, Message, created_at

__all__ = [
    "API_PREFIX",
    "BUCKETS",
    "DISCORD_EPOCH_MS",
    "MESSAGES_BUCKET",
    "Attachment",
    "DiscordStandIn",
    "Fault",
    "Limit",
    "Message",
    "OddAnswer",
    "Route",
    "Scope",
    "created_at",
]

"""Discord's JSON objects for the bot user, messages and attachments, as discord.py reads them."""

from typing import Any
from urllib.parse import quote

from .store import Attachment, Message, created_at


def bot_user(user_id: str) -> dict[str, Any]:
    """GET /users/@me for a bot; discord.py's static_login reads it."""
    return {
        "id": user_id,
        "username": "upload-bot",
        "discriminator": "0000",
        "global_name": None,
        "avatar": None,
        "banner": None,
        "accent_color": None,
        "bot": True,
        "system": False,
        "mfa_enabled": False,
        "verified": True,
        "email": None,
        "locale": "en-US",
        "flags": 0,
        "public_flags": 0,
        "premium_type": 0,
    }


def message_json(message: Message, author: dict[str, Any], origin: str) -> dict[str, Any]:
    """A message; attachment URLs point at `origin`, the stand-in's own CDN route."""
    return {
        "id": message.id,
        "type": 0,
        "channel_id": message.channel_id,
        "content": message.content,
        "author": author,
        "attachments": [
            attachment_json(message.channel_id, a, origin) for a in message.attachments
        ],
        "embeds": [],
        "mentions": [],
        "mention_roles": [],
        "mention_everyone": False,
        "pinned": False,
        "tts": False,
        "timestamp": created_at(message.id).isoformat(timespec="microseconds"),
        "edited_timestamp": None,
        "flags": 0,
        "components": [],
        "nonce": message.nonce,
    }


def attachment_json(channel_id: str, attachment: Attachment, origin: str) -> dict[str, Any]:
    name = quote(attachment.filename, safe="")
    url = f"{origin}/attachments/{channel_id}/{attachment.id}/{name}"
    return {
        "id": attachment.id,
        "filename": attachment.filename,
        "size": len(attachment.data),
        "url": url,
        "proxy_url": url,
        "content_type": attachment.content_type,
    }

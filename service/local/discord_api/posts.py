"""Discord's rules for a message post's body, and the message it stores, as pure code.

Its JSON must parse (400, 50109) and its nonce be at most 25 characters (400, 50035, a form
error). A post with `enforce_nonce` whose nonce was used before in the channel stores nothing
and is answered the first message (Discord's de-duplication).
"""

from .bodies import MessagePost
from .bulk import Refusal
from .store import Attachment, Message, Snowflakes, Store

MAX_NONCE = 25  # characters of a message's nonce Discord takes


def check_message_post(post: MessagePost) -> Refusal | None:
    """Why Discord refuses the post's body, if it does."""
    if post.invalid_json:
        return Refusal("The request body contains invalid JSON.", 50109)
    if len(str(post.payload.get("nonce") or "")) > MAX_NONCE:
        message = f"Must be {MAX_NONCE} or fewer in length."
        too_long = {"code": "BASE_TYPE_MAX_LENGTH", "message": message}
        return Refusal("Invalid Form Body", 50035, {"nonce": {"_errors": [too_long]}})
    return None


def store_post(
    store: Store, ids: Snowflakes, channel_id: str, post: MessagePost, *, with_files: bool
) -> tuple[Message, bool]:
    """The post's message and whether it was stored now: with enforce_nonce, a nonce already
    used gives its message instead."""
    payload = post.payload
    nonce = None if payload.get("nonce") is None else str(payload["nonce"])
    existing = None if nonce is None else store.with_nonce(channel_id, nonce)
    if existing is not None and payload.get("enforce_nonce"):
        return existing, False
    names = {int(a["id"]): a.get("filename") for a in payload.get("attachments", [])}
    files = sorted(post.files, key=lambda f: f.index) if with_files else []
    attachments = [
        Attachment(
            ids.next(), names.get(f.index) or f.filename or f"file{f.index}", f.data, f.content_type
        )
        for f in files
    ]
    message = Message(ids.next(), channel_id, payload.get("content") or "", attachments, nonce)
    store.add(message)
    return message, True

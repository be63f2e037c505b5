"""Discord's rules for `POST /channels/{id}/messages/bulk-delete`, as a pure check.

Documented: 2 to 100 ids; ids of messages that do not exist (or are invalid) still count
towards those bounds and are otherwise ignored; any duplicate id, or any message older than
two weeks (read from the snowflake), fails the whole request with 400 and deletes nothing.
The form errors (code 50035) follow Discord's shape; the duplicate's exact wording is not
documented.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .store import created_at

MIN_IDS = 2
MAX_IDS = 100
MAX_AGE = timedelta(days=14)


@dataclass(frozen=True)
class Refusal:
    """A 400's Discord error body."""

    message: str
    code: int
    errors: dict[str, Any] | None = field(default=None)


def _form_error(code: str, message: str) -> Refusal:
    errors = {"messages": {"_errors": [{"code": code, "message": message}]}}
    return Refusal("Invalid Form Body", 50035, errors)


def check_bulk_delete(body: Any, now: datetime) -> list[str] | Refusal:
    """The ids to delete, or why Discord refuses the request."""
    ids = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(ids, list):
        return _form_error("BASE_TYPE_REQUIRED", "This field is required")
    for value in ids:
        if isinstance(value, bool) or not str(value).isdigit():
            return _form_error("NUMBER_TYPE_COERCE", f'Value "{value}" is not snowflake.')
    if len(ids) < MIN_IDS:
        return _form_error("BASE_TYPE_MIN_LENGTH", f"Must be {MIN_IDS} or more in length.")
    if len(ids) > MAX_IDS:
        return _form_error("BASE_TYPE_MAX_LENGTH", f"Must be {MAX_IDS} or fewer in length.")
    wanted = [str(value) for value in ids]
    if len(set(wanted)) != len(wanted):
        return _form_error("LIST_ITEM_VALUE_DUPLICATE", "List item values are duplicated.")
    if any(now - created_at(message_id) > MAX_AGE for message_id in wanted):
        return Refusal("You can only bulk delete messages that are under 14 days old.", 50034)
    return wanted

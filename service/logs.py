"""Log output: one line per event, as text or (LOG_FORMAT=json) one JSON object a line.

An event's context (`slot`, `upload_id`, `chunk`, `request_id`) comes either from the log
call's `extra=` or from `bind()`, which sets it for the rest of the current task (a chunk
request, say): every record made meanwhile carries it, discord.py's own included. Both
formats show whichever of those fields a record has.
"""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from datetime import UTC, datetime

CONTEXT_FIELDS = ("slot", "upload_id", "chunk", "request_id")

_bound: ContextVar[dict[str, object]] = ContextVar("log_context", default={})  # noqa: B039


def bind(**fields: object) -> None:
    """Add `fields` to the context of every record the current task makes from now on."""
    _bound.set({**_bound.get(), **fields})


class ContextFilter(logging.Filter):
    """Gives each record the fields `bind()` set where it was made (a handler's filter, so
    that records of every library's loggers get them, and `extra=` still wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _bound.get().items():
            record.__dict__.setdefault(name, value)
        return True


def _context(record: logging.LogRecord) -> dict[str, object]:
    return {name: getattr(record, name) for name in CONTEXT_FIELDS if hasattr(record, name)}


def _iso_utc(record: logging.LogRecord) -> str:
    """ISO 8601 in UTC with milliseconds, e.g. 2026-11-30T06:10:07.623Z."""
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _iso_utc(record)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = " ".join(f"{key}={value}" for key, value in _context(record).items())
        return f"{line} [{context}]" if context else line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": _iso_utc(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_context(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str, log_format: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    logging.basicConfig(level=level, handlers=[handler], force=True)

"""Log output: one line per event, as text or (LOG_FORMAT=json) one JSON object a line.

An event's context (`slot`, `upload_id`, `chunk`, `request_id`) comes either from the log
call's `extra=` or from `bind()`, which sets it for the rest of the current task (a chunk
request, say): every record made meanwhile carries it, discord.py's own included. Both
formats show whichever of those fields a record has.

A record is one line. Its message and context may carry what a client or a peer sent, so
both formats escape every control character in them (`\\n`, `\\r`, `\\x1b`, ...): nobody can
start a line of their own in the log or steer the terminal showing it. Only a traceback
spans lines.
"""

from __future__ import annotations

import json
import logging
import re
from contextvars import ContextVar
from datetime import UTC, datetime

from aiohttp.http_exceptions import HttpProcessingError

CONTEXT_FIELDS = ("slot", "upload_id", "chunk", "request_id")

log = logging.getLogger(__name__)

_bound: ContextVar[dict[str, object]] = ContextVar("log_context", default={})  # noqa: B039


# C0 and C1 controls, DEL, and the Unicode line and paragraph separators.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_one(match: re.Match[str]) -> str:
    character = match[0]
    code = ord(character)
    return _NAMED.get(character) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def escaped(text: str) -> str:
    """`text` on one line: every control character written as its escape (`\\n`, `\\x1b`)."""
    return _CONTROL.sub(_escape_one, text)


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
    """The record's context fields, strings escaped."""
    fields = {name: getattr(record, name) for name in CONTEXT_FIELDS if hasattr(record, name)}
    return {name: escaped(v) if isinstance(v, str) else v for name, v in fields.items()}


def _iso_utc(record: logging.LogRecord) -> str:
    """ISO 8601 in UTC with milliseconds, e.g. 2026-11-30T06:10:07.623Z."""
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    """`<time> <LEVEL> <logger>: <message> [<context>]`, then any traceback."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_iso_utc(record)} {record.levelname} {record.name}: {_message(record)}"
        context = " ".join(f"{key}={escaped(str(v))}" for key, v in _context(record).items())
        if context:
            line = f"{line} [{context}]"
        trace = _trace(self, record)
        return f"{line}\n{trace}" if trace else line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": _iso_utc(record),
            "level": record.levelname,
            "logger": record.name,
            "message": _message(record),
            **_context(record),
        }
        trace = _trace(self, record)
        if trace:
            entry["exception"] = trace
        return json.dumps(entry, default=str)


def _message(record: logging.LogRecord) -> str:
    return escaped(record.getMessage())


def _trace(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    """The record's traceback and stack, as many lines as they take; "" when it has none."""
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    parts = [record.exc_text or ""]
    if record.stack_info:
        parts.append(formatter.formatStack(record.stack_info))
    return "\n".join(part for part in parts if part)


class MalformedRequests(logging.Filter):
    """aiohttp answers a request it cannot parse (a bad header, one over 8190 bytes, a bad
    chunk size: the client's fault) with a 400 of its own and logs it at ERROR with a
    traceback, so a port scanner makes a flood of false alarms. As a filter of aiohttp's
    `aiohttp.server` logger, this says it in one INFO line instead, as the service logs the
    4xx refusals of its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, HttpProcessingError) or not 400 <= error.code < 500:
            return True
        remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        what = " ".join(error.message.split())[:200]
        log.info("a malformed request from %s, answered %d: %s", remote, error.code, what)
        return False


MALFORMED_REQUESTS = MalformedRequests()

# discord.py logs every request's form and every answer in full at DEBUG: message texts and
# attachment URLs, which Discord signs so that anyone holding one can read the stored file.
QUIET_LOGGERS = ("discord",)


def configure_logging(level: str, log_format: str) -> None:
    """Log records at `level` and above to stderr; discord.py's at INFO and above whatever
    `level` says (see QUIET_LOGGERS)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    floor = max(logging.getLevelNamesMapping()[level], logging.INFO)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(floor)

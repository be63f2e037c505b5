"""How a setting's text becomes its value (`config.OPTIONS` names one parser per setting).
Each raises `ValueError` with what the value must be, a phrase that completes "<NAME> ...",
never quoting the value (it may be a secret)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit


def url(*schemes: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        wanted = " or ".join(scheme + "://" for scheme in schemes)
        parts = urlsplit(text)
        try:
            parts.port  # noqa: B018 - raises ValueError for a port that is not a port
        except ValueError:
            raise ValueError(f"must be a {wanted} URL with a valid port") from None
        if parts.scheme not in schemes or not parts.hostname:
            raise ValueError(f"must be a {wanted} URL")
        return text

    return parse


_NOT_AN_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def own_address(text: str) -> str:
    address = url("http", "https")(text)
    if _NOT_AN_ESCAPE.search(urlsplit(address).path):  # no request path would match it
        raise ValueError("has a % in its path that is not a percent-escape (%XX): write %25")
    return address


def redis_url(text: str) -> str:
    address = url("redis", "rediss")(text)
    from redis.asyncio.connection import parse_url  # redis-py: loaded only with REDIS_URL

    try:
        parse_url(address)
    except ValueError as error:  # its messages name the query argument, never the password
        raise ValueError(f"must be a URL redis-py takes: {error}") from None
    return address


def nonempty(text: str) -> str:
    if not text:
        raise ValueError("must not be empty")
    return text


def directory(text: str) -> Path:
    return Path(nonempty(text))  # Path("") would be the working directory


def whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError("must be a whole number") from None


def port(text: str) -> int:
    port = whole_number(text)
    if not 0 <= port <= 65535:
        raise ValueError("must be a port number from 0 to 65535")
    return port


def positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError("must be a number of seconds") from None
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ValueError("must be a positive number of seconds")
    return seconds


def positive_int(text: str) -> int:
    number = whole_number(text)
    if number < 1:
        raise ValueError("must be a whole number of at least 1")
    return number


def log_level(text: str) -> str:
    level = text.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
    return level


def log_format(text: str) -> str:
    if text not in ("text", "json"):
        raise ValueError("must be text or json")
    return text

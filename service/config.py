"""Settings: read from an optional TOML file and the environment, the environment winning.

Each setting has one TOML key and one environment name (PROTOCOL.md section 6 fixes the
names shared with the existing service). `load_settings` reports every missing or invalid
setting at once in a `ConfigError`.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DEFAULT_DISCORD_API_BASE = "https://discord.com/api/v10"


class ConfigError(Exception):
    """One or more settings are missing or invalid; `problems` names each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Settings:
    manager_address: str
    service_password: str = field(repr=False)
    own_address: str
    port: int = 8080
    host: str = "0.0.0.0"
    discord_api_base: str = DEFAULT_DISCORD_API_BASE
    upload_inactivity_timeout: float = 120.0
    discord_attachment_limit: int = 10 * 1024 * 1024
    discord_request_timeout: float = 60.0
    discord_retries: int = 3
    discord_max_ratelimit_wait: float = 30.0
    discord_global_rate: int = 50
    client_read_timeout: float = 30.0
    shutdown_grace: float = 30.0
    slots: int = 1
    log_level: str = "INFO"
    log_format: str = "text"

    @property
    def own_path(self) -> str:
        """The path of `own_address`, where clients POST chunks."""
        return urlsplit(self.own_address).path or "/"


def _url(*schemes: str) -> Callable[[str], str]:
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


def _text(text: str) -> str:
    if not text:
        raise ValueError("must not be empty")
    return text


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError("must be a whole number") from None


def _port(text: str) -> int:
    port = _whole_number(text)
    if not 0 <= port <= 65535:
        raise ValueError("must be a port number from 0 to 65535")
    return port


def _positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError("must be a number of seconds") from None
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ValueError("must be a positive number of seconds")
    return seconds


def _positive_int(text: str) -> int:
    number = _whole_number(text)
    if number < 1:
        raise ValueError("must be a whole number of at least 1")
    return number


def _log_level(text: str) -> str:
    level = text.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
    return level


def _log_format(text: str) -> str:
    if text not in ("text", "json"):
        raise ValueError("must be text or json")
    return text


@dataclass(frozen=True)
class _Option:
    key: str  # the TOML key and Settings field
    parse: Callable[[str], Any]
    required: bool = False
    env_name: str | None = None  # the environment name, when it is not the key in upper case

    @property
    def env(self) -> str:
        return self.env_name or self.key.upper()


OPTIONS = (
    _Option("manager_address", _url("ws", "wss"), required=True),
    _Option("service_password", _text, required=True),
    _Option("own_address", _url("http", "https"), required=True),
    _Option("port", _port),
    _Option("host", _text),
    _Option("discord_api_base", _url("http", "https")),
    _Option("upload_inactivity_timeout", _positive_seconds),
    _Option("discord_attachment_limit", _positive_int),
    _Option("discord_request_timeout", _positive_seconds),
    _Option("discord_retries", _positive_int),
    _Option("discord_max_ratelimit_wait", _positive_seconds),
    _Option("discord_global_rate", _positive_int),
    _Option("client_read_timeout", _positive_seconds),
    _Option("shutdown_grace", _positive_seconds),
    _Option("slots", _positive_int, env_name="UPLOAD_SLOTS"),
    _Option("log_level", _log_level),
    _Option("log_format", _log_format),
)


def environment_of(settings: Settings) -> dict[str, str]:
    """The environment variables that `load_settings` reads back as `settings`."""
    return {option.env: str(getattr(settings, option.key)) for option in OPTIONS}


def load_settings(environ: Mapping[str, str], config_file: Path | None = None) -> Settings:
    """Build `Settings` from a TOML file (optional) and `environ`; raise `ConfigError`."""
    problems: list[str] = []
    raw: dict[str, Any] = {}
    if config_file is not None:
        try:
            raw = tomllib.loads(config_file.read_text())
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise ConfigError([f"cannot read config file {config_file}: {error}"]) from None
        known = {option.key for option in OPTIONS}
        problems += [f"{key}: unknown setting in {config_file}" for key in raw if key not in known]

    values: dict[str, Any] = {}
    for option in OPTIONS:
        text = environ.get(option.env) or None  # an empty variable counts as unset
        source = option.env
        if text is None and option.key in raw:
            text, source = str(raw[option.key]), f"{option.key} in {config_file}"
        if text is None:
            if option.required:
                problems.append(f"{option.env} is missing (or {option.key} in the config file)")
            continue
        try:
            values[option.key] = option.parse(text)
        except ValueError as error:
            problems.append(f"{source} {error}")
    if problems:
        raise ConfigError(problems)
    return Settings(**values)

"""Settings: read from an optional TOML file and the environment, the environment winning.

Each setting has one TOML key and one environment name (PROTOCOL.md section 6 fixes the
names shared with the existing service). `load_settings` reports every missing or invalid
setting at once in a `ConfigError`.

Adding a setting: a field in `Settings` (its default lives there only), one `Option` in
`OPTIONS` (key, a parser of `setting_values.py`, one-sentence meaning), then
docs/configuration.md and config.example.toml generated again (CONTRIBUTING.md says how;
tests fail until they are).
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from . import setting_values

DEFAULT_DISCORD_API_BASE = "https://discord.com/api/v10"


class ConfigError(Exception):
    """One or more settings are missing or invalid; `problems` names each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Settings:
    manager_address: str = field(repr=False)  # may carry credentials
    service_password: str = field(repr=False)
    own_address: str
    port: int = 8080
    host: str = "0.0.0.0"
    discord_api_base: str = DEFAULT_DISCORD_API_BASE
    upload_inactivity_timeout: float = 120.0
    discord_attachment_limit: int = 10 * 1024 * 1024
    discord_request_timeout: float = 60.0
    discord_retries: int = 3
    discord_retry_backoff: float = 0.5
    discord_max_ratelimit_wait: float = 30.0
    discord_global_rate: int = 50
    client_read_timeout: float = 30.0
    client_min_rate: int = 16384
    chunk_memory_mib: int | None = None  # None: derived when the service starts
    chunks_in_flight_per_upload: int = 8
    shutdown_grace: float = 30.0
    slots: int = 1
    log_level: str = "INFO"
    log_format: str = "text"
    metrics_port: int = 9102
    state_dir: Path | None = None  # None: no journal
    redis_url: str | None = field(default=None, repr=False)  # may hold a password

    @property
    def own_path(self) -> str:
        """The path of `own_address`, where clients POST chunks, as aiohttp matches a
        request's: escapes decoded (but `%2F` and `%25`), dot segments resolved."""
        from yarl import URL  # aiohttp's; not for `check` or --help

        return URL(self.own_address).path_safe or "/"

    @property
    def metrics_on_chunk_port(self) -> bool:
        """Whether /metrics is served on the chunk port: only when METRICS_PORT says so."""
        return self.metrics_port == self.port


_SETTINGS_FIELDS = {field.name: field for field in fields(Settings)}


@dataclass(frozen=True)
class Option:
    """One setting, with what a person needs to know about it: the docs, `run --help` and
    the checks of config.example.toml are all generated from `OPTIONS`, so they cannot drift.

    Its default is the `Settings` field's (a field without one makes the setting required);
    `default_text` replaces it in the docs for a default worked out at run time.
    """

    key: str  # the TOML key and Settings field
    parse: Callable[[str], Any]
    meaning: str  # one sentence, plain text (it is shown in the terminal and in Markdown)
    env_name: str | None = None  # the environment name, when it is not the key in upper case
    default_text: str | None = None
    example: Any = None  # config.example.toml's value where there is no default to show

    @property
    def env(self) -> str:
        return self.env_name or self.key.upper()

    @property
    def default(self) -> Any:
        """The `Settings` default, or `MISSING` for a required setting."""
        return _SETTINGS_FIELDS[self.key].default

    @property
    def required(self) -> bool:
        return self.default is MISSING

    @property
    def shown_default(self) -> str:
        """The default as a person writes it: `120`, not `120.0`; "required" when none."""
        if self.default_text is not None:
            return self.default_text
        if self.required:
            return "required"
        if isinstance(self.default, float) and self.default.is_integer():
            return str(int(self.default))
        return str(self.default)


OPTIONS = (
    Option(
        "manager_address",
        setting_values.url("ws", "wss"),
        "the manager's ws:// or wss:// URL (TLS certificates are verified)",
        example="wss://manager.example.com/",
    ),
    Option(
        "service_password",
        setting_values.nonempty,
        "the secret shared by the manager and all services; keep it out of version control",
        example="change-me",
    ),
    Option(
        "own_address",
        setting_values.own_address,
        "the http(s):// URL clients POST chunks to; announced to the manager, and its path is "
        "served (as is /)",
        example="https://upload.example.com/upload",
    ),
    Option("port", setting_values.port, "the HTTP port (0 picks a free one)"),
    Option("host", setting_values.nonempty, "the address to listen on"),
    Option("discord_api_base", setting_values.url("http", "https"), "Discord's REST base URL"),
    Option(
        "upload_inactivity_timeout",
        setting_values.positive_seconds,
        "seconds without a chunk before a job fails",
    ),
    Option(
        "discord_attachment_limit",
        setting_values.positive_int,
        "the bot's attachment size limit in bytes; a job whose chunks would exceed it is "
        "refused at upload-start",
    ),
    Option(
        "discord_request_timeout",
        setting_values.positive_seconds,
        "seconds one request to Discord may take",
    ),
    Option(
        "discord_retries",
        setting_values.positive_int,
        "tries for a request to Discord that fails (a post, a delete, a channel search: a 5xx, "
        "a reset connection, a timeout, an answer that does not show what was asked for); a "
        "post's tries are each paced and carry the same nonce",
    ),
    Option(
        "discord_retry_backoff",
        setting_values.positive_seconds,
        "seconds before the second try of a failed request to Discord (a post, a delete, a "
        "channel search), doubling before each try after it",
    ),
    Option(
        "discord_max_ratelimit_wait",
        setting_values.positive_seconds,
        "longest a client's POST is held waiting for Discord's rate limits, over all its 429s "
        "and tries; a longer wait answers 503 with Retry-After",
    ),
    Option(
        "discord_global_rate",
        setting_values.positive_int,
        "requests per second one bot token may make (Discord allows 50 per token across every "
        "process using it): with REDIS_URL, the one budget every process using that Redis "
        "shares; without, this process's own (then divide 50 among the processes)",
    ),
    Option(
        "client_read_timeout",
        setting_values.positive_seconds,
        "seconds a client may send nothing in the middle of a chunk before it is cut off (408); "
        "also the longest a chunk waits unread for memory (then 503), and for an earlier "
        "request for it to be done (then 409)",
    ),
    Option(
        "client_min_rate",
        setting_values.positive_int,
        "bytes per second a chunk POST must average once it has been arriving for "
        "CLIENT_READ_TIMEOUT seconds (its fields from its start, its chunk afresh from the "
        "claim); a slower one is cut off (408) and its memory freed",
    ),
    Option(
        "chunk_memory_mib",
        setting_values.positive_int,
        "MiB of chunk buffers the process may hold at once, all slots together, shared "
        "fairly between uploads; beyond it a new chunk waits up to CLIENT_READ_TIMEOUT "
        "seconds, then gets 503 with Retry-After",
        default_text="enough for 5 chunks per slot, capped at 80 % of (the cgroup memory "
        "limit - 96 MiB)",
        example=128,
    ),
    Option(
        "chunks_in_flight_per_upload",
        setting_values.positive_int,
        "chunks of one upload received or stored at once (the browser sends 5); one more gets "
        "503 with Retry-After",
    ),
    Option(
        "shutdown_grace",
        setting_values.positive_seconds,
        "seconds after SIGTERM or SIGINT for the chunks being received or stored to finish, "
        "then for what failed jobs left on Discord to be deleted; keep it below the "
        "orchestrator's kill timeout (docker stop's default is 10 s)",
    ),
    Option(
        "slots",
        setting_values.positive_int,
        "job slots in this process: each opens its own manager link and is, to the manager, a "
        "separate service with one job at a time; all share the HTTP port",
        env_name="UPLOAD_SLOTS",
    ),
    Option(
        "log_level",
        setting_values.log_level,
        "DEBUG, INFO, WARNING or ERROR; discord.py's loggers stay at INFO or above even at "
        "DEBUG, as its debug lines hold message texts and signed attachment URLs",
    ),
    Option("log_format", setting_values.log_format, "text, or json for one JSON object a line"),
    Option(
        "metrics_port",
        setting_values.port,
        "the port of /metrics, on HOST, apart from the chunk port (which answers 404 there); "
        "0 picks a free one, the same value as PORT serves /metrics on the chunk port",
    ),
    Option(
        "state_dir",
        setting_values.directory,
        "a directory where the service journals its uploads in progress, so that the next start "
        "deletes what a killed process left on Discord (docs/behaviour.md); it must survive a "
        "restart of the process and be local to its host",
        default_text="unset: no journal",
        example="/var/lib/upload-service",
    ),
    Option(
        "redis_url",
        setting_values.redis_url,
        "a redis:// or rediss:// (TLS) URL, with user and password if needed, of the Redis or "
        "Valkey through which every process shares each bot token's DISCORD_GLOBAL_RATE; unset: "
        "each process keeps to DISCORD_GLOBAL_RATE alone; only its host is ever logged",
        default_text="unset",
        example="redis://redis:6379/0",
    ),
)


def environment_of(settings: Settings) -> dict[str, str]:
    """The environment variables that `load_settings` reads back as `settings`."""
    values = {option.env: getattr(settings, option.key) for option in OPTIONS}
    return {name: str(value) for name, value in values.items() if value is not None}


def load_settings(environ: Mapping[str, str], config_file: Path | None = None) -> Settings:
    """Build `Settings` from a TOML file (optional) and `environ`; raise `ConfigError`."""
    problems: list[str] = []
    raw: dict[str, Any] = {}
    if config_file is not None:
        try:
            # TOML is UTF-8 whatever the locale says (read_text would decode by the locale).
            raw = tomllib.loads(config_file.read_bytes().decode())
        except UnicodeDecodeError as error:  # the message names the byte, never the text
            problem = f"cannot read config file {config_file}: byte {error.start} is not UTF-8"
            raise ConfigError([problem]) from None
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

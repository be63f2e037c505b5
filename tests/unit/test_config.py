"""Settings from the environment and a TOML file (PROTOCOL.md section 6), and their docs."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest

from service.config import (
    OPTIONS,
    ConfigError,
    Option,
    Settings,
    environment_of,
    load_settings,
)

SECRET = "s3cret-Pa55word-that-must-not-leak"
REQUIRED = {
    "MANAGER_ADDRESS": "wss://manager.test/ws",
    "SERVICE_PASSWORD": SECRET,
    "OWN_ADDRESS": "http://h:1/u/3/",
}
EXAMPLE_CONFIG = Path(__file__).resolve().parents[2] / "config.example.toml"


def problems_of(environ: dict[str, str], config_file: Path | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ, config_file)
    return caught.value.problems


def toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_required_settings_alone_give_the_documented_defaults() -> None:
    settings = load_settings(REQUIRED)
    assert (settings.manager_address, settings.service_password, settings.own_address) == (
        REQUIRED["MANAGER_ADDRESS"],
        SECRET,
        REQUIRED["OWN_ADDRESS"],
    )
    assert settings.port == 8080
    assert settings.discord_api_base == "https://discord.com/api/v10"
    assert settings.upload_inactivity_timeout == 120


def test_environment_wins_over_the_config_file(tmp_path: Path) -> None:
    path = toml(tmp_path, 'port = 9000\nmanager_address = "ws://from-file/"\n')
    settings = load_settings({**REQUIRED, "PORT": "7000"}, path)
    assert settings.port == 7000
    assert settings.manager_address == REQUIRED["MANAGER_ADDRESS"]


def test_config_file_alone_configures_the_service(tmp_path: Path) -> None:
    path = toml(
        tmp_path,
        'manager_address = "ws://m/"\nservice_password = "pw"\n'
        'own_address = "https://up.test/x"\nport = 9000\nupload_inactivity_timeout = 0.5\n',
    )
    settings = load_settings({}, path)
    assert (settings.manager_address, settings.port) == ("ws://m/", 9000)
    assert settings.upload_inactivity_timeout == 0.5


def test_the_example_config_file_is_valid() -> None:
    assert load_settings({}, EXAMPLE_CONFIG).port == 8080


def test_empty_environment_variable_does_not_hide_the_config_file(tmp_path: Path) -> None:
    path = toml(tmp_path, 'manager_address = "ws://m/"\nport = 9000\n')
    settings = load_settings({**REQUIRED, "MANAGER_ADDRESS": "", "PORT": ""}, path)
    assert (settings.manager_address, settings.port) == ("ws://m/", 9000)


def test_every_problem_is_named_at_once() -> None:
    problems = problems_of({"OWN_ADDRESS": "http://h/", "PORT": "80a"})
    assert len(problems) == 3
    for name in ("MANAGER_ADDRESS", "SERVICE_PASSWORD", "PORT"):
        assert sum(name in problem for problem in problems) == 1, name


def test_unknown_config_file_key_is_reported_with_the_rest(tmp_path: Path) -> None:
    path = toml(tmp_path, 'prot = 9000\nmanager_adress = "ws://m/"\n')
    problems = problems_of({**REQUIRED, "PORT": "-1"}, path)
    assert len(problems) == 3
    assert any("prot" in p for p in problems)
    assert any("manager_adress" in p for p in problems)
    assert any("PORT" in p for p in problems)


def test_unreadable_config_file_is_a_problem(tmp_path: Path) -> None:
    assert "not-there.toml" in problems_of(REQUIRED, tmp_path / "not-there.toml")[0]
    assert problems_of(REQUIRED, toml(tmp_path, "port = = 1\n"))


def test_a_config_file_that_is_not_utf8_is_a_problem_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "latin-1.toml"
    path.write_bytes('service_password = "caf\u00e9"\n'.encode("latin-1"))
    [problem] = problems_of(REQUIRED, path)
    assert str(path) in problem and "UTF-8" in problem


def test_an_empty_state_dir_in_the_config_file_is_a_problem(tmp_path: Path) -> None:
    # Not the working directory: an empty variable is unset, an empty key names no directory.
    [problem] = problems_of(REQUIRED, toml(tmp_path, 'state_dir = ""\n'))
    assert "state_dir" in problem and "empty" in problem


@pytest.mark.parametrize("address", ["ws://manager.test/", "wss://manager.test:8443/ws"])
def test_manager_address_accepts_websocket_urls(address: str) -> None:
    assert load_settings({**REQUIRED, "MANAGER_ADDRESS": address}).manager_address == address


@pytest.mark.parametrize(
    "address", ["http://manager.test/", "https://manager.test/", "manager.test:80", "ws://"]
)
def test_manager_address_must_be_a_websocket_url(address: str) -> None:
    problems = problems_of({**REQUIRED, "MANAGER_ADDRESS": address})
    assert len(problems) == 1 and "MANAGER_ADDRESS" in problems[0]


@pytest.mark.parametrize("address", ["ws://up.test/", "ftp://up.test/", "up.test/u", "https://"])
def test_own_address_must_be_an_http_url(address: str) -> None:
    problems = problems_of({**REQUIRED, "OWN_ADDRESS": address})
    assert len(problems) == 1 and "OWN_ADDRESS" in problems[0]


@pytest.mark.parametrize(
    ("name", "address"),
    [("OWN_ADDRESS", "http://up.test:99999/"), ("MANAGER_ADDRESS", "ws://manager.test:port/")],
)
def test_address_with_an_invalid_port_is_refused(name: str, address: str) -> None:
    problems = problems_of({**REQUIRED, name: address})
    assert len(problems) == 1 and name in problems[0]


@pytest.mark.parametrize(("text", "seconds"), [("0.5", 0.5), ("120", 120.0), ("2.25", 2.25)])
def test_inactivity_timeout_accepts_decimal_seconds(text: str, seconds: float) -> None:
    settings = load_settings({**REQUIRED, "UPLOAD_INACTIVITY_TIMEOUT": text})
    assert settings.upload_inactivity_timeout == seconds


@pytest.mark.parametrize("text", ["0", "-1", "nan", "inf", "abc", "0x10"])
def test_inactivity_timeout_must_be_positive_and_finite(text: str) -> None:
    problems = problems_of({**REQUIRED, "UPLOAD_INACTIVITY_TIMEOUT": text})
    assert len(problems) == 1 and "UPLOAD_INACTIVITY_TIMEOUT" in problems[0]


@pytest.mark.parametrize("text", ["65536", "-1", "80.0", "http", "8080a"])
def test_port_must_be_a_port_number(text: str) -> None:
    problems = problems_of({**REQUIRED, "PORT": text})
    assert len(problems) == 1 and "PORT" in problems[0]


def test_a_redis_url_that_redis_py_refuses_is_a_problem_without_its_password() -> None:
    url = "redis://user:redis-pw-5e2b@redis:6379/0?socket_timeout=soon"
    with pytest.raises(ConfigError) as refused:
        load_settings({**REQUIRED, "REDIS_URL": url})
    [problem] = refused.value.problems
    assert problem.startswith("REDIS_URL must be a URL redis-py takes")
    assert "socket_timeout" in problem and "redis-pw-5e2b" not in problem


def test_an_own_address_with_a_percent_that_is_no_escape_is_a_problem() -> None:
    """A browser sends `%zz` as written, which no route can be made to match: every chunk
    would be answered 404 while `check` said the configuration was valid."""
    with pytest.raises(ConfigError) as refused:
        load_settings({**REQUIRED, "OWN_ADDRESS": "https://h/u/%zz/"})
    [problem] = refused.value.problems
    assert problem.startswith("OWN_ADDRESS has a % in its path that is not a percent-escape")
    assert load_settings({**REQUIRED, "OWN_ADDRESS": "https://h/u/a%2fb%20c/"}).own_address


def test_secret_never_appears_in_problems() -> None:
    error_environ = {
        "SERVICE_PASSWORD": SECRET,
        "PORT": "eighty",
        "OWN_ADDRESS": "ftp://h/",
        "LOG_LEVEL": "loud",
    }
    with pytest.raises(ConfigError) as caught:
        load_settings(error_environ)
    problems = caught.value.problems
    assert len(problems) == 4
    assert all(SECRET not in problem for problem in problems)
    assert SECRET not in str(caught.value)


def test_settings_repr_hides_the_password() -> None:
    settings = load_settings(REQUIRED)
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)


@pytest.mark.parametrize(
    ("address", "path"),
    [("http://h:1/u/3/", "/u/3/"), ("https://up.test", "/"), ("http://h/upload?x=1", "/upload")],
)
def test_own_path_is_where_clients_post(address: str, path: str) -> None:
    assert Settings("ws://m/", "pw", address).own_path == path


def test_environment_of_settings_loads_back_to_the_same_settings() -> None:
    settings = load_settings(
        {**REQUIRED, "PORT": "9001", "UPLOAD_SLOTS": "3", "LOG_FORMAT": "json"}
    )
    assert load_settings(environment_of(settings)) == settings


# --- the settings' documentation ---------------------------------------------------------------


def test_every_settings_field_has_exactly_one_option() -> None:
    keys = [option.key for option in OPTIONS]
    assert sorted(keys) == sorted(field.name for field in dataclasses.fields(Settings))
    assert len({option.env for option in OPTIONS}) == len(OPTIONS)


@pytest.mark.parametrize("option", OPTIONS, ids=lambda option: option.key)
def test_every_meaning_is_one_line_of_plain_text(option: Option) -> None:
    assert option.meaning
    assert not any(mark in option.meaning for mark in "\n|`"), "shown as is in both formats"


def test_defaults_are_shown_the_way_people_write_them() -> None:
    shown = {option.key: option.shown_default for option in OPTIONS}
    assert shown["manager_address"] == "required"
    assert shown["upload_inactivity_timeout"] == "120"  # the field's 120.0
    assert shown["host"] == "0.0.0.0"


def test_a_default_worked_out_at_run_time_is_shown_by_its_text() -> None:
    slots = next(option for option in OPTIONS if option.key == "slots")
    option = dataclasses.replace(slots, default_text="a quarter of the memory limit")
    assert option.shown_default == "a quarter of the memory limit"


def example_assignments() -> dict[str, str]:
    """Each key set in config.example.toml, commented out or not: {key: its line}."""
    lines = EXAMPLE_CONFIG.read_text().splitlines()
    return {match[1]: line for line in lines if (match := re.match(r"(?:# )?(\w+) = ", line))}


@pytest.mark.parametrize("option", OPTIONS, ids=lambda option: option.key)
def test_the_example_config_file_shows_every_setting(option: Option) -> None:
    assignments = example_assignments()
    assert option.key in assignments, f"{option.key} is not in config.example.toml: regenerate it"
    line = assignments[option.key]
    assert f"# Environment: {option.env}." in EXAMPLE_CONFIG.read_text()
    if option.required:
        assert not line.startswith("#"), "a required setting is set to an example value"
        return
    assert line.startswith("# "), "an optional setting is commented out at its default"
    if option.default_text is None:
        assert tomllib.loads(line.removeprefix("# "))[option.key] == option.default

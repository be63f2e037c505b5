"""The `upload-service` command, run as a real process: its refusals, --version, the
settings' reference (`run --help`, docs/configuration.md, config.example.toml), a port
already in use, `check`, and what `run` leaves unloaded. How a signal stops it:
test_lifecycle.py."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path

import pytest
from conftest import CHANNEL, KEY, TOKEN, stopped_stderr

from service.config import OPTIONS, Settings
from service.exit_status import EXIT_CONFIG, EXIT_LISTEN
from service.local.driver import child_environment, spawn_service
from service.local.loopback import free_port
from service.local.manager import ManagerStandIn

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SERVICE = [sys.executable, "-m", "service"]
SECRET = "s3cret-Pa55word-that-must-not-leak"


def run_command(
    command: list[str], cwd: Path, environment: Mapping[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run `command` with only `environment` and what `child_environment` adds (this checkout's
    `service`, whatever is installed), capturing its output."""
    env = child_environment(**(environment or {}))
    return subprocess.run(
        command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.parametrize(
    "command",
    [
        pytest.param([*SERVICE, "run"], id="python-m-service"),
        pytest.param([str(BIN / "upload-service"), "run"], id="console-script"),
        pytest.param([str(BIN / "upload-service")], id="run-is-the-default"),
    ],
)
def test_run_without_configuration_exits_2_naming_every_problem(
    command: list[str], tmp_path: Path
) -> None:
    assert shutil.which(command[0]) is not None
    result = run_command(command, tmp_path, {"PORT": "eighty"})
    assert result.returncode == EXIT_CONFIG == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.count("upload-service: cannot start") == 1
    for name in ("MANAGER_ADDRESS", "SERVICE_PASSWORD", "OWN_ADDRESS", "PORT"):
        assert name in result.stderr
    assert result.stdout == ""


def test_run_never_prints_the_secret(tmp_path: Path) -> None:
    result = run_command(
        [*SERVICE, "run"], tmp_path, {"SERVICE_PASSWORD": SECRET, "PORT": "eighty"}
    )
    assert result.returncode == 2
    assert SECRET not in result.stderr + result.stdout


def test_version_is_the_package_version(tmp_path: Path) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    result = run_command([*SERVICE, "--version"], tmp_path)
    assert (result.returncode, result.stdout) == (0, f"upload-service {project['version']}\n")


def test_run_help_lists_every_setting_with_its_default(tmp_path: Path) -> None:
    result = run_command([*SERVICE, "run", "--help"], tmp_path)
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    flowing = " ".join(result.stdout.split())
    for option in OPTIONS:
        default = "required" if option.required else f"default {option.shown_default}"
        assert f"  {option.env}, {option.key}: {default}" in lines
        assert option.meaning in flowing
    for status in (EXIT_CONFIG, EXIT_LISTEN):
        assert any(line.startswith(f"  {status} ") for line in lines)


def test_settings_command_prints_the_same_list_as_run_help(tmp_path: Path) -> None:
    listed = run_command([*SERVICE, "settings"], tmp_path).stdout
    assert listed.strip() and listed in run_command([*SERVICE, "run", "--help"], tmp_path).stdout


@pytest.mark.parametrize(
    ("flag", "page"), [("--markdown", "docs/configuration.md"), ("--toml", "config.example.toml")]
)
def test_the_settings_pages_are_what_the_code_generates(
    tmp_path: Path, flag: str, page: str
) -> None:
    """Fails when a setting changed without `upload-service settings FLAG > PAGE` being run
    (the command is named at the top of each page)."""
    result = run_command([*SERVICE, "settings", flag], tmp_path)
    assert result.returncode == 0
    assert result.stdout == (ROOT / page).read_text(), (
        f"run upload-service settings {flag} > {page}"
    )


def test_docs_configuration_md_shows_each_settings_default_and_meaning() -> None:
    committed = (ROOT / "docs" / "configuration.md").read_text()
    rows = [line for line in committed.splitlines() if line.startswith("| `")]
    for option in OPTIONS:
        found = [row for row in rows if row.startswith(f"| `{option.env}` | `{option.key}` |")]
        assert len(found) == 1, f"{option.key} is not in docs/configuration.md once: regenerate it"
        assert option.shown_default in found[0] and option.meaning in found[0]


def occupied_port() -> socket.socket:
    """A socket listening on 127.0.0.1 at a free port, which the service then cannot take."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    return taken


def run_to_listen(tmp_path: Path, **addresses: str) -> subprocess.CompletedProcess[str]:
    """`run` configured but for where it listens (`addresses`), with a manager it never
    reaches: it gets as far as listening."""
    manager = {"MANAGER_ADDRESS": "ws://127.0.0.1:1/x", "SERVICE_PASSWORD": "x"}
    return run_command([*SERVICE, "run"], tmp_path, manager | addresses, timeout=15)


@pytest.mark.parametrize(
    ("host", "reason"),
    [("127.0.0.1", "address already in use"), ("192.0.2.1", "cannot assign requested address")],
    ids=["port-in-use", "address-not-on-this-machine"],
)
def test_cannot_listen_is_one_line_and_exit_3(host: str, reason: str, tmp_path: Path) -> None:
    with occupied_port() as taken:
        port = taken.getsockname()[1]
        result = run_to_listen(
            tmp_path, OWN_ADDRESS=f"http://127.0.0.1:{port}/u", PORT=str(port), HOST=host
        )
    assert result.returncode == EXIT_LISTEN == 3
    assert result.stderr == f"upload-service: cannot listen on {host}:{port} for PORT: {reason}\n"
    assert result.stdout == ""


def test_metrics_port_in_use_is_named_and_exit_3(tmp_path: Path) -> None:
    with occupied_port() as taken:
        metrics_port = taken.getsockname()[1]
        chunk_port = free_port()
        result = run_to_listen(
            tmp_path,
            OWN_ADDRESS=f"http://127.0.0.1:{chunk_port}/u",
            PORT=str(chunk_port),
            METRICS_PORT=str(metrics_port),
            HOST="127.0.0.1",
        )
    assert result.returncode == EXIT_LISTEN
    assert result.stderr == (
        f"upload-service: cannot listen on 127.0.0.1:{metrics_port} for METRICS_PORT: "
        "address already in use\n"
    )


GOOD_SETTINGS = {
    "MANAGER_ADDRESS": "wss://manager.example.com/",
    "SERVICE_PASSWORD": SECRET,
    "OWN_ADDRESS": "https://upload.example.com/u/1/",
}


@pytest.mark.parametrize("where", ["after", "before"])
def test_check_accepts_a_good_configuration_file_without_starting(
    where: str, tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text('port = 7001\nmetrics_port = 7002\nlog_format = "json"\n')
    command = (
        [*SERVICE, "check", "--config", str(config)]
        if where == "after"
        else [*SERVICE, "--config", str(config), "check"]
    )
    result = run_command(command, tmp_path, GOOD_SETTINGS, timeout=15)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == (
        f"upload-service: the configuration is valid (settings from {config} and the environment)\n"
    )
    assert SECRET not in result.stdout


def test_check_names_every_problem_as_run_does_and_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('prot = 7001\nmetrics_port = "nine"\nlog_level = "LOUD"\n')
    environment = {"SERVICE_PASSWORD": SECRET, "OWN_ADDRESS": "ftp://x/"}
    checked = run_command([*SERVICE, "--config", str(config), "check"], tmp_path, environment)
    ran = run_command([*SERVICE, "--config", str(config), "run"], tmp_path, environment)
    assert checked.returncode == ran.returncode == EXIT_CONFIG
    assert checked.stderr == ran.stderr
    assert checked.stdout == ran.stdout == ""
    for problem in ("prot: unknown setting", "METRICS_PORT", "metrics_port", "LOG_LEVEL"):
        assert problem.lower() in checked.stderr.lower()
    for problem in ("MANAGER_ADDRESS is missing", "OWN_ADDRESS must be"):
        assert problem in checked.stderr
    assert SECRET not in checked.stderr


def test_config_before_the_default_command_is_read(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("port = 70000\n")
    result = run_command([*SERVICE, "--config", str(config)], tmp_path, GOOD_SETTINGS)
    assert result.returncode == EXIT_CONFIG
    assert f"port in {config} must be a port number" in result.stderr


def test_config_with_a_command_that_reads_no_settings_is_refused(tmp_path: Path) -> None:
    result = run_command([*SERVICE, "--config", "x.toml", "settings"], tmp_path)
    assert result.returncode == 2
    assert "--config applies to run and check, not to settings" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("name", "reason"),
    [("missing.bin", "no such file or directory"), (".", "is a directory")],
)
def test_demo_names_a_file_it_cannot_read_and_exits_2(
    name: str, reason: str, tmp_path: Path
) -> None:
    result = run_command([*SERVICE, "demo", name], tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"cannot read {name}: {reason}" in result.stderr
    assert result.stdout == ""


# What only the demo, the stand-ins, REDIS_URL or --version use: `run` without them never
# loads it.
NOT_FOR_RUN = ("service.demo", "service.local", "jsonschema", "tqdm", "redis", "importlib.metadata")


async def test_run_loads_neither_the_demo_nor_redis_when_it_has_no_use_for_them(
    settings: Settings, manager: ManagerStandIn
) -> None:
    process = await spawn_service(
        settings, stderr=asyncio.subprocess.PIPE, PYTHONPROFILEIMPORTTIME="1"
    )
    try:
        link = await manager.next_service()
        assert await link.configure(token=TOKEN, channel_id=CHANNEL, crypto_key=KEY) == {
            "success": True
        }
    finally:
        stderr = await stopped_stderr(process)
    imported = [
        line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines() if "import time:" in line
    ]
    assert "service.server" in imported and "discord.http" in imported
    assert [
        name
        for name in imported
        if any(name == top or name.startswith(top + ".") for top in NOT_FOR_RUN)
    ] == []

"""Many instances behind nginx: the shipped configuration, run by real nginx on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import (
    CHANNEL,
    DEPLOY,
    KEY,
    PASSWORD,
    TOKEN,
    deploy_script,
    missing,
    reassembled,
    until,
)

from service.config import OPTIONS, Settings
from service.jobs.layout import MANAGER_CHUNK_SIZE
from service.local.browser import upload
from service.local.discord_api import DiscordStandIn
from service.local.driver import stop_service
from service.local.loopback import free_port, loopback_settings
from service.local.manager import ManagerStandIn
from service.server import UploadService

READY_TRIES = 100
STOP_TIMEOUT = 10.0


render_nginx = deploy_script("render_nginx")


def find_nginx() -> str:
    """Debian's nginx is /usr/sbin/nginx, which may not be on a user's PATH."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        missing("nginx", "apt-get install nginx; .ci/run does")
    return found


def test_committed_configs_are_what_the_renderer_produces() -> None:
    assert render_nginx.main(["--compose", "--k8s", "--check"]) == 0, (
        "a rendering is stale: python deploy/render_nginx.py --compose --k8s"
    )
    compose = (DEPLOY / "docker-compose.yml").read_text()
    for text in render_nginx.COMPOSE_INSTANCES:
        instance = render_nginx.parse_instance(text)
        assert f"\n  {instance.host}:\n" in compose, f"no service {instance.host} in compose"
        # ${PUBLIC_URL}/u/<name>/, possibly with a message for when PUBLIC_URL is unset
        own_address = r"OWN_ADDRESS: \$\{PUBLIC_URL[^}]*\}" + re.escape(instance.path) + "\n"
        assert re.search(own_address, compose), f"{instance.host} has no OWN_ADDRESS for it"


def test_nginx_drops_an_idle_connection_to_an_instance_before_the_instance_does() -> None:
    """The service closes a connection idle for CLIENT_READ_TIMEOUT (aiohttp's keep-alive
    timeout). Were nginx to keep it longer, a chunk it sent on it as the service closed it
    would be a 502, which nginx does not retry for a POST it has begun to stream."""
    instances = [render_nginx.parse_instance(text) for text in ("1=10.0.0.11:8080",)]
    conf = render_nginx.render("80", instances)
    [upstream] = re.findall(r"\nupstream \w+ \{\n(.*?)\n\}", conf, flags=re.DOTALL)
    assert "keepalive " in upstream
    found = re.search(r"keepalive_timeout (\d+)s;", upstream)
    nginx_keeps = int(found[1]) if found else 60  # nginx's default
    [option] = [option for option in OPTIONS if option.key == "client_read_timeout"]
    assert nginx_keeps < option.default, upstream


def test_nginx_waits_longer_than_an_instance_may_hold_a_chunk_unread() -> None:
    """An instance reads nothing of a chunk's body while an earlier request for the chunk is
    done (resend_waits.py), then while the chunk waits for memory (memory_waits.py), each for
    up to CLIENT_READ_TIMEOUT. nginx, streaming the body, gives up on an upstream that takes
    no bytes for proxy_send_timeout: were that shorter, the browser would get nginx's error
    where the instance was about to answer."""
    instances = [render_nginx.parse_instance(text) for text in ("1=10.0.0.11:8080",)]
    conf = render_nginx.render("80", instances)
    found = re.search(r"proxy_send_timeout (\d+)s;", conf)
    nginx_waits = int(found[1]) if found else 60  # nginx's default
    [option] = [option for option in OPTIONS if option.key == "client_read_timeout"]
    assert nginx_waits > 2 * option.default, f"proxy_send_timeout {nginx_waits}s"


def write_nginx_conf(directory: Path, nginx_port: int, ports: dict[str, int]) -> Path:
    """The shipped server config rendered for loopback, inside a minimal main config."""
    instances = [render_nginx.Instance(name, "127.0.0.1", port) for name, port in ports.items()]
    server = directory / "upload.conf"
    server.write_text(
        render_nginx.render(
            f"127.0.0.1:{nginx_port}", instances, access_log=str(directory / "access.log")
        )
    )
    return nginx_main_conf(directory, server)


def nginx_main_conf(directory: Path, server: Path) -> Path:
    """A minimal main config around a server config, everything inside `directory`."""
    temp = "\n".join(
        f"    {kind}_temp_path {directory / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    main = directory / "nginx.conf"
    main.write_text(
        # Started as root (as in CI), nginx would run its workers as `nobody`, who cannot
        # enter pytest's private temporary directory.
        ("user root;\n" if os.geteuid() == 0 else "")
        + f"daemon off;\npid {directory / 'nginx.pid'};\n"
        f"error_log {directory / 'error.log'} info;\n"
        "events {}\n"
        f"http {{\n{temp}\n    include {server};\n}}\n"
    )
    return main


async def start_nginx(conf: Path, directory: Path, origin: str) -> asyncio.subprocess.Process:
    nginx = await asyncio.create_subprocess_exec(
        find_nginx(), "-c", str(conf), "-p", str(directory)
    )
    try:
        await wait_until_serving(f"{origin}/healthz", nginx, directory / "error.log")
    except BaseException:
        await stop_service(nginx, STOP_TIMEOUT)
        raise
    return nginx


@dataclass
class Front:
    """nginx at `origin` in front of the services `instances` (by name)."""

    origin: str
    instances: dict[str, UploadService]
    access_log: Path

    def log_entries(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.access_log.read_text().splitlines()]

    async def wait_for_log_entries(self, count: int) -> list[dict[str, Any]]:
        """The access log once it has `count` entries: nginx writes an entry after it has sent
        the answer, so the test may read the log first (and there is no event to await)."""
        await until(lambda: len(self.log_entries()) >= count)
        return self.log_entries()


@contextlib.asynccontextmanager
async def front(
    directory: Path, settings: Callable[[int, str], Settings] | None
) -> AsyncIterator[Front]:
    """nginx on a free loopback port in front of instances 1 and 2, each an `UploadService`
    with `settings(port, own_address)` (None: nothing runs behind nginx). nginx cannot tell
    these from service processes: they listen on their ports as a process's would."""
    find_nginx()
    nginx_port = free_port()
    origin = f"http://127.0.0.1:{nginx_port}"
    ports = {"1": free_port(), "2": free_port()}
    conf = write_nginx_conf(directory, nginx_port, ports)
    async with contextlib.AsyncExitStack() as instances:
        running: dict[str, UploadService] = {}
        if settings is not None:
            for name, port in ports.items():
                service = UploadService(settings(port, f"{origin}/u/{name}/"))
                running[name] = await instances.enter_async_context(service)
        nginx = await start_nginx(conf, directory, origin)
        try:
            yield Front(origin, running, directory / "access.log")
        finally:
            await stop_service(nginx, STOP_TIMEOUT)


@pytest.fixture
async def nginx_front(
    tmp_path: Path, discord: DiscordStandIn, manager: ManagerStandIn
) -> AsyncIterator[Front]:
    """nginx in front of two services."""

    def settings(port: int, own_address: str) -> Settings:
        return loopback_settings(discord, manager, PASSWORD, port=port, own_address=own_address)

    async with front(tmp_path, settings) as running:
        yield running


@pytest.fixture
async def nginx_alone(tmp_path: Path) -> AsyncIterator[Front]:
    """nginx configured for two instances, neither running: for what nginx answers itself."""
    async with front(tmp_path, None) as running:
        yield running


async def wait_until_serving(url: str, nginx: asyncio.subprocess.Process, log: Path) -> None:
    """Poll nginx's own /healthz, a bounded number of times, backing off a little."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        for attempt in range(READY_TRIES):
            if nginx.returncode is not None:
                break
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except (aiohttp.ClientConnectionError, TimeoutError):
                pass
            await asyncio.sleep(min(0.01 * 2**attempt, 0.2))
    pytest.fail(f"nginx did not serve {url} (exit status {nginx.returncode}):\n{read_log(log)}")


def read_log(log: Path) -> str:
    return log.read_text() if log.exists() else "(no error log)"


async def test_uploads_through_nginx_reach_each_instance_at_its_own_path(
    nginx_front: Front,
    discord: DiscordStandIn,
    manager: ManagerStandIn,
    http: aiohttp.ClientSession,
) -> None:
    links = {}
    for _ in range(2):
        link = await manager.next_service()
        links[link.own_address] = link
    origin = nginx_front.origin
    assert sorted(links) == [f"{origin}/u/1/", f"{origin}/u/2/"]

    jobs = {}
    for address, link in links.items():
        assert await link.configure(token=TOKEN, channel_id=CHANNEL, crypto_key=KEY) == {
            "success": True
        }
        # Real ~10 MiB chunks: nginx's default 1 MiB body limit would refuse them.
        data = os.urandom(MANAGER_CHUNK_SIZE + 12345)
        upload_id, reply = await link.start_upload(size=len(data), chunk_size=MANAGER_CHUNK_SIZE)
        assert reply == {"success": True}
        jobs[address] = (upload_id, data)

    reports = await asyncio.gather(
        *(
            upload(http, address, upload_id, data, MANAGER_CHUNK_SIZE)
            for address, (upload_id, data) in jobs.items()
        )
    )
    assert [report.chunks for report in reports] == [2, 2]
    assert all(report.retries == 0 for report in reports)

    for address, link in links.items():
        finish = await link.next_finish()
        assert finish["success"] is True
        assert reassembled(discord, finish) == jobs[address][1]


async def test_nginx_answers_its_own_health_and_refuses_unknown_paths(
    nginx_front: Front, manager: ManagerStandIn, http: aiohttp.ClientSession
) -> None:
    origin = nginx_front.origin
    for _ in range(2):
        await manager.next_service()
    async with http.get(f"{origin}/healthz") as response:
        assert response.status == 200
    for path in ("/u/3/", "/metrics", "/"):
        async with http.post(f"{origin}{path}", data=b"x") as response:
            assert response.status == 404, path
            assert response.headers["Access-Control-Allow-Origin"] == "*"
            assert "no upload service" in (await response.json())["error"]
    # /u/2/ reaches instance 2, which answers for itself (not a form: 400).
    async with http.post(f"{origin}/u/2/", data=b"x") as response:
        assert response.status == 400
        assert "no upload service" not in await response.text()
    # ... with the path unchanged: stripped of its prefix, this would be the instance's
    # /metrics, which stays private.
    async with http.get(f"{origin}/u/2/metrics") as response:
        assert response.status == 404
        assert "upload_chunks_received_total" not in await response.text()


async def test_a_stopped_instance_is_a_json_503_with_retry_after_and_cors(
    nginx_front: Front, manager: ManagerStandIn, http: aiohttp.ClientSession
) -> None:
    for _ in range(2):
        await manager.next_service()
    await nginx_front.instances["2"].shutdown()
    stopped = f"{nginx_front.origin}/u/2/"
    async with http.post(stopped, data=b"x") as response:
        assert response.status == 503
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert response.headers["Retry-After"] == "5"
        assert response.content_type == "application/json"
        assert "not available" in (await response.json())["error"]
    # A browser's preflight gets the same answer, CORS included (so the page can say why).
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    async with http.options(stopped, headers=preflight) as response:
        assert response.status == 503
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert "error" in await response.json()
    # The other instance is unaffected: it answers for itself (not a form: 400).
    async with http.post(f"{nginx_front.origin}/u/1/", data=b"x") as response:
        assert response.status == 400
        assert "Retry-After" not in response.headers


async def test_a_body_too_large_for_any_chunk_is_a_json_413_with_cors(
    nginx_alone: Front, http: aiohttp.ClientSession
) -> None:
    """nginx refuses it itself, from its Content-Length: no instance runs behind it here."""
    body = io.BytesIO(bytes(12 * 1024 * 1024))  # client_max_body_size is 11m
    async with http.post(f"{nginx_alone.origin}/u/1/", data=body) as response:
        assert response.status == 413
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert "larger than a chunk" in (await response.json())["error"]


async def test_the_access_log_records_request_ids_and_upstream_times(
    nginx_front: Front, manager: ManagerStandIn, http: aiohttp.ClientSession
) -> None:
    for _ in range(2):
        await manager.next_service()
    origin = nginx_front.origin
    before = len(nginx_front.log_entries())
    # One sent by a proxy in front (an ingress) is kept, and reaches the instance, which
    # echoes it.
    async with http.post(
        f"{origin}/u/1/", data=b"x", headers={"X-Request-ID": "ingress-id-0001"}
    ) as response:
        assert response.status == 400
        assert response.headers["X-Request-ID"] == "ingress-id-0001"
    # Otherwise nginx makes one, which the instance gets (and echoes) too.
    async with http.post(f"{origin}/u/2/", data=b"x") as response:
        assert response.status == 400
        made_id = response.headers["X-Request-ID"]
    # nginx's own answers carry theirs, readable by a page.
    async with http.post(f"{origin}/nowhere", data=b"x") as response:
        assert response.status == 404
        own_id = response.headers["X-Request-ID"]
        assert "X-Request-ID" in response.headers["Access-Control-Expose-Headers"]
    # A malformed one is replaced rather than logged or passed on.
    async with http.post(
        f"{origin}/u/1/", data=b"x", headers={"X-Request-ID": 'bad" id'}
    ) as response:
        assert response.status == 400
        replaced_id = response.headers["X-Request-ID"]

    kept, made, own, replaced = (await nginx_front.wait_for_log_entries(before + 4))[-4:]
    assert kept["request_id"] == "ingress-id-0001"
    assert kept["uri"] == "/u/1/" and kept["status"] == 400
    assert kept["upstream_status"] == "400"
    assert float(kept["upstream_seconds"]) >= 0  # the instance's time, as nginx measured it
    assert float(kept["upstream_connect_seconds"]) >= 0
    for entry, sent in ((made, made_id), (own, own_id), (replaced, replaced_id)):
        assert re.fullmatch(r"[0-9a-f]{32}", sent)
        assert entry["request_id"] == sent
    assert own["upstream"] == ""


async def raw_exchange(origin: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `request` as it is (no client would send it) and read the answer nginx closes."""
    host, port = origin.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        answer = await reader.read()
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), {k.lower(): v for k, v in headers.items()}, body


@pytest.mark.parametrize(
    ("request_bytes", "status", "says"),
    [
        pytest.param(b"GARBAGE\r\n\r\n", 400, "malformed", id="request-line"),
        pytest.param(b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505, "HTTP version", id="version"),
        pytest.param(
            b"POST /u/1/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
            501,
            "Transfer-Encoding",
            id="transfer-encoding",
        ),
        pytest.param(
            b"GET /.upload-error HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            404,
            "no upload service",
            id="internal-location",
        ),
    ],
)
async def test_nginx_answers_requests_it_cannot_take_in_json_with_cors_and_no_version(
    nginx_alone: Front, request_bytes: bytes, status: int, says: str
) -> None:
    got, headers, body = await raw_exchange(nginx_alone.origin, request_bytes)
    assert got == status
    assert headers["content-type"] == "application/json"
    assert headers["access-control-allow-origin"] == "*"
    assert re.fullmatch(r"[0-9a-f]{32}", headers["x-request-id"])
    assert headers["server"] == "nginx"  # server_tokens off: no version
    assert says in json.loads(body)["error"]

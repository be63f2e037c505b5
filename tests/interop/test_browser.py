"""A real browser uploads a file: Debian's Chromium, driven by Playwright, from another origin.

The page (`tests/interop/browser/upload.html`) is served by its own HTTP server on another port than
the service, so every chunk is a cross-origin XMLHttpRequest with an upload progress listener:
Chromium sends a CORS preflight, then the multipart form it builds itself. This proves what
the Python uploader cannot: that the service's CORS answers and its multipart parsing hold up
against the browser discord-cloud's client runs in.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp import web
from conftest import Harness, expected_hash, missing, reassembled
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from service.jobs.layout import MANAGER_CHUNK_SIZE

PAGE = Path(__file__).parent / "browser" / "upload.html"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
SIZE = 25 * 1024 * 1024 + 54_321  # three chunks of the manager's default chunk size
PNG_HEAD = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
UPLOAD_LIMIT = 60.0


def chromium() -> str:
    """Chromium's path; missing Chromium or Playwright fails in CI and skips elsewhere."""
    if not os.access(CHROMIUM, os.X_OK) and shutil.which("chromium") is None:
        missing("Chromium", ".ci/run installs Debian's chromium")
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        missing("Playwright for Python", "pip install -e '.[test]'")
    return CHROMIUM if os.access(CHROMIUM, os.X_OK) else str(shutil.which("chromium"))


def page_bytes(seed: bytes, size: int) -> bytes:
    """What the page builds: the AES-128-CTR keystream of `seed`, starting with a PNG head."""
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
    stream = encryptor.update(bytes(size)) + encryptor.finalize()
    return PNG_HEAD[:size] + stream[len(PNG_HEAD) :]


@pytest.fixture
async def page_origin() -> AsyncIterator[str]:
    """Another HTTP server, on another port than the service: the page's origin."""

    async def serve_page(request: web.Request) -> web.FileResponse:
        return web.FileResponse(PAGE)

    app = web.Application()
    app.router.add_get("/upload.html", serve_page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}"
    await runner.cleanup()


async def upload_in_chromium(page_url: str) -> tuple[dict[str, Any], Counter[str]]:
    """Open the page, wait for it to report; return its result and the preflights seen."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            # The browser's own view of the network: CORS preflights show up as their own
            # requests there (they never reach page.on("request")).
            preflights: Counter[str] = Counter()
            devtools = await page.context.new_cdp_session(page)
            await devtools.send("Network.enable")

            def on_response(event: dict[str, Any]) -> None:
                if event.get("type") == "Preflight":
                    preflights[str(event["response"]["status"])] += 1

            devtools.on("Network.responseReceived", on_response)

            reported: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

            def report(result: dict[str, Any]) -> None:
                if not reported.done():
                    reported.set_result(result)

            await page.expose_function("reportResult", report)
            await page.goto(page_url)
            async with asyncio.timeout(UPLOAD_LIMIT):
                result = await reported
            return result, preflights
        finally:
            await browser.close()


async def test_chromium_uploads_a_file_cross_origin_as_the_client_does(
    harness: Harness, page_origin: str
) -> None:
    chromium()
    seed = os.urandom(16)
    data = page_bytes(seed, SIZE)
    upload_id = await harness.start(SIZE, chunk_size=MANAGER_CHUNK_SIZE, name="photo.png")
    query = {
        "address": harness.address,
        "id": upload_id,
        "size": SIZE,
        "chunk_size": MANAGER_CHUNK_SIZE,
        "seed": seed.hex(),
    }
    assert not harness.address.startswith(page_origin)

    result, preflights = await upload_in_chromium(f"{page_origin}/upload.html?{urlencode(query)}")

    assert result["ok"], result.get("error")
    assert result["sha256"] == hashlib.sha256(data).hexdigest()
    assert result["chunks"] == 3
    assert result["statuses"] == {"200": 3}
    assert result["maxInFlight"] == 3  # all chunks at once, as the client does up to 5
    assert result["progressEvents"] > 0
    # Chromium preflighted the POSTs (then cached the answer for Access-Control-Max-Age).
    assert preflights and set(preflights) <= {"200", "204"}

    finish = await harness.link.next_finish()
    assert finish["success"] is True
    assert finish["hash"] == expected_hash(data, MANAGER_CHUNK_SIZE)
    assert finish["type"] == "image/png"
    assert len(finish["messages"]) == 3
    assert reassembled(harness.discord, finish) == data

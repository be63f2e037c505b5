"""Browser-like uploaders in a process of their own, so that many clients' work does not
share the measuring process (and its loop) with the job being timed.

    python bench/uploader.py FILE CHUNK_SIZE CONCURRENCY TRIES (ADDRESS UPLOAD_ID)+

Says "uploader ready" as it begins, uploads FILE's chunks to each (ADDRESS, UPLOAD_ID) at
once, each as `service.local.browser.upload` does, then prints one JSON line, a list with one
{"attempts", "statuses", "problems"} per upload in the order given, and exits.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import aiohttp

from service.local.browser import UploadFailed, upload

READY = "uploader ready"


async def one(
    session: aiohttp.ClientSession,
    address: str,
    upload_id: str,
    file: Path,
    chunk_size: int,
    concurrency: int,
    tries: int,
) -> dict[str, Any]:
    report: dict[str, Any] = {"attempts": 0, "statuses": {}, "problems": []}
    try:
        sent = await upload(
            session,
            address,
            upload_id,
            file,
            chunk_size,
            concurrency=concurrency,
            tries=tries,
        )
        report["attempts"], report["statuses"] = sent.attempts, dict(sent.statuses)
    except* UploadFailed as failed:
        report["problems"] = [str(error) for error in failed.exceptions]
    return report


async def main(file: str, chunk_size: str, concurrency: str, tries: str, *uploads: str) -> None:
    counts = int(chunk_size), int(concurrency), int(tries)
    async with aiohttp.ClientSession() as session:
        print(READY, flush=True)  # the first POSTs go out now
        reports = await asyncio.gather(
            *(
                one(session, address, upload_id, Path(file), *counts)
                for address, upload_id in zip(uploads[::2], uploads[1::2], strict=True)
            )
        )
    print(json.dumps(reports), flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))

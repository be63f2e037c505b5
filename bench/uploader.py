"""A browser-like uploader in a process of its own, so that many clients' work does not
share the measuring process (and its loop) with the job being timed.

    python bench/uploader.py ADDRESS UPLOAD_ID FILE CHUNK_SIZE CONCURRENCY TRIES

Says "uploader ready" once imported, uploads FILE's chunks as `service.local.browser.upload`
does, then prints one JSON line: {"attempts", "statuses", "problems"} and exits.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import aiohttp

from service.local.browser import UploadFailed, upload

READY = "uploader ready"


async def main(address: str, upload_id: str, file: str, chunk_size: str, *counts: str) -> None:
    concurrency, tries = (int(count) for count in counts)
    print(READY, flush=True)
    report = {"attempts": 0, "statuses": {}, "problems": []}
    async with aiohttp.ClientSession() as session:
        try:
            sent = await upload(
                session,
                address,
                upload_id,
                Path(file),
                int(chunk_size),
                concurrency=concurrency,
                tries=tries,
            )
            report["attempts"], report["statuses"] = sent.attempts, dict(sent.statuses)
        except* UploadFailed as failed:
            report["problems"] = [str(error) for error in failed.exceptions]
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))

"""deploy/nginx/upload.conf, the nginx of deploy/docker-compose.yml, run by real nginx with a
stand-in for Docker's DNS, which knows a container's name only while it runs.

nginx looks each instance up per request: one instance stopped (or crash-looping) does not
keep nginx from starting, and one that starts again, possibly at another address, is reached
without restarting nginx (and with it the chunks in flight to every other instance).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from test_deploy_k8s import StandInDns, pod_address, stand_in_pod
from test_nginx import STOP_TIMEOUT, nginx_main_conf, render_nginx, start_nginx

from service.local.driver import stop_service
from service.local.loopback import free_port

FOLLOWED_WITHIN = 15.0  # seconds: nginx keeps an answer, or the lack of one, 5 s


async def reached_pod(http: aiohttp.ClientSession, url: str) -> str | None:
    """The stand-in pod that answered a POST to `url`, or None for nginx's own answer."""
    async with http.post(url, data=b"x") as response:
        body = await response.json()
        return body.get("pod") if response.status == 200 else None


async def test_nginx_starts_while_an_instance_is_stopped_and_reaches_it_once_it_runs(
    tmp_path: Path,
) -> None:
    loop = asyncio.get_running_loop()
    # upload-1 and upload-2 run; upload-3 is stopped, so Docker's DNS does not know its name.
    running = {"upload-1": pod_address(1), "upload-2": pod_address(2)}
    dns, _ = await loop.create_datagram_endpoint(
        lambda: StandInDns(running), local_addr=("127.0.0.1", 0)
    )
    instance_port = free_port()
    pods = [await stand_in_pod(k, instance_port) for k in (1, 2)]
    nginx = None
    try:
        port = free_port()
        conf = render_nginx.render_compose()
        for shipped, here in [
            ("listen 80;", f"listen 127.0.0.1:{port};"),
            ("resolver 127.0.0.11 ", f"resolver 127.0.0.1:{dns.get_extra_info('sockname')[1]} "),
            (":8080;", f":{instance_port};"),
            ("/var/log/nginx/access.log", str(tmp_path / "access.log")),
        ]:
            conf = conf.replace(shipped, here)
        server = tmp_path / "upload.conf"
        server.write_text(conf)
        origin = f"http://127.0.0.1:{port}"
        nginx = await start_nginx(nginx_main_conf(tmp_path, server), tmp_path, origin)

        async with aiohttp.ClientSession() as http:
            assert await reached_pod(http, f"{origin}/u/1/") == "upload-1"
            assert await reached_pod(http, f"{origin}/u/2/") == "upload-2"
            async with http.post(f"{origin}/u/3/", data=b"x") as response:
                assert response.status == 503
                assert response.headers["Retry-After"] == "5"
                assert "not available" in (await response.json())["error"]

            # upload-3 starts: its name appears, and nginx reaches it as it is.
            pods.append(await stand_in_pod(3, instance_port))
            running["upload-3"] = pod_address(3)
            # Until nginx's negative answer expires, which no event announces.
            async with asyncio.timeout(FOLLOWED_WITHIN):
                while await reached_pod(http, f"{origin}/u/3/") != "upload-3":  # noqa: ASYNC110
                    await asyncio.sleep(0.2)
            assert await reached_pod(http, f"{origin}/u/1/") == "upload-1"
    finally:
        if nginx is not None:
            await stop_service(nginx, STOP_TIMEOUT)
        for pod in pods:
            await pod.cleanup()
        dns.close()

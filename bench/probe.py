"""Health prober: times `GET /healthz` on each service from its own process.

The service's event loop cannot be instrumented from outside, so its lag is estimated by how
long a trivial request takes while chunks stream: a loop that stalls for 200 ms answers a
probe sent during the stall up to 200 ms late. The prober runs in a process of its own so
that the benchmark's busy loop (the browser and the Discord stand-in) does not add to it.

Protocol (used by helpers.py): `python probe.py INTERVAL PORT...`; the prober prints `ready`
once every service answered, probes each port every INTERVAL seconds from a thread of its
own, and when a line (or EOF) arrives on stdin prints one JSON object
`{"PORT": {"seconds": [...], "failures": N}, ...}` and exits. Standard library only.
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time
from dataclasses import dataclass, field

HOST = "127.0.0.1"
PATH = "/healthz"
TIMEOUT = 10.0


@dataclass
class Samples:
    seconds: list[float] = field(default_factory=list)
    failures: int = 0


def probe_once(connection: http.client.HTTPConnection) -> float:
    """One GET /healthz; its response time in seconds. Raise on any failure."""
    started = time.perf_counter()
    connection.request("GET", PATH)
    response = connection.getresponse()
    response.read()
    if response.status != 200:
        raise http.client.HTTPException(f"HTTP {response.status}")
    return time.perf_counter() - started


def probe_loop(port: int, interval: float, stop: threading.Event, samples: Samples) -> None:
    connection = http.client.HTTPConnection(HOST, port, timeout=TIMEOUT)
    while not stop.is_set():
        try:
            samples.seconds.append(probe_once(connection))
        except (OSError, http.client.HTTPException):
            samples.failures += 1
            connection.close()
            connection = http.client.HTTPConnection(HOST, port, timeout=TIMEOUT)
        stop.wait(interval)
    connection.close()


def warm_up(port: int) -> None:
    """Wait until the service answers at all (a fresh connection, not counted)."""
    connection = http.client.HTTPConnection(HOST, port, timeout=TIMEOUT)
    try:
        probe_once(connection)
    finally:
        connection.close()


def main(argv: list[str]) -> int:
    interval, ports = float(argv[0]), [int(port) for port in argv[1:]]
    for port in ports:
        warm_up(port)
    stop = threading.Event()
    samples = {port: Samples() for port in ports}
    threads = [
        threading.Thread(target=probe_loop, args=(port, interval, stop, samples[port]))
        for port in ports
    ]
    for thread in threads:
        thread.start()
    print("ready", flush=True)
    sys.stdin.readline()
    stop.set()
    for thread in threads:
        thread.join()
    report = {
        str(port): {"seconds": s.seconds, "failures": s.failures} for port, s in samples.items()
    }
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

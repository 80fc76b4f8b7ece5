"""Memory and speed of one simulated-engine process: ``python -m bench.sim_memory``.

Starts ``simengine`` with ``--engines`` engines holding ``--containers`` running containers each
(created through the engine's own create path with reconciler's labels), and prints the server's
RSS (``VmRSS``; ``VmHWM`` for the peak) at three moments:

1. one engine with no container (the interpreter and the server code);
2. the whole fleet, idle;
3. the fleet with one open ``GET /events`` stream per engine (what a controller holds), after
   each stream has replayed its engine's backlog (``since=0``).

Then, with latencies at zero, how many requests per second the process answers (one keep-alive
connection per client thread; lists of 30 containers and inspects), which bounds what a benchmark
can ask of one simulator process on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import sys
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import docker

from simengine import SimFleet


def rss_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of ``pid`` in MiB."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def open_streams(urls: list[str]) -> Iterator[socket.socket]:
    """One raw ``GET /events?since=0`` per engine; yields the sockets once headers arrived."""
    for url in urls:
        parts = urlsplit(url)
        sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
        sock.sendall(
            b"GET /v1.41/events?since=0&filters=%7B%22type%22%3A%5B%22container%22%2C%22image"
            b"%22%5D%7D HTTP/1.1\r\nHost: engine\r\n\r\n"
        )
        yield sock


def _drain(sock: socket.socket, want: int) -> int:
    """Read until ``want`` event lines arrived; returns how many did."""
    seen = 0
    sock.settimeout(10)
    while seen < want:
        data = sock.recv(65536)
        if not data:
            break
        seen += data.count(b"}\n")
    return seen


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throughput(urls: list[str], *, pid: int, threads: int, seconds: float) -> dict[str, float]:
    """Requests per second over ``threads`` keep-alive clients, each on 10 random engines, and
    the server's CPU milliseconds per request."""
    counts = {"list": 0, "inspect": 0}
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def work(seed: int) -> None:
        rng = random.Random(seed)
        mine = rng.sample(urls, min(10, len(urls)))
        clients: dict[str, docker.APIClient] = {}
        done = {"list": 0, "inspect": 0}
        while time.monotonic() < stop:
            url = rng.choice(mine)
            api = clients.get(url)
            if api is None:
                api = clients[url] = docker.APIClient(base_url=url, version="1.41", timeout=30)
            listed = api.containers(all=True)
            done["list"] += 1
            for c in listed[:5]:
                api.inspect_container(c["Id"])
                done["inspect"] += 1
        with lock:
            for k, v in done.items():
                counts[k] += v
        for api in clients.values():
            api.close()

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    started, cpu = time.monotonic(), cpu_seconds(pid)
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed, cpu = time.monotonic() - started, cpu_seconds(pid) - cpu
    rates = {k: v / elapsed for k, v in counts.items()}
    rates["server_cpu_ms_per_request"] = cpu * 1000 / max(1, sum(counts.values()))
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sim_memory", description=__doc__)
    parser.add_argument("--engines", type=int, default=1000)
    parser.add_argument("--containers", type=int, default=30)
    parser.add_argument("--threads", type=int, default=4, help="client threads (throughput)")
    parser.add_argument("--seconds", type=float, default=5.0, help="throughput window")
    args = parser.parse_args(argv)
    result: dict[str, object] = {"engines": args.engines, "containers_per_engine": args.containers}

    with SimFleet(1, latency_scale=0).start() as one:
        assert one.pid is not None
        base = rss_mib(one.pid)[0]
        result["rss_one_empty_engine_mib"] = round(base, 1)

    started = time.monotonic()
    with SimFleet(
        args.engines, latency_scale=0, seed_containers=args.containers, start_timeout=600
    ).start() as fleet:
        assert fleet.pid is not None
        result["start_seconds"] = round(time.monotonic() - started, 1)
        rss, _ = rss_mib(fleet.pid)
        result["rss_fleet_idle_mib"] = round(rss, 1)
        per = (rss - base) * 1024 / args.engines
        result["kib_per_engine"] = round(per, 1)

        sockets = list(open_streams(fleet.urls))
        backlog = args.containers * 2 + 2  # create + start per container, tag + import
        replayed = [_drain(s, backlog) for s in sockets]
        result["streams_open"] = len(sockets)
        result["streams_with_full_backlog"] = sum(1 for n in replayed if n >= backlog)
        rss, hwm = rss_mib(fleet.pid)
        result["rss_fleet_with_streams_mib"] = round(rss, 1)
        result["rss_peak_mib"] = round(hwm, 1)

        rates = throughput(fleet.urls, pid=fleet.pid, threads=args.threads, seconds=args.seconds)
        result["lists_per_second"] = round(rates["list"])
        result["inspects_per_second"] = round(rates["inspect"])
        result["server_cpu_ms_per_request"] = round(rates["server_cpu_ms_per_request"], 2)
        for s in sockets:
            s.close()

    width = max(map(len, result))
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    print(json.dumps(result), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

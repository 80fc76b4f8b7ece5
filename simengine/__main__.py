"""``python -m simengine serve --count N [--base-port P | --socket-dir DIR]``.

Prints one URL per engine (``tcp://127.0.0.1:PORT`` or ``unix:///DIR/simN.sock``) on stdout, then
serves until SIGTERM or SIGINT. Latencies default to dockerd's measured figures
(``simengine.latency``); ``--latency-scale 0`` answers at once, ``--latency create=0.1`` sets one.
"""

from __future__ import annotations

import argparse
import logging
import sys

from simengine import server
from simengine.engine import DEFAULT_IMAGE
from simengine.latency import Latencies


def _latency(text: str) -> tuple[str, float]:
    name, _, value = text.partition("=")
    try:
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=SECONDS, got {text!r}") from None


def parse(argv: list[str]) -> server.ServeOptions:
    parser = argparse.ArgumentParser(prog="python -m simengine", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve simulated engines until SIGTERM")
    serve.add_argument("--count", type=int, default=1, help="number of engines (default 1)")
    where = serve.add_mutually_exclusive_group()
    where.add_argument("--base-port", type=int, default=0, help="engine i listens on P+i-1")
    where.add_argument("--socket-dir", help="listen on DIR/simN.sock instead of TCP")
    serve.add_argument("--host", default="127.0.0.1", help="TCP address (default loopback)")
    serve.add_argument("--latency-scale", type=float, default=1.0, help="multiply every latency")
    serve.add_argument(
        "--latency", type=_latency, action="append", default=[], help="NAME=SECONDS (repeat)"
    )
    serve.add_argument(
        "--image", action="append", help=f"image present on every engine (default {DEFAULT_IMAGE})"
    )
    serve.add_argument(
        "--pullable", action="append", default=[], help="image a pull succeeds for (repeat)"
    )
    serve.add_argument(
        "--seed-containers", type=int, default=0, help="running containers per engine at start"
    )
    args = parser.parse_args(argv)
    try:
        latencies = Latencies().scaled(args.latency_scale).with_overrides(dict(args.latency))
    except ValueError as e:
        parser.error(str(e))
    return server.ServeOptions(
        count=args.count,
        host=args.host,
        base_port=args.base_port,
        socket_dir=args.socket_dir,
        latencies=latencies,
        images=tuple(args.image or (DEFAULT_IMAGE,)),
        pullable=tuple(args.pullable),
        seed_containers=args.seed_containers,
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return server.run(parse(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())

"""`python -m sandbox engines up|down|status --dir DIR`: long-lived local engines.

Used by `make run` to give a machine without a Docker engine some sandboxed dockerds. `up` starts
them detached (own session; they outlive this command) and records them in `DIR/state.json`; it
is idempotent: engines that already answer are kept, stopped ones are started again on the same
folders and ports. `down` stops them by their recorded pid (checked against the command line, so
a reused pid is never signalled) and deletes their folders. Output: one `name url` per line.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
from typing import Any

from sandbox import engines, images

_STATE = "state.json"


def _load(directory: pathlib.Path) -> list[engines.SandboxEngine]:
    """Engines recorded in DIR/state.json (attached to their pids, no exit hooks)."""
    try:
        raw: dict[str, Any] = json.loads((directory / _STATE).read_text())
    except FileNotFoundError:
        return []
    return [
        engines.SandboxEngine(
            e["name"],
            e["base_dir"],
            port=int(e["port"]),
            pid=e.get("pid"),
            cleanup_at_exit=False,
            tcp=bool(e.get("tcp", True)),
        )
        for e in raw.get("engines", [])
    ]


def _save(directory: pathlib.Path, fleet: list[engines.SandboxEngine]) -> None:
    state = {
        "engines": [
            {
                "name": e.name,
                "base_dir": str(e.base_dir),
                "port": e.port,
                "pid": e.pid,
                "tcp": e.tcp,
            }
            for e in fleet
        ]
    }
    tmp = directory / f".{_STATE}.tmp"
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, directory / _STATE)


def _bring_up(engine: engines.SandboxEngine, image: bool) -> None:
    if engine.is_running() and engine.ping(timeout=2.0):
        return  # already up and answering: leave it alone
    if engine.is_running():
        engine.stop()  # running but not answering (paused, wedged): start it afresh
    engine.start()
    if image:
        images.import_busybox(engine.unix_url)


def up(directory: pathlib.Path, count: int, image: bool, tcp: bool = True) -> int:
    """Make sure at least `count` engines run under `directory`; print `name url` lines."""
    directory.mkdir(parents=True, exist_ok=True)
    fleet = _load(directory)
    known = {e.name for e in fleet}
    for i in range(1, count + 1):
        if f"n{i}" not in known:
            fleet.append(
                engines.SandboxEngine(f"n{i}", directory / f"n{i}", cleanup_at_exit=False, tcp=tcp)
            )
    errors = []
    for engine in fleet:  # sequential: usually they are already up, and the output stays plain
        try:
            _bring_up(engine, image)
        except (engines.EngineError, RuntimeError) as e:
            errors.append(f"{engine.name}: {e}")
    _save(directory, fleet)
    for engine in fleet:
        if engine.is_running():
            print(engine.name, engine.url)
    for error in errors:
        print(error, file=sys.stderr)
    return 1 if errors else 0


def down(directory: pathlib.Path) -> int:
    """Stop every recorded engine by its pid and delete its folder."""
    fleet = _load(directory)
    failures = 0
    for engine in fleet:
        try:
            engine.remove()
            print(engine.name, "removed")
        except (engines.EngineError, OSError) as e:
            failures += 1
            print(f"{engine.name}: {e}", file=sys.stderr)
    if failures == 0:
        (directory / _STATE).unlink(missing_ok=True)
    return 1 if failures else 0


def status(directory: pathlib.Path) -> int:
    """Print `name url state pid` per recorded engine; exit 1 unless all answer."""
    fleet = _load(directory)
    healthy = 0
    for engine in fleet:
        if not engine.is_running():
            state = "stopped"
        elif engine.is_paused():
            state = "paused"
        else:
            state = "up" if engine.ping(timeout=2.0) else "not-answering"
        healthy += state == "up"
        print(engine.name, engine.url, state, engine.pid or "-")
    return 0 if fleet and healthy == len(fleet) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox")
    kinds = parser.add_subparsers(dest="kind", required=True)
    engine_parser = kinds.add_parser("engines", help="sandboxed dockerd engines")
    actions = engine_parser.add_subparsers(dest="action", required=True)
    for name, text in (("up", "start"), ("down", "stop and delete"), ("status", "show")):
        action = actions.add_parser(name, help=f"{text} the engines recorded in DIR")
        action.add_argument("--dir", required=True, type=pathlib.Path, help="short path, /tmp/…")
        if name == "up":
            action.add_argument("--count", type=int, default=1, help="at least this many")
            action.add_argument("--no-image", action="store_true", help="skip busybox:local")
            action.add_argument(
                "--unix-only",
                action="store_true",
                help="no TCP port: only root and the docker group can reach the engine",
            )
    args = parser.parse_args(argv)
    directory = args.dir.absolute()
    if args.action == "up":
        return up(directory, args.count, image=not args.no_image, tcp=not args.unix_only)
    if args.action == "down":
        return down(directory)
    return status(directory)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # `... | head -1`: the reader has gone, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)

"""Process, port and mount helpers for the sandbox, and its exit hooks (stdlib only).

Everything the sandbox starts is stopped by pid, never by name; /proc is the source of truth, and
a zombie (exited, never reaped: this machine's init does not always reap) counts as gone.
`on_exit` registers a cleanup that runs at interpreter exit or on SIGTERM, so an interrupted test
run does not leave dockerds or PostgreSQL servers behind.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import pathlib
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable
from types import FrameType

__all__ = [
    "cmdline",
    "forget",
    "free_port",
    "install_sigterm_handler",
    "on_exit",
    "parallel",
    "process_alive",
    "process_state",
    "processes_under",
    "send_signal",
    "unmount_all",
    "wait_gone",
]

_POLL = 0.05


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def parallel(calls: Iterable[Callable[[], object]]) -> list[str]:
    """Run every call in its own thread and wait for all; return the error messages.

    Plain threads, not an executor: this also runs from atexit, when executors refuse work.
    """
    errors: list[str] = []

    def run(call: Callable[[], object]) -> None:
        try:
            call()
        except BaseException as e:
            errors.append(str(e))

    threads = [threading.Thread(target=run, args=(c,), daemon=True) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def process_state(pid: int) -> str | None:
    """The one-letter state of `pid` from /proc (`Z` zombie, `T` stopped), None if gone."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def cmdline(pid: int) -> str:
    """The command line of `pid`, NULs as spaces; empty for zombies and vanished processes."""
    try:
        return pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def process_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (a zombie has exited; nobody reaped it)."""
    return process_state(pid) not in (None, "Z")


def send_signal(pid: int, sig: int) -> None:
    """Send `sig` to `pid`; a process that is already gone is not an error."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _unescape(field: str) -> str:
    """Decode the octal escapes (`\\040`) that /proc/self/mountinfo uses in paths."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _mounts_under(folder: pathlib.Path) -> list[str]:
    """Mount points at or under `folder`, deepest first."""
    prefix = str(folder).rstrip("/")
    points = []
    for line in pathlib.Path("/proc/self/mountinfo").read_text().splitlines():
        point = _unescape(line.split()[4])
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return sorted(points, key=lambda p: (p.count("/"), p), reverse=True)


def unmount_all(folder: pathlib.Path) -> None:
    """Unmount everything under `folder`, deepest first, lazily as a last resort."""
    libc = ctypes.CDLL(None, use_errno=True)
    for _ in range(20):  # the same point can be stacked (data-root is bind-mounted onto itself)
        points = _mounts_under(folder)
        if not points:
            return
        for point in points:
            if libc.umount2(point.encode(), 0) != 0:
                libc.umount2(point.encode(), 2)  # MNT_DETACH
    raise OSError(f"could not unmount {_mounts_under(folder)}")


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait up to `timeout` seconds for `pid` to exit (a zombie counts); True if it did."""
    deadline = time.monotonic() + timeout
    while process_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(_POLL)
    return True


def processes_under(marker: str, programs: tuple[str, ...]) -> list[int]:
    """Pids running one of `programs` with `marker` in their command line, plus descendants.

    For a containerd shim the descendants are the container's processes.
    """
    parents: dict[int, int] = {}
    roots: set[int] = set()
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit() or not process_alive(pid := int(entry.name)):
            continue
        command = cmdline(pid)
        if marker in command and os.path.basename(command.split(" ", 1)[0]).startswith(programs):
            roots.add(pid)
        with contextlib.suppress(OSError, IndexError, ValueError):
            parents[pid] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    found = set(roots)
    while children := {p for p, pp in parents.items() if pp in found and p not in found}:
        found |= children
    return sorted(found - {os.getpid()})


# -- cleanup of interrupted runs ------------------------------------------------------------------
_cleanups: dict[int, Callable[[], object]] = {}
_cleanups_lock = threading.Lock()
_owner_pid = os.getpid()
_atexit_installed = False
_sigterm_installed = False


def on_exit(owner: object, cleanup: Callable[[], object]) -> None:
    """Run `cleanup` at interpreter exit or on SIGTERM unless `forget(owner)` is called first.

    Used for every engine and PostgreSQL this process starts, so an interrupted test run does
    not leave daemons behind. Forked children never run the cleanups of their parent.
    """
    global _atexit_installed
    with _cleanups_lock:
        _cleanups[id(owner)] = cleanup
        install_atexit = not _atexit_installed
        _atexit_installed = True
    if install_atexit:
        atexit.register(_cleanup_all)
    install_sigterm_handler()


def forget(owner: object) -> None:
    with _cleanups_lock:
        _cleanups.pop(id(owner), None)


def install_sigterm_handler() -> None:
    """Clean up on SIGTERM, then die of it; only from the main thread, only over SIG_DFL."""
    global _sigterm_installed
    if _sigterm_installed or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _on_sigterm)
    _sigterm_installed = True


def _cleanup_all() -> None:
    if os.getpid() != _owner_pid:
        return
    with _cleanups_lock:
        cleanups = list(_cleanups.values())
    parallel(cleanups)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    _cleanup_all()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)

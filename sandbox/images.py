"""Images for sandboxed engines without a registry, and the `docker` CLI runner the sandbox uses.

`import_busybox(url)` imports a tiny image (a static busybox plus applet symlinks, default command
`sleep 3600`) into one engine. The tarball is built once per machine (cached under the temp
folder, keyed by the busybox binary) so importing into many engines costs one upload each.
"""

from __future__ import annotations

import io
import os
import pathlib
import shutil
import struct
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sandbox.tls import TlsFiles

__all__ = [
    "APPLETS",
    "BUSYBOX_TAG",
    "busybox_tarball",
    "docker_command",
    "find_busybox",
    "import_busybox",
    "run_docker",
]

BUSYBOX_TAG = "busybox:local"
"""The tag every sandbox engine gets; tests and `make run` examples use it."""

APPLETS = (
    "sh", "sleep", "echo", "true", "false", "cat", "env", "ls", "ps", "kill", "id", "hostname",
    "date", "touch", "mkdir", "rm", "sed", "grep", "head", "tail", "wc", "printf", "test",
    "nc", "wget", "top", "uname", "pwd", "stat", "timeout", "yes", "seq",
)  # fmt: skip
"""Applets linked to `/bin/busybox` inside the image."""

_CMD = '["sleep","3600"]'
_BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
_DOCKER_ENV_DROP = ("DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_CONTEXT")
_lock = threading.Lock()


def _is_static_elf(path: pathlib.Path) -> bool:
    """True if `path` is a 64-bit little-endian ELF without a PT_INTERP (dynamic loader)."""
    with path.open("rb") as f:
        header = f.read(64)
        if len(header) < 64 or header[:4] != b"\x7fELF" or header[4] != 2 or header[5] != 1:
            return False
        (phoff,) = struct.unpack_from("<Q", header, 32)
        phentsize, phnum = struct.unpack_from("<HH", header, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(
        struct.unpack_from("<I", table, i * phentsize)[0] != 3  # PT_INTERP
        for i in range(phnum)
    )


def find_busybox() -> pathlib.Path:
    """Return a statically linked busybox binary; raise RuntimeError if there is none."""
    for candidate in _BUSYBOX_CANDIDATES:
        path = pathlib.Path(candidate)
        if path.is_file() and _is_static_elf(path):
            return path
    raise RuntimeError(
        "no statically linked busybox found in "
        f"{', '.join(_BUSYBOX_CANDIDATES)} (install busybox-static: scripts/install-deps.sh)"
    )


def busybox_tarball() -> pathlib.Path:
    """Build (once, atomically) and return the rootfs tarball for `busybox:local`."""
    busybox = find_busybox()
    st = busybox.stat()
    target = pathlib.Path(tempfile.gettempdir()) / (
        f"rcl-busybox-{st.st_size}-{st.st_mtime_ns}-{len(APPLETS)}.tar"
    )
    with _lock:
        if target.is_file():
            return target
        fd, tmp_name = tempfile.mkstemp(prefix=".rcl-busybox-", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w") as tar:
                for folder in ("bin", "etc", "tmp", "proc", "sys", "dev"):
                    info = tarfile.TarInfo(folder)
                    info.type, info.mode = tarfile.DIRTYPE, 0o1777 if folder == "tmp" else 0o755
                    tar.addfile(info)
                info = tarfile.TarInfo("etc/passwd")
                passwd = b"root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"
                info.size, info.mode = len(passwd), 0o644
                tar.addfile(info, io.BytesIO(passwd))
                tar.add(str(busybox), arcname="bin/busybox")
                for applet in APPLETS:
                    info = tarfile.TarInfo(f"bin/{applet}")
                    info.type, info.linkname, info.mode = tarfile.SYMTYPE, "busybox", 0o777
                    tar.addfile(info)
            os.replace(tmp_name, target)
        except BaseException:
            pathlib.Path(tmp_name).unlink(missing_ok=True)
            raise
    return target


def docker_command(url: str, *args: str, tls: TlsFiles | None = None) -> list[str]:
    """The argv of `docker -H url [tls flags] args...`; raise RuntimeError without a CLI."""
    docker = shutil.which("docker")
    if docker is None:
        raise RuntimeError("the docker CLI is not installed (run scripts/install-deps.sh)")
    return [docker, *(tls.client_args() if tls else []), "-H", url, *args]


def run_docker(
    url: str,
    *args: str,
    tls: TlsFiles | None = None,
    timeout: float = 60,
    input: bytes | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run the docker CLI against `url` (environment DOCKER_* cleared); text output.

    With `check`, a non-zero exit raises RuntimeError carrying the command's stderr.
    `subprocess.TimeoutExpired` propagates.
    """
    env = {k: v for k, v in os.environ.items() if k not in _DOCKER_ENV_DROP}
    argv = docker_command(url, *args, tls=tls)
    proc = subprocess.run(
        argv, input=input, capture_output=True, timeout=timeout, env=env, check=False
    )
    result = subprocess.CompletedProcess(
        argv,
        proc.returncode,
        proc.stdout.decode(errors="replace"),
        proc.stderr.decode(errors="replace"),
    )
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args)} on {url} failed ({result.returncode}): {result.stderr.strip()}"
        )
    return result


def import_busybox(
    url: str,
    tag: str = BUSYBOX_TAG,
    *,
    tls: TlsFiles | None = None,
    timeout: float = 120,
    extra_changes: Sequence[str] = (),
    force: bool = False,
) -> str:
    """Import the busybox rootfs into the engine at `url` as `tag`; return the image ID.

    Idempotent: if `tag` already exists it is kept (every import makes a new image ID, which
    would leave existing containers on an untagged image) unless `force`.
    Raises RuntimeError on failure.
    """
    if not force:
        existing = run_docker(
            url, "image", "inspect", "--format", "{{.Id}}", tag, tls=tls, timeout=timeout,
            check=False,
        )  # fmt: skip
        if existing.returncode == 0:
            return existing.stdout.strip()
    tarball = busybox_tarball()
    changes = [f"CMD {_CMD}", *extra_changes]
    change_args = [arg for change in changes for arg in ("-c", change)]
    result = run_docker(
        url, "import", *change_args, "-", tag, tls=tls, timeout=timeout, input=tarball.read_bytes()
    )
    return result.stdout.strip()

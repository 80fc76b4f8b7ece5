"""Sandboxed dockerd engines and a throwaway PostgreSQL, for tests, benchmarks and `make run`.

Stdlib only (plus the `docker`, `dockerd`, `openssl` and PostgreSQL binaries); nothing here is
imported by the reconciler itself. Start with `engines.start_engines`, `postgres.SandboxPostgres`,
`images.import_busybox` and `tls.make_tls_files` (`processes`: pid, port, mount and exit-hook
helpers); `python -m sandbox --help` for the CLI.
"""

from sandbox.engines import EngineError, EngineFleet, SandboxEngine, start_engines
from sandbox.images import BUSYBOX_TAG, import_busybox
from sandbox.postgres import PostgresError, SandboxPostgres
from sandbox.tls import TlsFiles, make_tls_files

__all__ = [
    "BUSYBOX_TAG",
    "EngineError",
    "EngineFleet",
    "PostgresError",
    "SandboxEngine",
    "SandboxPostgres",
    "TlsFiles",
    "import_busybox",
    "make_tls_files",
    "start_engines",
]

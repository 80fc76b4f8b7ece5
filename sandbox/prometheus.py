"""A throwaway Prometheus server that scrapes given targets (tests of ``/metrics``).

Debian's ``prometheus`` package (``scripts/install-deps.sh`` installs it) brings ``prometheus``
and ``promtool``. :class:`SandboxPrometheus` writes a one-job scrape config, starts the server
on a free loopback port with its storage under a temporary folder, waits until it is ready, and
stops it by its pid. :func:`check_metrics` runs ``promtool check metrics`` on an exposition.

    with SandboxPrometheus(targets=["127.0.0.1:9465"]) as prom:
        prom.wait_for_series("reconciler_leader")
        prom.query("reconciler_node_healthy")   # [(labels, value), ...]
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence

from sandbox import processes

__all__ = ["PrometheusError", "SandboxPrometheus", "check_metrics"]

_POLL = 0.1


class PrometheusError(RuntimeError):
    """The server did not come up, or a query failed."""


def check_metrics(exposition: bytes) -> subprocess.CompletedProcess[str]:
    """``promtool check metrics`` on ``exposition``: returncode 0 and no output when clean."""
    return subprocess.run(
        ["promtool", "check", "metrics"],
        input=exposition.decode(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class SandboxPrometheus:
    """One ``prometheus`` process scraping ``targets`` every ``interval`` seconds."""

    def __init__(self, *, targets: Sequence[str], interval: float = 1.0) -> None:
        self.targets = list(targets)
        self.interval = interval
        self.port = processes.free_port()
        self.base_dir = pathlib.Path(tempfile.mkdtemp(prefix="reconciler-prometheus-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self, timeout: float = 60) -> None:
        """Start the server and wait until ``/-/ready`` answers 200."""
        seconds = f"{max(self.interval, 0.1):g}s"
        config = {
            "global": {"scrape_interval": seconds, "scrape_timeout": seconds},
            "scrape_configs": [
                {"job_name": "reconciler", "static_configs": [{"targets": self.targets}]}
            ],
        }
        config_path = self.base_dir / "prometheus.yml"
        config_path.write_text(json.dumps(config))  # JSON is YAML
        log = (self.base_dir / "prometheus.log").open("wb")
        processes.on_exit(self, self.remove)
        self._process = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config_path}",
                f"--storage.tsdb.path={self.base_dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise PrometheusError(f"prometheus exited early:\n{self.log_tail()}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(self.url + "/-/ready", timeout=2) as answer,
            ):
                if answer.status == 200:
                    return
            time.sleep(_POLL)
        raise PrometheusError(f"prometheus not ready after {timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = (self.base_dir / "prometheus.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def query(self, expression: str) -> list[tuple[dict[str, str], float]]:
        """An instant query through ``/api/v1/query``: (labels, value) per series."""
        url = self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": expression})
        with urllib.request.urlopen(url, timeout=10) as answer:
            body = json.load(answer)
        if body.get("status") != "success":
            raise PrometheusError(f"query {expression!r} failed: {body}")
        return [(item["metric"], float(item["value"][1])) for item in body["data"]["result"]]

    def targets_up(self) -> bool:
        """True when every target's last scrape succeeded (``up == 1``)."""
        found = self.query("up")
        return len(found) == len(self.targets) and all(value == 1.0 for _, value in found)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM by pid, SIGKILL if it outlives ``timeout``."""
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.wait(10)

    def remove(self) -> None:
        """Stop the server and delete its folder."""
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)
        processes.forget(self)

    def __enter__(self) -> SandboxPrometheus:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

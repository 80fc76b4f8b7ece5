"""Log output for the daemon: one line per action and per health transition.

``text`` is for people (``2026-11-27T17:00:00 INFO executor: container web has been created on
n1``); ``json`` writes one object per line for log collectors, with the same fields.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from reconciler.cli import text

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class TextFormatter(logging.Formatter):
    """One line per record: control characters in the message (a newline in a row's name, an
    ESC sequence in a user field) are escaped, so a row cannot forge a log line. A traceback,
    when there is one, follows on its own lines as usual."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = text.escape_controls(record.message)
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure(*, fmt: str = "text", level: int = logging.INFO) -> None:
    """Send logs to stderr in ``fmt``; replaces handlers set up earlier."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Libraries that narrate every step at INFO: their warnings still show.
    for noisy in ("alembic", "apscheduler"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))

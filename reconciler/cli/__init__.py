"""The ``reconciler`` command line: click commands, output formatting and logging setup.

``main`` is the click group (the console script's entry point). The row and node commands live in
``cli.main``, the daemon's ``run`` and ``plan`` in ``cli.run``, ``describe``, ``events`` and
``logs`` in ``cli.inspect``; importing this package registers them all. This is the only package
that imports ``click``.
"""

from reconciler.cli import inspect as _inspect  # noqa: F401  (describe, events, logs)
from reconciler.cli import run as _run  # noqa: F401  (registers run and plan on the group)
from reconciler.cli.main import main

__all__ = ["main"]

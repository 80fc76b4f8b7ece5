"""``python -m bench``: see ``bench.cli`` for the flags, ``bench/README.md`` for the method."""

import sys

from bench import cli

sys.exit(cli.main())

"""Parse and validate a row (from SQL or YAML) into a ``DesiredContainer``; spec hash; labels.

``spec.model`` holds the pydantic models that name the field at fault; ``spec.rows`` turns raw
rows into the frozen values of ``reconciler.domain``. Pure: no I/O, no clock.
"""

from reconciler.spec.rows import *  # noqa: F403
from reconciler.spec.rows import __all__ as _rows_all

__all__ = list(_rows_all)

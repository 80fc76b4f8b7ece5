"""Which env values are secrets, and how they are shown: one rule for every command.

``reconciler get -o yaml/json`` and ``reconciler describe`` show a row's env with the values of
secret-looking keys masked (``PASSWORD``, ``SECRET``, ``TOKEN``, ``KEY``, ``CREDENTIAL``
anywhere in the key, case-insensitive) unless the person asks with ``--show-secrets``. Logs,
events, status messages and plan output never show env values at all (``domain.Env``'s
``repr`` shows keys only).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["MASK", "SECRET_WORDS", "looks_secret", "masked_env"]

#: Words that make an env key a secret's, anywhere in the key, case-insensitive.
SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN", "KEY", "CREDENTIAL")
#: What a masked value is shown as.
MASK = "***"

_SECRET_RE = re.compile("|".join(SECRET_WORDS), re.IGNORECASE)


def looks_secret(key: str) -> bool:
    """True when env key ``key`` names a secret (``DB_PASSWORD``, ``api_token``, ``SSH_KEY``)."""
    return _SECRET_RE.search(key) is not None


def masked_env(env: Mapping[str, str], *, show_secrets: bool = False) -> dict[str, str]:
    """``env`` as a plain dict, the values of secret-looking keys replaced by :data:`MASK`."""
    if show_secrets:
        return {key: env[key] for key in env}
    return {key: MASK if looks_secret(key) else env[key] for key in env}

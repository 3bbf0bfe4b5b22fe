"""The per-user state directory: wallets, identities, deployments, indexes, devnet state."""

from __future__ import annotations

import os
from pathlib import Path


def wwwserve_home() -> Path:
    """`$WWWSERVE_HOME`, default `~/.wwwserve`."""
    return Path(os.environ.get("WWWSERVE_HOME", Path.home() / ".wwwserve")).expanduser()

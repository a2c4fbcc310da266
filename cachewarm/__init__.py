"""cachewarm: keep a shop's Redis cache warm from MySQL, safely, from cron.

The library API the CLI is built on; call it from Python with resolved Settings, inside
`run_guard` when the process should get the CLI's deadline and signal handling too.

The names below are imported on first use (PEP 562), not with the package: the CLI
imports `cachewarm` for `--version`, `--help` and shell completion too, which must not
pay for redis-py, PyMySQL and structlog.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import Settings, load_settings
    from .errors import CachewarmError
    from .guard import run_guard
    from .keys import Keys
    from .orchestrate import DryRunReport, InvalidateResult, dry_run, invalidate, warm
    from .staleness import AuditReport, audit
    from .views import StatusReport, show, status

__version__ = "0.1.0"  # also in pyproject.toml; test_docs keeps the two in step

# Each public name and the module that defines it.
_HOMES = {
    "AuditReport": "staleness",
    "CachewarmError": "errors",
    "DryRunReport": "orchestrate",
    "InvalidateResult": "orchestrate",
    "Keys": "keys",
    "Settings": "config",
    "StatusReport": "views",
    "audit": "staleness",
    "dry_run": "orchestrate",
    "invalidate": "orchestrate",
    "load_settings": "config",
    "run_guard": "guard",
    "show": "views",
    "status": "views",
    "warm": "orchestrate",
}

__all__ = [
    "AuditReport",
    "CachewarmError",
    "DryRunReport",
    "InvalidateResult",
    "Keys",
    "Settings",
    "StatusReport",
    "__version__",
    "audit",
    "dry_run",
    "invalidate",
    "load_settings",
    "run_guard",
    "show",
    "status",
    "warm",
]


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'cachewarm' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value  # once: later lookups do not come back here
    return value

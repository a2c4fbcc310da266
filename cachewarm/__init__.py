"""cachewarm: keep a shop's Redis cache warm from MySQL, safely, from cron.

The library API the CLI is built on; call it from Python with resolved Settings, inside
`run_guard` when the process should get the CLI's deadline and signal handling too.
"""

from .config import Settings, load_settings
from .errors import CachewarmError
from .guard import run_guard
from .keys import Keys
from .orchestrate import DryRunReport, InvalidateResult, dry_run, invalidate, warm
from .staleness import AuditReport, audit
from .views import StatusReport, show, status

__version__ = "0.1.0"  # also in pyproject.toml; test_docs keeps the two in step

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

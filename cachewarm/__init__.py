"""cachewarm: keep a shop's Redis cache warm from MySQL, safely, from cron.

The library API the CLI is built on; call it from Python with resolved Settings.
"""

from .api import DryRunReport, InvalidateResult, dry_run, invalidate, show, status, warm
from .config import Settings, load_settings
from .errors import CachewarmError
from .keys import Keys

__version__ = "0.1.0"  # also in pyproject.toml; test_docs keeps the two in step

__all__ = [
    "CachewarmError",
    "DryRunReport",
    "InvalidateResult",
    "Keys",
    "Settings",
    "__version__",
    "dry_run",
    "invalidate",
    "load_settings",
    "show",
    "status",
    "warm",
]

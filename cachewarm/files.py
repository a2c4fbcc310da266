"""Files cachewarm keeps for itself (lockfile, run log, metrics): private, whole, never torn.

Failures here are FileAccessError, whatever the file is for, so a bad run-log
directory is reported as what it is and not as a lock problem.
"""

from __future__ import annotations

from pathlib import Path

from .errors import FileAccessError


def ensure_private_dir(path: Path, purpose: str = "") -> None:
    """Create `path` (mode 700) if missing; `purpose` says what it is for, in the error."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        # mkdir reports a file in the way as "File exists"; say what is wrong instead
        reason = "a file is in the way" if isinstance(exc, FileExistsError) else exc.strerror
        raise FileAccessError(
            f"cannot create directory {path}{f' for {purpose}' if purpose else ''}: {reason}"
        ) from None

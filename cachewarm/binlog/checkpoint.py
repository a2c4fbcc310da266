"""The follower's checkpoint: where in the binlog to resume, written so a crash cannot tear it.

The checkpoint (binlog file, offset, GTID) is written, atomically and fsynced, only
after the invalidations of every event before it were applied, and only at a
transaction boundary (see follow.py). The file doubles as the follower's status
(`cachewarm status`): position, last event, lag, last error.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from .. import lock
from ..config import Settings
from ..errors import ConfigError


def load_state(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"follow checkpoint {path} is unreadable: {exc}") from None
    return data


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Replace the file so that a crash leaves the old or the new one, never a torn one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            json.dump(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself must survive a power cut
        finally:
            os.close(dir_fd)
    finally:
        tmp.unlink(missing_ok=True)


def follower_status(settings: Settings) -> dict[str, Any] | None:
    """What the follower last recorded, or None if this namespace was never followed."""
    state = load_state(settings.follow_checkpoint)
    if state is None:
        return None
    state["path"] = str(settings.follow_checkpoint)
    state["running"] = lock.file_lock_holder(lockfile(settings))
    state["age_s"] = round(time.time() - float(state.get("saved_at", 0)), 1)
    return state


def lockfile(settings: Settings) -> Path:
    """Held while a follower runs: a second one exits 75, `status` names the holder."""
    checkpoint = settings.follow_checkpoint
    return checkpoint.with_name(checkpoint.name + ".lock")

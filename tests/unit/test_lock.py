"""The file lock on its own: exclusive, with its holder recorded, in a private directory."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from cachewarm import lock
from cachewarm.errors import LockHeld
from tests.helpers import lock_is_free


def test_file_lock_is_exclusive_within_and_across_processes(tmp_path: Path) -> None:
    path = tmp_path / "locks" / "x.lock"
    with lock.file_lock(path, "run-a", max_seconds=60):
        info = json.loads(path.read_text())
        assert (info["run_id"], info["pid"]) == ("run-a", os.getpid())
        assert lock.file_lock_holder(path) == info
        taken = lock.file_lock(path, "run-b", max_seconds=60)
        with pytest.raises(LockHeld, match=f"lock {path} is held by run run-a"):
            taken.__enter__()
        assert not lock_is_free(path)
    assert lock_is_free(path)
    assert lock.file_lock_holder(path) is None
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700

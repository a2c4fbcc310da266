"""The run log under concurrent appends: every record a whole line of its own."""

from __future__ import annotations

import errno
import fcntl
import json
import multiprocessing
import os
from pathlib import Path

import pytest

from cachewarm import runlog
from cachewarm.runlog import RunRecord

WRITERS, EACH = 6, 150


def append_many(path: Path, writer: int) -> None:
    for i in range(EACH):
        # ~2.5 KB of hot ids: most records cross a page boundary of the file
        record = RunRecord(run_id=f"{writer}-{i}", command="run", hot_ids=list(range(500)))
        runlog.append(path, record)


def test_concurrent_appends_leave_one_whole_line_per_record(tmp_path: Path) -> None:
    """A record half appended by another process is not a torn line to repair: no blank
    or broken line appears, whatever the interleaving (fifty cron runs at once)."""
    path = tmp_path / "log" / "runs.jsonl"
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=append_many, args=(path, w)) for w in range(WRITERS)]
    for proc in writers:
        proc.start()
    for proc in writers:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    ids = sorted(json.loads(line)["run_id"] for line in lines[:-1])
    assert ids == sorted(f"{w}-{i}" for w in range(WRITERS) for i in range(EACH))


def test_a_filesystem_without_flock_still_gets_the_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """flock failing (ENOLCK on some NFS mounts) costs the append its lock, not the record."""

    def broken(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    path = tmp_path / "log" / "runs.jsonl"
    monkeypatch.setattr(fcntl, "flock", broken)
    runlog.append(path, RunRecord(run_id="first", command="run"))
    runlog.append(path, RunRecord(run_id="second", command="run"))
    assert [r["run_id"] for r in runlog.tail(path, 5)] == ["first", "second"]

"""The Prometheus textfile written by real runs: a last-success time that only a
successful run moves, and a broken path that warns without failing the run."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from cachewarm import check, metrics
from tests.helpers import (
    MakeConfig,
    cachewarm,
    cachewarm_here,
    one_line,
    running,
    slow_listing_query,
    start,
    wait_for_lock_holder,
)
from tests.prometheus import read, status_of, value


@pytest.fixture
def textfile(tmp_path: Path) -> Path:
    (tmp_path / "textfile").mkdir()
    return tmp_path / "textfile" / "cachewarm.prom"


def test_success_then_failure_keeps_the_last_success_time(
    make_config: MakeConfig, textfile: Path, key_prefix: str
) -> None:
    before = time.time()
    ok = make_config(metrics_file=str(textfile))
    assert cachewarm_here("--config", str(ok), "run").returncode == 0
    after = time.time()
    first = read(textfile)
    assert status_of(first) == "ok"
    success = value(first, metrics.LAST_SUCCESS, prefix=key_prefix, version="1")
    assert success is not None and before - 1 <= success <= after + 1
    assert value(first, "cachewarm_last_run_hot_ids") == value(
        first, "cachewarm_last_run_listings_written"
    )
    assert (value(first, "cachewarm_last_run_hot_ids") or 0) > 0

    failing = make_config(
        metrics_file=str(textfile), listing_query="SELECT nope FROM products WHERE id IN %(ids)s"
    )
    result = cachewarm_here("--config", str(failing), "run")
    assert result.returncode == 1
    second = read(textfile)
    assert status_of(second) == "failed"
    assert value(second, metrics.LAST_SUCCESS) == pytest.approx(success, abs=0.001)
    last_run = value(second, "cachewarm_last_run_timestamp_seconds")
    assert last_run is not None and last_run >= success


def test_a_deployment_that_never_succeeded_shows_last_success_zero(
    make_config: MakeConfig, textfile: Path
) -> None:
    """Every series from the first run: an age alert fires, instead of finding none."""
    config = make_config(metrics_file=str(textfile), hot_query="SELECT 'x' LIMIT %(limit)s")
    for _ in range(2):
        assert cachewarm_here("--config", str(config), "run").returncode == 1
        series = read(textfile)
        assert status_of(series) == "failed"
        assert value(series, metrics.LAST_SUCCESS) == 0


def test_skipped_and_interrupted_runs_are_not_successes(
    make_config: MakeConfig, textfile: Path
) -> None:
    first = make_config(metrics_file=str(textfile))
    assert cachewarm("--config", str(first), "run").returncode == 0
    success = value(read(textfile), metrics.LAST_SUCCESS)
    config = make_config(
        metrics_file=str(textfile), listing_query=slow_listing_query(0.05), batch_size=4
    )
    with running(start("--config", str(config), "run")) as holder:
        wait_for_lock_holder(config.with_name("cw.lock"))
        skipped = cachewarm("--config", str(config), "run")
        assert skipped.returncode == 75
        series = read(textfile)
        assert status_of(series) == "skipped"
        assert value(series, metrics.LAST_SUCCESS) == success
        holder.send_signal(signal.SIGTERM)
        _, err = holder.communicate(timeout=20)
    assert holder.returncode == 143, err
    series = read(textfile)
    assert status_of(series) == "interrupted"
    assert value(series, metrics.LAST_SUCCESS) == success


def test_unwritable_metrics_file_warns_but_the_run_succeeds(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    (tmp_path / "afile").write_text("x")
    config = make_config(metrics_file=str(tmp_path / "afile" / "cachewarm.prom"))
    result = cachewarm_here("--config", str(config), "run")
    assert result.returncode == 0
    line = one_line(result.stderr)
    assert line.startswith("cachewarm: warning: cannot write the metrics file ") and "afile" in line


def test_a_missing_metrics_directory_is_created_readable_by_the_collector(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    """`check` says such a file can be created; the run must then create it."""
    textfile = tmp_path / "collector" / "textfile" / "cachewarm.prom"
    config = make_config(metrics_file=str(textfile))
    (finding,) = [f for f in check.check(config, env={}).findings if f.check == "metrics_file"]
    assert finding.status == check.OK
    assert cachewarm_here("--config", str(config), "run").returncode == 0
    assert status_of(read(textfile)) == "ok"
    assert textfile.parent.stat().st_mode & 0o005 == 0o005  # others may list and enter it
    assert textfile.stat().st_mode & 0o777 == 0o644

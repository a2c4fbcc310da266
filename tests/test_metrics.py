"""The Prometheus textfile: valid exposition format, replaced atomically, and a
last-success time that only a successful run moves."""

from __future__ import annotations

import math
import re
import signal
import time
from pathlib import Path

import pytest
from helpers import MakeConfig, cachewarm, one_line, slow_listing_query, start, wait_for_lock_holder

from cachewarm import metrics
from cachewarm.runlog import RunRecord

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE = re.compile(rf"^({NAME})(?:\{{((?:{LABEL})(?:,{LABEL})*)?,?\}})? (\S+)(?: -?\d+)?$")
Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_prometheus(text: str) -> Series:
    """Strictly parse the text exposition format (0.0.4); fail on anything malformed."""
    assert text.endswith("\n"), "the file must end with a newline"
    types: dict[str, str] = {}
    helped: set[str] = set()
    series: Series = {}
    for line in text.split("\n")[:-1]:
        if line.startswith("# HELP "):
            _, _, name, *doc = line.split(" ")
            assert re.fullmatch(NAME, name) and doc and name not in helped, line
            helped.add(name)
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert re.fullmatch(NAME, name) and name not in types, line
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            types[name] = kind
        else:
            assert not line.startswith("#") and line.strip() == line and line, repr(line)
            found = SAMPLE.match(line)
            assert found, f"not a sample line: {line!r}"
            name, labels, value = found.groups()
            assert name in types, f"{name} has no TYPE line before its samples"
            pairs = frozenset(
                (k, v)
                for k, v in re.findall(
                    r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', labels or ""
                )
            )
            assert (name, pairs) not in series, f"duplicate series {line!r}"
            number = float(value)  # also accepts NaN / +Inf, as Prometheus does
            assert not math.isnan(number), line
            series[(name, pairs)] = number
    return series


def value(series: Series, name: str, **labels: str) -> float | None:
    """The one sample of `name` whose labels include `labels`, or None."""
    found = [v for (n, pairs), v in series.items() if n == name and set(labels.items()) <= pairs]
    assert len(found) <= 1
    return found[0] if found else None


def status_of(series: Series) -> str:
    on = [
        dict(pairs)["status"]
        for (name, pairs), v in series.items()
        if name == "cachewarm_last_run_status" and v == 1
    ]
    assert len(on) == 1, on
    return on[0]


def read(path: Path) -> Series:
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name], "temp file left over"
    return parse_prometheus(path.read_text(encoding="utf-8"))


@pytest.fixture
def textfile(tmp_path: Path) -> Path:
    (tmp_path / "textfile").mkdir()
    return tmp_path / "textfile" / "cachewarm.prom"


def test_success_then_failure_keeps_the_last_success_time(
    make_config: MakeConfig, textfile: Path, key_prefix: str
) -> None:
    before = time.time()
    ok = make_config(metrics_file=str(textfile))
    assert cachewarm("--config", str(ok), "run").returncode == 0
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
    result = cachewarm("--config", str(failing), "run")
    assert result.returncode == 1
    second = read(textfile)
    assert status_of(second) == "failed"
    assert value(second, metrics.LAST_SUCCESS) == pytest.approx(success, abs=0.001)
    last_run = value(second, "cachewarm_last_run_timestamp_seconds")
    assert last_run is not None and last_run >= success


def test_first_run_failing_has_no_last_success(make_config: MakeConfig, textfile: Path) -> None:
    config = make_config(metrics_file=str(textfile), hot_query="SELECT 'x' LIMIT %(limit)s")
    assert cachewarm("--config", str(config), "run").returncode == 1
    series = read(textfile)
    assert status_of(series) == "failed"
    assert value(series, metrics.LAST_SUCCESS) is None


def test_skipped_and_interrupted_runs_are_not_successes(
    make_config: MakeConfig, textfile: Path
) -> None:
    first = make_config(metrics_file=str(textfile))
    assert cachewarm("--config", str(first), "run").returncode == 0
    success = value(read(textfile), metrics.LAST_SUCCESS)
    config = make_config(
        metrics_file=str(textfile), listing_query=slow_listing_query(0.05), batch_size=4
    )
    holder = start("--config", str(config), "run")
    try:
        wait_for_lock_holder(config.with_name("cw.lock"))
        skipped = cachewarm("--config", str(config), "run")
        assert skipped.returncode == 75
        series = read(textfile)
        assert status_of(series) == "skipped"
        assert value(series, metrics.LAST_SUCCESS) == success
        holder.send_signal(signal.SIGTERM)
        _, err = holder.communicate(timeout=20)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.communicate()
    assert holder.returncode == 143, err
    series = read(textfile)
    assert status_of(series) == "interrupted"
    assert value(series, metrics.LAST_SUCCESS) == success


def test_render_is_valid_for_every_status() -> None:
    for status in (*metrics.STATUSES, "dry-run"):
        record = RunRecord(run_id="r", command="run", status=status, prefix="shop.v-2", version=3)
        record.duration_s, record.hot, record.written = 1.25, 1_234_567, 7
        for last in (None, 1_700_000_000.123456):
            series = parse_prometheus(metrics.render(record, 1_700_000_100.25, last))
            assert value(series, metrics.LAST_SUCCESS) == (None if last is None else 1700000000.123)
            assert value(series, "cachewarm_last_run_timestamp_seconds") == 1_700_000_100.25
            assert value(series, "cachewarm_last_run_duration_seconds") == 1.25
            assert value(series, "cachewarm_last_run_hot_ids") == 1_234_567
            assert value(series, "cachewarm_last_run_listings_written", prefix="shop.v-2") == 7
            flags = [v for (n, _), v in series.items() if n == "cachewarm_last_run_status"]
            assert sorted(flags) == [0.0] * (len(metrics.STATUSES) - 1) + [
                1.0 if status in metrics.STATUSES else 0.0
            ]


def test_write_replaces_the_file_atomically(tmp_path: Path) -> None:
    path = tmp_path / "m.prom"
    path.write_text("old\n")
    inode = path.stat().st_ino
    record = RunRecord(run_id="r", command="run", status="ok", prefix="p", version=1)
    metrics.write(path, record)
    assert path.stat().st_ino != inode  # a new file renamed over, not rewritten in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.prom"]
    assert status_of(parse_prometheus(path.read_text())) == "ok"


def test_unwritable_metrics_file_warns_but_the_run_succeeds(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    (tmp_path / "afile").write_text("x")
    config = make_config(metrics_file=str(tmp_path / "afile" / "cachewarm.prom"))
    result = cachewarm("--config", str(config), "run")
    assert result.returncode == 0
    line = one_line(result.stderr)
    assert "metrics.unwritable" in line and "afile" in line

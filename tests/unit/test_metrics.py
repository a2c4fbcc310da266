"""The Prometheus textfile on its own: valid for every status, replaced atomically."""

from __future__ import annotations

from pathlib import Path

from cachewarm import metrics
from cachewarm.runlog import RunRecord
from tests.prometheus import parse_prometheus, status_of, value


def test_render_is_valid_for_every_status() -> None:
    for status in (*metrics.STATUSES, "dry-run"):
        record = RunRecord(run_id="r", command="run", status=status, prefix="shop.v-2", version=3)
        record.duration_s, record.hot, record.written = 1.25, 1_234_567, 7
        for last in (None, 1_700_000_000.123456):
            series = parse_prometheus(metrics.render(record, 1_700_000_100.25, last))
            assert value(series, metrics.LAST_SUCCESS) == (0 if last is None else 1700000000.123)
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

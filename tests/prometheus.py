"""A strict parser of the Prometheus text format, for the metrics tests."""

from __future__ import annotations

import math
import re
from pathlib import Path

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
    """The status label of the one cachewarm_last_run_status series that is 1."""
    on = [
        dict(pairs)["status"]
        for (name, pairs), v in series.items()
        if name == "cachewarm_last_run_status" and v == 1
    ]
    assert len(on) == 1, on
    return on[0]


def read(path: Path) -> Series:
    """The parsed file, asserting no temporary file was left beside it."""
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name], "temp file left over"
    return parse_prometheus(path.read_text(encoding="utf-8"))

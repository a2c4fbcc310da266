"""What a benchmark run found: results and checks per (catalog, size), the targets judged
from them, and the two files written: a Markdown table for people and JSON for tools."""

from __future__ import annotations

import datetime
import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from proc import Sample, human, log


@dataclass
class Result:
    key: str  # "hot", "c", "naive", "full:default", "steady:fast", "invalidate", ...
    variant: str
    items: int  # listings (or ids) handled per run, for the rate
    samples: list[Sample] = field(default_factory=list)
    note: str = ""
    skipped: str = ""  # reason, when the variant did not run at this size
    stages: dict[str, list[float]] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(s.wall_s for s in self.samples)

    @property
    def rss_mb(self) -> float:
        return max(s.maxrss_kb for s in self.samples) / 1024

    def stage(self, name: str, seconds: float) -> None:
        self.stages.setdefault(name, []).append(seconds)

    def stage_text(self) -> str:
        return ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in self.stages.items())


@dataclass(frozen=True)
class Check:
    name: str  # stable, for tools: "c-identical", "installs-identical", ...
    ok: bool
    text: str
    details: tuple[str, ...] = ()


@dataclass
class SizeReport:
    catalog: str
    n: int
    seed_s: float = 0.0
    hot: int = 0
    idle_cpu: list[float] = field(default_factory=list)  # cores busy while the bench idled
    results: list[Result] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.catalog} N={human(self.n)}"

    def get(self, key: str) -> Result | None:
        return next((r for r in self.results if r.key == key and r.samples), None)

    def check(self, name: str, ok: bool, text: str, details: Sequence[str] = ()) -> None:
        self.checks.append(Check(name, ok, text, tuple(details)))
        if not ok:
            log(f"CHECK FAILED at {self.label}: {text}")

    @property
    def failures(self) -> list[str]:
        return [f"{self.label}: {c.text}" for c in self.checks if not c.ok]

    def ratio(self, key: str) -> float | None:
        r, c = self.get(key), self.get("c")
        return r.median / c.median if r and c else None


def table(reports: Sequence[SizeReport]) -> str:
    rows = [
        "| catalog | variant | N | runs | median wall s | listings/s | peak RSS MB "
        "| ratio to C | notes |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for report in reports:
        for r in report.results:
            lead = f"| {report.catalog} | {r.variant} | {human(report.n)}"
            if r.skipped or not r.samples:
                rows.append(f"{lead} | 0 | - | - | - | - | {r.skipped} |")
                continue
            ratio = report.ratio(r.key)
            rows.append(
                f"{lead} | {len(r.samples)} | {r.median:.3f} | {r.items / r.median:,.0f} | "
                f"{r.rss_mb:.1f} | {'-' if ratio is None else f'{ratio:.2f}x'} | {r.note} |"
            )
    return "\n".join(rows) + "\n"


def ratio_table(reports: Sequence[SizeReport]) -> str:
    """The headline: each cachewarm install's full warm against the C pipeline."""
    installs = list(
        dict.fromkeys(
            r.key.split(":", 1)[1] for rep in reports for r in rep.results if r.key[:5] == "full:"
        )
    )
    rows = [
        "| catalog | N | C pipeline s | " + " | ".join(f"{i} install" for i in installs) + " |",
        "|---|---:|---:|" + "---:|" * len(installs),
    ]
    for rep in reports:
        c = rep.get("c")
        cells = [
            f"{x:.2f}x" if (x := rep.ratio(f"full:{i}")) is not None else "-" for i in installs
        ]
        c_s = f"{c.median:.3f}" if c else "-"
        rows.append(f"| {rep.catalog} | {human(rep.n)} | {c_s} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


@dataclass(frozen=True)
class Target:
    what: str
    goal: str
    measured: str
    met: bool | None  # None: not measured in this run


def _ratio_target(what: str, limit: float, x: float | None) -> Target:
    measured = "not run" if x is None else f"{x:.2f}x"
    return Target(what, f"<= {limit}x", measured, None if x is None else x <= limit)


def targets(reports: Sequence[SizeReport]) -> list[Target]:
    """The project's targets, judged from this run's numbers, per catalog."""
    out: list[Target] = []
    for catalog in dict.fromkeys(r.catalog for r in reports):
        by_n = {r.n: r for r in reports if r.catalog == catalog}

        def ratio(n: int, key: str, by_n: dict[int, SizeReport] = by_n) -> float | None:
            return by_n[n].ratio(key) if n in by_n else None

        ratios = [
            (f"full warm {human(n)}, {name} install", limit, ratio(n, f"full:{name}"))
            for n in (100_000, 1_000_000)
            for name, limit in (("default", 1.1), ("fast", 0.9))
        ] + [
            (
                f"steady state 1% changed, 100k, {name} install",
                0.5,
                ratio(100_000, f"steady:{name}"),
            )
            for name in ("default", "fast")
        ]
        out += [_ratio_target(f"{catalog}: {what}, vs C", limit, x) for what, limit, x in ratios]
        at_100k = by_n.get(100_000)
        naive = at_100k.get("naive") if at_100k else None
        full = at_100k.get("full:default") if at_100k else None
        speedup = naive.median / full.median if naive and full else None
        out.append(
            Target(
                f"{catalog}: naive / cachewarm, 100k, default install (wall time)",
                ">= 10",
                f"{speedup:.1f}" if speedup else "not run",
                speedup >= 10 if speedup else None,
            )
        )
        small, large = by_n.get(10_000), by_n.get(1_000_000)
        for name in ("default", "fast"):
            rs = small.get(f"full:{name}") if small else None
            rl = large.get(f"full:{name}") if large else None
            grow = rl.rss_mb - rs.rss_mb if rs and rl else None
            out.append(
                Target(
                    f"{catalog}: peak RSS of a full warm, 1M minus 10k, {name} install",
                    "<= 30 MB",
                    f"{grow:.1f} MB" if grow is not None else "needs 10k and 1M in one run",
                    None if grow is None else grow <= 30,
                )
            )
    for report in reports:
        inv = report.get("invalidate")
        if inv:
            out.append(
                Target(
                    f"{report.catalog}: invalidate {human(inv.items)} ids (whole process), "
                    f"at {human(report.n)}",
                    "< 1.5 s",
                    f"{inv.median:.2f} s",
                    inv.median < 1.5,
                )
            )
    return out


def targets_table(reports: Sequence[SizeReport]) -> str:
    rows = ["| target | goal | this run | met |", "|---|---|---|---|"]
    for t in targets(reports):
        if t.met is None:
            continue  # not measured: sizes or installs this run did not include
        rows.append(f"| {t.what} | {t.goal} | {t.measured} | {'met' if t.met else '**not met**'} |")
    return "\n".join(rows) + "\n"


def checks_text(reports: Sequence[SizeReport]) -> list[str]:
    lines: list[str] = []
    for rep in reports:
        lines.append(f"{rep.label} (seeded in {rep.seed_s:.1f}s, {rep.hot} hot ids):")
        for c in rep.checks:
            lines.append(f"- {'' if c.ok else '**FAILED**: '}{c.text}")
            lines += [f"  - {d}" for d in c.details]
        lines.append("")
    return lines


@dataclass(frozen=True)
class RunInfo:
    """Everything about the run that is not a measurement."""

    command: str
    machine: list[str]
    catalogs: dict[str, str]  # name -> shape
    repeat: str
    total_s: float
    load_before: str
    load_after: str


def write_results(reports: Sequence[SizeReport], info: RunInfo, out_dir: Path) -> Path:
    """<date>-<catalogs>-<sizes>.md and .json; returns the Markdown file's path."""
    today = datetime.date.today().isoformat()
    sizes = "_".join(dict.fromkeys(human(r.n) for r in reports))
    stem = f"{today}-{'_'.join(info.catalogs)}-{sizes}"
    out_dir.mkdir(parents=True, exist_ok=True)
    failures = [f for r in reports for f in r.failures]
    quiet = all(max(r.idle_cpu, default=0) <= 0.2 for r in reports)
    lines = [
        f"# cachewarm benchmark, {today}",
        "",
        f"Command: `{info.command}`",
        "",
        f"Total runtime: {info.total_s / 60:.1f} min (including installs, seeding and checks).",
        "",
        "## Machine",
        "",
        *info.machine,
        f"- Load average (1/5/15 min) before: {info.load_before}; after: {info.load_after}",
        "- Cores busy machine-wide while the benchmark idled (before and after each "
        "catalog and size): "
        + "; ".join(f"{r.label}: {', '.join(f'{x:.2f}' for x in r.idle_cpu)}" for r in reports)
        + (
            ". Quiet machine."
            if quiet
            else ". **Another workload shared the machine: timings are inflated and noisy.**"
        ),
        "",
        "## Catalogs",
        "",
        *(f"- `{name}`: {shape}" for name, shape in info.catalogs.items()),
        "",
        "## Full warm vs the C pipeline",
        "",
        ratio_table(reports),
        "## Results",
        "",
        f"Medians of {info.repeat} runs unless noted; full warms start from empty Redis; every "
        "product is hot (hot query LIMIT = N). Peak RSS is the client process's (servers "
        "excluded), the largest over the runs. Ratios are to the C pipeline at the same "
        "catalog and N, which writes byte-identical listings (see Checks).",
        "",
        table(reports),
        "## Targets",
        "",
        targets_table(reports),
        "## Checks",
        "",
        "All checks passed." if not failures else f"**{len(failures)} CHECK(S) FAILED.**",
        "",
        *checks_text(reports),
    ]
    path = out_dir / f"{stem}.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    data = {
        "info": asdict(info),
        "reports": [
            {
                "catalog": r.catalog,
                "n": r.n,
                "hot": r.hot,
                "seed_s": r.seed_s,
                "idle_cpu": r.idle_cpu,
                "results": [
                    {
                        "key": x.key,
                        "variant": x.variant,
                        "items": x.items,
                        "skipped": x.skipped,
                        "wall_s": [s.wall_s for s in x.samples],
                        "maxrss_kb": [s.maxrss_kb for s in x.samples],
                        "stages": x.stages,
                        "note": x.note,
                    }
                    for x in r.results
                ],
                "checks": [asdict(c) for c in r.checks],
            }
            for r in reports
        ],
    }
    path.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return path

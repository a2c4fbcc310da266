"""Benchmark cachewarm against the C tools' pipeline and a naive per-product script.

Builds (or reuses) throwaway installs of the working tree under bench/work/, starts
throwaway MariaDB and Redis servers, seeds each catalog at each size, times every
variant, checks that they all wrote the same listings, byte for byte, and writes a
Markdown table and its JSON to bench/results/:

    .venv/bin/python bench/run.py --catalog sample,wide --sizes 10k,100k --repeat 3

Exit status 1 when any check failed (the results are written anyway). See
bench/README.md for what each variant is and how to read the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "examples"), str(ROOT / "scripts")]

import servers  # noqa: E402  (scripts/servers.py)
from catalog import CATALOGS  # noqa: E402
from installs import SPECS, Install, ensure_install, snapshot_source, tree_hash  # noqa: E402
from proc import TIME, load_average, log  # noqa: E402
from report import RunInfo, SizeReport, ratio_table, table, targets_table, write_results  # noqa: E402
from variants import Lab, run_size  # noqa: E402


def parse_sizes(text: str) -> list[int]:
    """ "10k,100k,1M" -> [10000, 100000, 1000000]."""
    sizes = []
    for part in text.split(","):
        part = part.strip().lower().replace("_", "")
        scale = 1_000_000 if part.endswith("m") else 1000 if part.endswith("k") else 1
        sizes.append(int(float(part.rstrip("mk")) * scale))
    return sizes


def parse_names(text: str, known: dict[str, object], what: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(unknown) or '(none given)'}; choose from {', '.join(known)}"
        )
    return sorted(names, key=list(known).index)


def machine(versions: dict[str, str], installs: list[Install]) -> list[str]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    git = ["git", "-C", str(ROOT), "describe", "--always", "--dirty"]
    rev = subprocess.run(git, capture_output=True, text=True, check=False).stdout.strip()
    return [
        f"- CPU: {os.cpu_count()} cores, {cpu}; memory {mem_gb:.0f} GiB",
        f"- OS: {platform.platform()}",
        f"- MariaDB {versions['mariadb']} (throwaway, scripts/servers.py settings); "
        f"Redis {versions['redis']}",
        f"- Python {installs[0].info['python']} in every install",
        *(f"- {install.describe()}" for install in installs),
        f"- cachewarm under test: the working tree (git {rev or '?'}), built into every "
        f"install; sha256 of cachewarm/*.py {tree_hash(ROOT / 'cachewarm')[:16]}, "
        "checked in each",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--catalog",
        type=lambda t: parse_names(t, dict(CATALOGS), "catalog"),
        default=["sample"],
        help=f"comma-separated, of {', '.join(CATALOGS)} (default: sample)",
    )
    parser.add_argument("--sizes", type=parse_sizes, default=[10_000, 100_000],
                        help="products, all hot: e.g. 10k,100k,1M")  # fmt: skip
    parser.add_argument(
        "--installs",
        type=lambda t: parse_names(t, dict(SPECS), "install"),
        default=["default", "fast"],
        help=f"comma-separated, of {', '.join(SPECS)} (default: default,fast); "
        "the first is the reference for the byte comparisons",
    )
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per variant (median)")
    parser.add_argument(
        "--large-repeat", type=int, default=0, help="timed runs at N >= 1M (default: --repeat)"
    )
    parser.add_argument(
        "--naive-max", type=int, default=100_000, help="skip the naive script above this N"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument(
        "--rebuild", action="store_true", help="rebuild the installs under bench/work/"
    )
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.large_repeat < 0:
        parser.error("--repeat must be at least 1")
    for tool in ("mariadb", "redis-cli", "bash", TIME):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not installed")

    command = shlex.join(
        [
            os.path.relpath(sys.executable, ROOT),
            "bench/run.py",
            *(sys.argv[1:] if argv is None else argv),
        ]
    )
    load_before = load_average()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cwbench-src-") as tmp:
        src = snapshot_source(Path(tmp) / "cachewarm-src")
        installs = [ensure_install(name, src, rebuild=args.rebuild) for name in args.installs]
    for install in installs:
        log(install.describe())
    reports: list[SizeReport] = []
    with tempfile.TemporaryDirectory(prefix="cwbench-") as tmp:
        work = Path(tmp)
        db = servers.start_mariadb(work / "mariadb")
        try:
            rd = servers.start_redis(work / "redis")
            try:
                lab = Lab(work, db, rd, args.repeat, args.large_repeat, args.naive_max)
                versions = lab.versions()
                for name in args.catalog:
                    for n in args.sizes:
                        reports.append(run_size(lab, CATALOGS[name], n, installs))
            finally:
                rd.stop()
        finally:
            db.stop()
    runs = f"`--repeat {args.repeat}`"
    if args.large_repeat:
        runs += f" (`--large-repeat {args.large_repeat}` at N >= 1M)"
    info = RunInfo(
        command=command,
        machine=machine(versions, installs),
        catalogs={name: CATALOGS[name].shape for name in args.catalog},
        repeat=runs,
        total_s=time.perf_counter() - started,
        load_before=load_before,
        load_after=load_average(),
    )
    path = write_results(reports, info, args.out)
    print(ratio_table(reports))
    print(table(reports))
    print(targets_table(reports))
    failures = [f for r in reports for f in r.failures]
    print(f"total {info.total_s / 60:.1f} min; written to {path} and its .json")
    if failures:
        print(f"{len(failures)} CHECK(S) FAILED:", *failures, sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

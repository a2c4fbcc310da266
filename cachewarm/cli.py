"""The `cachewarm` command: parse, call the library, print, map errors to exit codes.

Each command imports what it runs when it runs: `--version`, `--help` and shell
completion load click and this module only, never redis-py, a MySQL driver or structlog
(tests/unit/test_startup.py holds it to that).

Exit codes: 0 ok, 1 the run failed, 2 usage or config error, 75 skipped (lock held;
silent off a terminal), 129 / 130 / 143 interrupted by SIGHUP / SIGINT / SIGTERM, 141 the
reader of the output went away (`status | head -1`).
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

import click

from . import __version__
from .errors import EX_FAILED
from .exits import Group, Options
from .keys import parse_id, parse_ids

if TYPE_CHECKING:
    from . import output


def _print_version(ctx: click.Context, _: click.Parameter, wanted: bool) -> None:
    if wanted and not ctx.resilient_parsing:
        from . import parts

        click.echo(f"cachewarm {__version__}\n{parts.describe()}")
        ctx.exit()


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    metavar="PATH",
    envvar="CACHEWARM_CONFIG",
    help="TOML config file. Env: CACHEWARM_CONFIG.",
)
@click.option("-v", "--verbose", is_flag=True, help="Stream every event; tracebacks on errors.")
@click.option("-q", "--quiet", is_flag=True, help="Print errors only, even on a terminal.")
@click.option(
    "--log-format",
    type=click.Choice(["auto", "console", "json"]),
    default="auto",
    show_default=True,
    help="Event format on stderr; auto is console on a terminal, one line per event "
    "(cachewarm: warning: ...) otherwise.",
)
@click.option(
    "--color",
    type=click.Choice(["auto", "always", "never"]),
    default="auto",
    show_default=True,
    help="Colors on a terminal; auto honours NO_COLOR and FORCE_COLOR.",
)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version and the active MySQL driver, JSON encoder and Redis parser.",
)
@click.pass_context
def cli(
    ctx: click.Context,
    config: str | None,
    verbose: bool,
    quiet: bool,
    log_format: output.Format,
    color: output.Color,
) -> None:
    """Keep the hot products' listings warm in Redis, from MySQL.

    Settings come from the TOML file, then CACHEWARM_<SECTION>_<KEY> environment
    variables (e.g. CACHEWARM_REDIS_URL, CACHEWARM_MYSQL_PASSWORD), then flags.

    Exit codes: 0 ok (also an empty hot set: status "empty"), 1 failed, 2 usage or
    config error, 75 skipped because another run holds the lock, 129/130/143
    interrupted by SIGHUP/SIGINT/SIGTERM, 141 the output's reader went away.
    """
    ctx.obj = Options(config, verbose, quiet, log_format, color)


@cli.command()
@click.option("--dry-run", is_flag=True, help="Read and compare only; write nothing to Redis.")
@click.option("--full", is_flag=True, help="Re-read every listing even if changed_query is set.")
@click.option("--limit", type=int, help="Warm at most this many hot products [warm.limit].")
@click.option(
    "--batch-size", type=int, help="Ids per listing query and Redis batch [warm.batch_size]."
)
@click.option("--ttl", type=int, help="Listing lifetime in seconds [warm.ttl].")
@click.option("--max-seconds", type=float, help="Stop the run after this long [run.max_seconds].")
@click.pass_obj
def run(
    opts: Options,
    dry_run: bool,
    full: bool,
    limit: int | None,
    batch_size: int | None,
    ttl: int | None,
    max_seconds: float | None,
) -> None:
    """Warm the hot products once (what cron runs).

    Holds the lock for the whole run; if another run holds it, exits 75 at once.
    Prints nothing on success unless on a terminal.
    """
    from . import orchestrate as api
    from . import render
    from .guard import run_guard

    settings = opts.settings(
        {
            ("warm", "limit"): limit,
            ("warm", "batch_size"): batch_size,
            ("warm", "ttl"): ttl,
            ("run", "max_seconds"): max_seconds,
        }
    )
    show_bar = not (opts.verbose or opts.quiet or opts.log_format == "json")
    with render.progress_bar(show_bar) as progress, run_guard(settings.run.max_seconds):
        if dry_run:
            render.dry_run(api.dry_run(settings, full=full, progress=progress))
        else:
            api.warm(settings, full=full, progress=progress)


@cli.command(name="invalidate", context_settings={"ignore_unknown_options": True})
@click.argument("ids", nargs=-1, required=True, metavar="ID... | -")
@click.option(
    "--rewarm", is_flag=True, help="Re-read the listings from MySQL and write them fresh."
)
@click.pass_obj
def invalidate_cmd(opts: Options, ids: Sequence[str], rewarm: bool) -> None:
    """Delete cached listings after an edit (ids as arguments, or '-' for stdin).

    A warm already in flight will not write back what it read before this call.
    All ids are checked before anything is touched.
    """
    from . import orchestrate as api

    texts = [t for arg in ids for t in (sys.stdin.read().split() if arg == "-" else [arg])]
    product_ids = parse_ids(texts)
    result = api.invalidate(opts.settings(), product_ids, rewarm=rewarm)
    if sys.stdout.isatty():
        line = f"invalidated {len(product_ids)} id(s): {result.deleted} cached listing(s) deleted"
        if rewarm:
            line += f", {result.rewarmed} rewarmed"
            if result.missing:
                line += f", no listing row for {', '.join(map(str, result.missing[:10]))}"
        click.echo(line)


@cli.command(name="show")
@click.argument("product_id", metavar="ID")
@click.pass_obj
def show_cmd(opts: Options, product_id: str) -> None:
    """Print one product's cached listing, the bytes readers GET, then a newline.

    Exit 1 if it is not cached.
    """
    from . import views

    pid = parse_id(product_id)
    value = views.show(opts.settings(), pid)
    if value is None:
        click.echo(f"cachewarm: product {pid} is not cached", err=True)
        sys.exit(EX_FAILED)
    click.echo(value)  # bytes: written as stored, not decoded and encoded again


@cli.command(name="status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("-n", "--runs", default=5, show_default=True, help="How many recent runs to show.")
@click.pass_obj
def status_cmd(opts: Options, as_json: bool, runs: int) -> None:
    """Recent runs, the lock holder, and the published hot list's age and size."""
    from . import render, views

    if runs < 1:
        raise click.BadParameter("must be at least 1", param_hint="--runs")
    report = views.status(opts.settings(), runs=runs)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        render.status(report)
    if report.redis_error:
        sys.exit(EX_FAILED)


@cli.command(name="follow")
@click.option("--from-now", is_flag=True, help="First start: follow from the binlog's end.")
@click.option("--resync", is_flag=True, help="Invalidate every cached listing, follow from now.")
@click.option("--rewarm/--no-rewarm", default=None, help="Refill listings [follow.rewarm].")
@click.pass_obj
def follow_cmd(opts: Options, from_now: bool, resync: bool, rewarm: bool | None) -> None:
    """Invalidate listings from the MySQL binlog as rows change, until SIGTERM.

    Resumes from its checkpoint; on SIGTERM or SIGINT it applies the current batch,
    saves the checkpoint and exits 0.
    """
    from .binlog import follow

    if from_now and resync:
        raise click.UsageError("--from-now and --resync exclude each other")
    stop = threading.Event()
    with follow.stop_on_signals(stop):
        follow.follow(opts.settings(), from_now=from_now, resync=resync, rewarm=rewarm, stop=stop)


@cli.command(name="audit")
@click.option(
    "--sample", type=int, metavar="N", help="Check N hot listings at random [audit.sample]."
)
@click.option(
    "--all", "every", is_flag=True, help="Check every cached listing (the hot list's, then SCAN)."
)
@click.option("--fix", is_flag=True, help="Rewarm the stale listings from MySQL, as --rewarm does.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def audit_cmd(opts: Options, sample: int | None, every: bool, fix: bool, as_json: bool) -> None:
    """Measure how stale the cache is: compare cached listings with what a warm writes.

    A listing that differs is compared again after [audit] recheck_after seconds and
    reported only if it still does. Exit 0 when nothing is stale, 1 when something is
    (also when --fix repaired it). Without --fix, writes nothing to Redis, MySQL or the
    run log; only [audit] textfile, when set.
    """
    from . import render
    from .guard import run_guard
    from .staleness import audit

    settings = opts.settings()
    with run_guard(settings.run.max_seconds):
        report = audit(settings, sample=sample, every=every, fix=fix)
    if as_json:
        click.echo(json.dumps(report.to_dict()))
    else:
        render.audit(report, fixing=fix)
    sys.exit(EX_FAILED if report.stale else 0)


@cli.command(name="check")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def check_cmd(opts: Options, as_json: bool) -> None:
    """Check the config before trusting cron: servers, grants, queries, memory, files.

    One line per finding (ok, WARN, FAIL); exit 0 when nothing failed, 1 otherwise.
    Reads only: never writes to MySQL, Redis or any file. Run it as the cron user.
    """
    from . import check, output, render

    output.configure(
        verbose=opts.verbose, quiet=opts.quiet, fmt=opts.log_format, color=opts.color, secrets=[]
    )
    report = check.check(opts.config)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        render.check(report)
    sys.exit(EX_FAILED if report.failed else 0)


def main() -> NoReturn:
    """Entry point: click's usage errors become one line too, like every other error."""
    try:
        code = cli.main(prog_name="cachewarm", standalone_mode=False)
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        click.echo(f"cachewarm: error: {exc.format_message()}{hint}", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"cachewarm: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("cachewarm: error: aborted", err=True)
        sys.exit(EX_FAILED)
    sys.exit(code if isinstance(code, int) else 0)

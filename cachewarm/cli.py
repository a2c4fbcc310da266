"""The `cachewarm` command: parse, call the library, print, map errors to exit codes.

Exit codes: 0 ok, 1 the run failed, 2 usage or config error, 75 skipped (lock held),
130 / 143 interrupted by SIGINT / SIGTERM.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, NoReturn

import click
import structlog

from . import __version__, api, follow, output, source
from .api import DryRunReport
from .config import Overrides, Settings, load_settings
from .errors import EX_FAILED, CachewarmError, DeadlineExceeded, Interrupted, LockHeld
from .keys import parse_id, parse_ids


@dataclass
class Options:
    config: str | None
    verbose: bool
    quiet: bool
    log_format: str
    secrets: list[str] = field(default_factory=list)

    def settings(self, overrides: Overrides | None = None) -> Settings:
        """Load settings once per command, then set up logging with their secrets."""
        settings = load_settings(self.config, overrides=overrides)
        self.secrets = settings.secrets()
        output.configure(
            verbose=self.verbose, quiet=self.quiet, fmt=self.log_format, secrets=self.secrets
        )
        for note in settings.notes:
            structlog.get_logger("cachewarm").warning("config.warning", message=note)
        return settings


class Group(click.Group):
    """Turns every CachewarmError into its one-line message and exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CachewarmError as exc:
            _fail(
                ctx,
                str(exc),
                exc.exit_code,
                prefix="skipped" if isinstance(exc, LockHeld) else "error",
            )
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except KeyboardInterrupt:
            _fail(ctx, "interrupted by SIGINT", 130)
        except Exception as exc:
            opts = ctx.find_object(Options)
            if opts and opts.verbose:
                traceback.print_exc()
            _fail(
                ctx,
                f"internal error: {type(exc).__name__}: {exc} (run with -v for details)",
                EX_FAILED,
            )


def _fail(ctx: click.Context, message: str, code: int, prefix: str = "error") -> NoReturn:
    opts = ctx.find_object(Options)
    line = output.redact(" ".join(message.split()), opts.secrets if opts else [])
    click.echo(f"cachewarm: {prefix}: {line}", err=True)
    ctx.exit(code)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config",
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
    help="Event format on stderr; auto is console on a terminal, JSON otherwise.",
)
@click.version_option(__version__, prog_name="cachewarm")
@click.pass_context
def cli(
    ctx: click.Context, config: str | None, verbose: bool, quiet: bool, log_format: str
) -> None:
    """Keep the hot products' listings warm in Redis, from MySQL.

    Settings come from the TOML file, then CACHEWARM_<SECTION>_<KEY> environment
    variables (e.g. CACHEWARM_REDIS_URL, CACHEWARM_MYSQL_PASSWORD), then flags.

    Exit codes: 0 ok, 1 failed, 2 usage or config error, 75 skipped because another
    run holds the lock, 130/143 interrupted.
    """
    ctx.obj = Options(config, verbose, quiet, log_format)


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
    settings = opts.settings(
        {
            ("warm", "limit"): limit,
            ("warm", "batch_size"): batch_size,
            ("warm", "ttl"): ttl,
            ("run", "max_seconds"): max_seconds,
        }
    )
    with _progress_bar(opts) as progress, _run_signals(settings.run.max_seconds):
        if dry_run:
            _print_dry_run(api.dry_run(settings, progress=progress))
        else:
            api.warm(settings, full=full, progress=progress)


def _print_dry_run(report: DryRunReport) -> None:
    r = report.record
    click.echo(f"dry run: nothing was written ({r.hot} hot ids, {r.read} listings read)")
    click.echo(
        f"  listings: {report.new} new, {report.changed} changed, {report.unchanged} unchanged, "
        f"{report.would_remove} to remove, {report.bytes} bytes"
    )
    click.echo(f"  hot list: {'would change' if report.hot_changed else 'unchanged'}")
    for state, key, size in report.samples:
        click.echo(f"  {state:<8} {key} ({size} bytes)")


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
    if from_now and resync:
        raise click.UsageError("--from-now and --resync exclude each other")
    stop = threading.Event()
    with follow.stop_on_signals(stop):
        follow.follow(opts.settings(), from_now=from_now, resync=resync, rewarm=rewarm, stop=stop)


@cli.command(name="show")
@click.argument("product_id", metavar="ID")
@click.pass_obj
def show_cmd(opts: Options, product_id: str) -> None:
    """Print one product's cached listing as readers GET it (exit 1 if not cached)."""
    pid = parse_id(product_id)
    settings = opts.settings()
    value = api.show(settings, pid)
    if value is None:
        click.echo(f"cachewarm: product {pid} is not cached", err=True)
        sys.exit(EX_FAILED)
    click.echo(value.decode("utf-8", "replace"))


@cli.command(name="status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("-n", "--runs", default=5, show_default=True, help="How many recent runs to show.")
@click.pass_obj
def status_cmd(opts: Options, as_json: bool, runs: int) -> None:
    """Recent runs, the lock holder, and the published hot list's age and size."""
    if runs < 1:
        raise click.BadParameter("must be at least 1", param_hint="--runs")
    settings = opts.settings()
    report = api.status(settings, runs=runs)
    report["follower"] = follow.follower_status(settings)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        _print_status(report)
    if report["redis_error"]:
        sys.exit(EX_FAILED)


def _print_status(report: dict[str, Any]) -> None:
    click.echo(f"cachewarm {report['prefix']}:v{report['version']}  (run log {report['runlog']})")
    lock = report["lock"]
    if lock is None:
        click.echo("lock: free")
    else:
        click.echo(
            f"lock: held by run {lock.get('run_id', '?')}, pid {lock.get('pid', '?')} on "
            f"{lock.get('host', '?')} since {lock.get('started_at', '?')}"
        )
    hot = report["hot"]
    if hot:
        click.echo(
            f"hot list: {hot['size']} ids, published {hot['published_at']} "
            f"({hot['age_s']:.0f} s ago) by run {hot['run_id']}, expires in {hot['expires_in_s']} s"
        )
    elif report["redis_error"]:
        click.echo(f"hot list: unknown ({report['redis_error']})")
    else:
        click.echo("hot list: not published")
    f = report["follower"]
    if f:
        running = f["running"]
        click.echo(
            f"follower: {'running, pid ' + str(running.get('pid')) if running else 'stopped'}, "
            f"at {f['position']['file']}:{f['position']['pos']}, "
            f"checkpoint {f['age_s']:.0f} s ago, lag {f['lag_s']:.1f} s, "
            f"last event {_utc(f['last_event_at'])}, last error: {f['last_error'] or 'none'}"
        )
    runs = report["runs"]
    click.echo("recent runs:" if runs else "recent runs: none recorded")
    for r in runs:
        detail = r.get("error") or (
            f"{r.get('hot', 0)} hot, {r.get('written', 0)} written, "
            f"{r.get('unchanged', 0)} unchanged"
        )
        click.echo(
            f"  {r.get('started_at', '?')}  {r.get('command', '?'):<10} {r.get('status', '?'):<11} "
            f"{r.get('duration_s', 0):>8.2f}s  {detail}"
        )


def _utc(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp)) if timestamp else "none"


@contextlib.contextmanager
def _progress_bar(opts: Options) -> Iterator[Any]:
    """A bar on an interactive stderr only; cron and -v/JSON streams get none.

    The bar starts with the first batch (when the total is known) and closes itself at
    100%, so the events logged after it start on a line of their own.
    """
    if not sys.stderr.isatty() or opts.verbose or opts.quiet or opts.log_format == "json":
        yield None
        return
    with contextlib.ExitStack() as stack:
        bars: list[Any] = []

        def advance(done: int, total: int) -> None:
            if not bars:
                bar = click.progressbar(length=total, label="warming", file=sys.stderr)
                bars.append(bar)
                stack.enter_context(bar)
            bars[0].update(done)
            if bars[0].pos >= total:
                stack.close()

        yield advance


@contextlib.contextmanager
def _run_signals(max_seconds: float) -> Iterator[None]:
    """SIGTERM/SIGINT stop the run cleanly; an alarm enforces the deadline in blocked calls.

    Handlers raise in the main thread, which must first get back to Python: a watchdog
    thread, woken by every signal through the wakeup fd, cuts the MySQL connections so
    a query blocked in a C driver returns at once.
    """

    def interrupted(signum: int, _: FrameType | None) -> None:
        name = signal.Signals(signum).name
        raise Interrupted(name, 128 + signum)

    def alarm(_: int, __: FrameType | None) -> None:
        raise DeadlineExceeded(f"run passed run.max_seconds ({max_seconds:g} s); stopped")

    def watch(fd: int) -> None:
        while (woken := os.read(fd, 64)) and 0 not in woken:  # 0: the stop sentinel
            source.interrupt_all()

    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM)}
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    watchdog = threading.Thread(
        target=watch, args=(read_fd,), name="cachewarm-watchdog", daemon=True
    )
    watchdog.start()
    previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, max_seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(previous_fd)
        os.write(write_fd, b"\0")
        watchdog.join(timeout=1)
        os.close(write_fd)
        os.close(read_fd)


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

"""The CLI's edge: every way a command can end becomes one line and an exit code.

Kept apart from cli.py so that the commands read as what they are (parse, call the
library, print) and this, the only place that turns exceptions into exit codes, is
in one piece: a CachewarmError is its own one line and code, a skip is silent off a
terminal, a closed output pipe exits quietly, anything else is an "internal error" line
(the traceback only with -v), and no line ever shows a configured secret.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

import click

from .errors import EX_FAILED, CachewarmError, LockHeld
from .urls import scrub

if TYPE_CHECKING:
    from . import output
    from .config import Overrides, Settings


@dataclass
class Options:
    config: str | None
    verbose: bool
    quiet: bool
    log_format: output.Format
    color: output.Color
    secrets: list[str] = field(default_factory=list)

    def settings(self, overrides: Overrides | None = None) -> Settings:
        """Load settings once per command, then set up logging with their secrets.

        Settings and logging are imported here, not with the module: `--version`,
        `--help` and shell completion never load them.
        """
        import structlog

        from . import output, parts
        from .config import load_settings

        settings = load_settings(self.config, overrides=overrides)
        self.secrets = settings.secrets()
        output.configure(
            verbose=self.verbose,
            quiet=self.quiet,
            fmt=self.log_format,
            color=self.color,
            secrets=self.secrets,
        )
        log = structlog.get_logger("cachewarm")
        log.debug("cachewarm.parts", parts=parts.describe(settings.mysql.driver))
        for note in settings.notes:
            log.warning("config.warning", message=note)
        return settings


class Group(click.Group):
    """Turns every CachewarmError into its one-line message and exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CachewarmError as exc:
            skipped = isinstance(exc, LockHeld)
            if skipped and not _loud_skip(ctx):
                ctx.exit(exc.exit_code)  # the run log has it; cron has nothing to mail
            _fail(ctx, str(exc), exc.exit_code, prefix="skipped" if skipped else "error")
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except KeyboardInterrupt:
            _fail(ctx, "interrupted by SIGINT", 130)
        except BrokenPipeError:
            _reader_gone()
        except Exception as exc:
            opts = ctx.find_object(Options)
            if opts and opts.verbose:
                traceback.print_exc()
            detail = f"internal error: {type(exc).__name__}: {exc} (run with -v for details)"
            _fail(ctx, detail, EX_FAILED)


def _loud_skip(ctx: click.Context) -> bool:
    """A skip is news to a person at a terminal (or asking with -v), not to cron.

    A holder stuck past its deadline is not a skip (lock.LockStuck): that always prints.
    """
    opts = ctx.find_object(Options)
    return sys.stderr.isatty() or bool(opts and opts.verbose)


def _reader_gone() -> NoReturn:
    """Stop quietly when the pipe we print into closed, as a tool SIGPIPE kills would.

    Python ignores SIGPIPE, so the write raised instead; exit 128 + SIGPIPE like the
    others, with stdout on /dev/null so the interpreter's last flush has nothing to say.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(128 + signal.SIGPIPE)


def _fail(ctx: click.Context, message: str, code: int, prefix: str = "error") -> NoReturn:
    opts = ctx.find_object(Options)
    line = scrub(" ".join(message.split()), opts.secrets if opts else [])
    click.echo(f"cachewarm: {prefix}: {line}", err=True)
    ctx.exit(code)

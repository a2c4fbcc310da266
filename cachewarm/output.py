"""Logging set-up, done once by the CLI: what goes to stderr, in which form, how loud.

Defaults suit both people and cron: on a terminal, readable lines for the main events;
off a terminal, only warnings, so a successful cron run prints nothing and cron mails
nothing. `-v` or `--log-format json` streams every event, JSON off a terminal. Every
value but the event's own name, level and time is scrubbed (urls.scrub) before it is
rendered.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog

from .urls import scrub

Secrets = Iterable[str]


# Set by cachewarm itself, never from outside text: scrubbing them could only withhold them.
_OWN_FIELDS = frozenset({"event", "level", "timestamp"})


def _redactor(secrets: list[str]) -> structlog.types.Processor:
    def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key, value in event.items():
            if isinstance(value, str) and key not in _OWN_FIELDS:
                event[key] = scrub(value, secrets)
        return event

    return redact


def configure(
    *, verbose: bool, quiet: bool, fmt: str, secrets: Secrets, stream: TextIO | None = None
) -> None:
    """fmt: 'auto' (console on a terminal, JSON otherwise), 'console' or 'json'."""
    stream = stream or sys.stderr
    tty = stream.isatty()
    if verbose or fmt == "json":  # a JSON stream is for machines: every event
        level = logging.DEBUG
    elif quiet:
        level = logging.ERROR
    else:
        level = logging.INFO if tty else logging.WARNING
    as_json = fmt == "json" or (fmt == "auto" and not tty)
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=tty, pad_event_to=0)
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redactor(list(secrets)),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )

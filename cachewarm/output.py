"""Logging set-up, done once by the CLI: what goes to stderr, in which form, how loud.

Defaults suit both people and cron: on a terminal, readable lines for the main events;
off a terminal, only warnings, so a successful cron run prints nothing and cron mails
nothing. A warning off a terminal is one sentence in the shape of an error line
(`cachewarm: warning: ...`), because cron mails it to a person; JSON only with
`--log-format json`, which also streams every event, for machines. `-v` streams every
event in the chosen form. Every value but the event's own name, level and time is
scrubbed (urls.scrub) before it is rendered.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, Literal, TextIO

import structlog

from .urls import scrub

Secrets = Iterable[str]
Color = Literal["auto", "always", "never"]
Format = Literal["auto", "console", "json"]

# Set by cachewarm itself, never from outside text: scrubbing them could only withhold them.
_OWN_FIELDS = frozenset({"event", "level", "timestamp"})

# What each warning says to a person: the sentence of its one line, filled from the
# event's fields. An event without one (the info and debug events of -v) is shown as
# its name and fields.
SENTENCES: Mapping[str, str] = {
    "config.warning": "{message}",
    "hot.empty": (
        "the hot query returned no ids: kept the previous hot list {kept}; "
        "the run counts as empty, not ok"
    ),
    "listings.rejected": (
        "{count} listing(s) rejected by the run's own checks were removed and left out "
        "of the hot list ({detail})"
    ),
    "listing.duplicate_rows": (
        "the listing query returned {rows} rows for product {product_id}; kept the {kept} "
        "(said once per run)"
    ),
    "replica.lagging": "replica {replica} is lagging: a batch was read from {read_from}",
    "runlog.unwritable": "cannot write the run log {path}: {error}",
    "metrics.unwritable": "cannot write the metrics file {path}: {error}",
    "follow.resync": "resynced: invalidated all {invalidated} cached listings",
    "follow.disconnected": "{error}; retrying in {retry_in_s} s",
    "follow.table_changed": "{change}: invalidating every cached listing",
    "misses.unreadable": "{key} is not a stream, so no reported miss was read: {error}",
    "misses.drain_failed": "filling reported misses failed: {error}; retrying in {retry_in_s} s",
}


def _redactor(secrets: list[str]) -> structlog.types.Processor:
    def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key, value in event.items():
            if isinstance(value, str) and key not in _OWN_FIELDS:
                event[key] = scrub(value, secrets)
        return event

    return redact


def line(_: Any, __: str, event: MutableMapping[str, Any]) -> str:
    """`cachewarm: <level>: <sentence>`, the shape of the CLI's error lines."""
    level, name = event.pop("level"), event.pop("event")
    event.pop("timestamp", None)
    sentence = SENTENCES.get(name)
    if sentence is not None:
        try:
            return f"cachewarm: {level}: {' '.join(sentence.format(**event).split())}"
        except (KeyError, IndexError):  # a field renamed at a call site: still say it all
            pass
    fields = " ".join(f"{key}={value}" for key, value in event.items())
    return f"cachewarm: {level}: {name} {fields}".rstrip()


def colors_wanted(color: Color, stream: TextIO, env: Mapping[str, str] = os.environ) -> bool:
    """--color, then FORCE_COLOR / NO_COLOR (set and not empty), then: a terminal?"""
    if color != "auto":
        return color == "always"
    if env.get("FORCE_COLOR"):
        return True
    if env.get("NO_COLOR"):
        return False
    return stream.isatty()


def configure(
    *,
    verbose: bool,
    quiet: bool,
    fmt: Format,
    secrets: Secrets,
    color: Color = "auto",
    stream: TextIO | None = None,
) -> None:
    """fmt: 'auto' (console on a terminal, one line per event otherwise), 'console'
    or 'json'."""
    stream = stream or sys.stderr
    tty = stream.isatty()
    if verbose or fmt == "json":  # a JSON stream is for machines: every event
        level = logging.DEBUG
    elif quiet:
        level = logging.ERROR
    else:
        level = logging.INFO if tty else logging.WARNING
    renderer: structlog.types.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    elif fmt == "console" or tty:
        renderer = structlog.dev.ConsoleRenderer(
            colors=colors_wanted(color, stream), pad_event_to=0
        )
    else:
        renderer = line
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

"""What cron mails and what a person sees: warnings as one line, colors by the rules."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from cachewarm import output


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    yield io.StringIO()
    structlog.reset_defaults()


def warn(event: str, **fields: object) -> None:
    structlog.get_logger("cachewarm").warning(event, **fields)


def test_a_warning_off_a_terminal_is_one_sentence_shaped_like_an_error(
    stream: io.StringIO,
) -> None:
    output.configure(verbose=False, quiet=False, fmt="auto", secrets=[], stream=stream)
    warn("hot.empty", run_id="abc", kept="cw:v1:hot")
    structlog.get_logger("cachewarm").info("run.started", run_id="abc")  # silent off a tty
    assert stream.getvalue() == (
        "cachewarm: warning: the hot query returned no ids: kept the previous hot list "
        "cw:v1:hot; the run counts as empty, not ok\n"
    )


def test_every_warning_cachewarm_logs_has_a_sentence() -> None:
    """Found in the source: a new warning without a sentence would mail its raw fields."""
    package = Path(output.__file__).parent
    logged = {
        name
        for module in package.rglob("*.py")
        for name in re.findall(r"\.warning\(\s*\"([a-z_.]+)\"", module.read_text())
    }
    assert len(logged) >= 9
    assert logged == set(output.SENTENCES)


def test_verbose_off_a_terminal_streams_every_event_as_lines_not_json(
    stream: io.StringIO,
) -> None:
    output.configure(verbose=True, quiet=False, fmt="auto", secrets=["s3cret"], stream=stream)
    structlog.get_logger("cachewarm").info("run.started", prefix="cw", where="s3cret")
    (line,) = stream.getvalue().splitlines()
    assert line.startswith("cachewarm: info: run.started prefix=cw where=")
    assert "s3cret" not in line


def test_json_only_when_asked(stream: io.StringIO) -> None:
    output.configure(verbose=False, quiet=False, fmt="json", secrets=[], stream=stream)
    warn("hot.empty", kept="k")
    event = json.loads(stream.getvalue())
    assert (event["event"], event["level"], event["kept"]) == ("hot.empty", "warning", "k")


@pytest.mark.parametrize(
    ("color", "env", "tty", "wanted"),
    [
        ("auto", {}, True, True),
        ("auto", {}, False, False),
        ("auto", {"NO_COLOR": "1"}, True, False),
        ("auto", {"NO_COLOR": ""}, True, True),  # set but empty: not set
        ("auto", {"FORCE_COLOR": "1"}, False, True),
        ("auto", {"FORCE_COLOR": "1", "NO_COLOR": "1"}, False, True),
        ("always", {"NO_COLOR": "1"}, False, True),
        ("never", {"FORCE_COLOR": "1"}, True, False),
    ],
)
def test_colors_follow_the_flag_then_force_color_and_no_color_then_the_terminal(
    color: output.Color, env: dict[str, str], tty: bool, wanted: bool
) -> None:
    assert output.colors_wanted(color, Terminal() if tty else io.StringIO(), env) is wanted


def test_no_color_keeps_escape_codes_off_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    terminal = Terminal()
    try:
        output.configure(verbose=False, quiet=False, fmt="auto", secrets=[], stream=terminal)
        warn("hot.empty", kept="k")
    finally:
        structlog.reset_defaults()
    assert "hot.empty" in terminal.getvalue() and "\x1b[" not in terminal.getvalue()

"""`--version`, `--help` and shell completion load neither a server client nor logging.

Each runs in a fresh interpreter (an import made by another test would hide one made
here), and the probe reports which of the heavy packages ended up in sys.modules. How
long start-up takes is measured in bench/startup.py, never here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import cachewarm

HEAVY = ("redis", "pymysql", "MySQLdb", "pymysqlreplication", "structlog", "orjson", "hiredis")

# Runs the console script's entry point with the given argv; prints the heavy top-level
# packages imported by the time it exited, as JSON on the last line of stdout.
PROBE = """
import json, sys
from cachewarm.cli import main
sys.argv = ["cachewarm", *json.loads(sys.argv[1])]
try:
    main()
except SystemExit:
    pass
print()
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & set(HEAVY))))
""".replace("HEAVY", repr(HEAVY))


def probe(argv: list[str], env: dict[str, str] | None = None) -> tuple[str, list[str]]:
    """(what the command printed, the heavy packages it imported)."""
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(argv)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={**os.environ, **(env or {})},
    )
    assert proc.returncode == 0, proc.stderr
    printed, _, last = proc.stdout.rstrip("\n").rpartition("\n")
    return printed, json.loads(last)


@pytest.mark.parametrize(
    "argv",
    [["--version"], ["--help"], ["run", "--help"], ["follow", "--help"], ["check", "--help"]],
)
def test_version_and_help_import_no_server_client_and_no_logging(argv: list[str]) -> None:
    printed, heavy = probe(argv)
    assert printed.strip()
    assert heavy == []


def test_shell_completion_imports_no_server_client_and_no_logging() -> None:
    completion = {"_CACHEWARM_COMPLETE": "bash_complete", "COMP_WORDS": "cachewarm ru"}
    printed, heavy = probe([], {**completion, "COMP_CWORD": "1"})
    assert "plain,run" in printed.split()  # bash_complete prints type,value per line
    assert heavy == []


def test_a_command_still_imports_what_it_runs(tmp_path: Path) -> None:
    """The probe sees imports: `status` against a closed port loads redis-py and logging."""
    config = tmp_path / "cachewarm.toml"
    config.write_text(
        '[redis]\nurl = "redis://127.0.0.1:1/0"\n'
        f'[run]\nlockfile = "{tmp_path}/lock"\nlog = "{tmp_path}/runs.jsonl"\n',
        encoding="utf-8",
    )
    _, heavy = probe(["--config", str(config), "status"])
    assert {"redis", "structlog"} <= set(heavy)


def test_the_package_api_resolves_on_first_use() -> None:
    for name in cachewarm.__all__:
        assert getattr(cachewarm, name) is not None, name

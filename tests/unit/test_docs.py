"""README, example config and --help stay in step with the code."""

from __future__ import annotations

import re
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest
from click.testing import CliRunner

import cachewarm
from cachewarm.cli import cli
from cachewarm.config import SECTIONS, load_settings
from tests.helpers import cachewarm as run_cachewarm

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
EXAMPLE = ROOT / "cachewarm.example.toml"


def test_example_config_loads_and_documents_every_key() -> None:
    settings = load_settings(EXAMPLE, env={})
    assert settings.warm.hot_query.strip().startswith("SELECT")
    text = EXAMPLE.read_text(encoding="utf-8")
    for section, cls in SECTIONS.items():
        assert f"[{section}]" in text
        for field in fields(cls):
            assert re.search(rf"^#? ?{field.name} = ", text, re.MULTILINE), (section, field.name)


@pytest.mark.parametrize("command", sorted(cli.commands))
def test_every_command_is_documented(command: str) -> None:
    assert f"`{command}" in README
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0
    for option in re.findall(r"(--[a-z][a-z-]+)", result.output):
        if option != "--help":
            assert option in README, f"{command} {option} missing from README"


def test_exit_codes_documented_in_readme_and_help() -> None:
    top = CliRunner().invoke(cli, ["--help"]).output
    for code in ("`0`", "`1`", "`2`", "`75`", "`130`", "`143`"):
        assert code in README
    assert "75 skipped" in " ".join(top.split())


def test_readme_has_exactly_the_two_setup_commands() -> None:
    block = README.split("## Try it", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["scripts/demo", "scripts/test"]
    assert "scripts/test" in (ROOT / ".ci" / "run").read_text()


def test_version_matches_pyproject() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert cachewarm.__version__ == pyproject["project"]["version"]


def test_help_names_every_command_and_no_secret() -> None:
    env = {"CACHEWARM_MYSQL_PASSWORD": "help-secret-pw"}
    top = run_cachewarm("--help", env=env)
    assert top.returncode == 0
    for command in ("run", "invalidate", "show", "status"):
        assert command in top.stdout
        sub = run_cachewarm(command, "--help", env=env)
        assert sub.returncode == 0 and "Usage: cachewarm " + command in sub.stdout
        assert "help-secret-pw" not in sub.stdout
    assert "75" in top.stdout
    assert run_cachewarm("--version").stdout.startswith("cachewarm, version ")

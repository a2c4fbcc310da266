"""README, docs/, example config and --help stay in step with the code and each other."""

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
DOCS = sorted((ROOT / "docs").glob("*.md"))
OPERATIONS = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
DEVELOPMENT = (ROOT / "docs" / "development.md").read_text(encoding="utf-8")
EXAMPLE = ROOT / "cachewarm.example.toml"
README_MAX_LINES = 250

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
LINK = re.compile(r"\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)\)")


def prose_lines(path: Path) -> list[str]:
    """The file's lines outside fenced code blocks (a `#` in a shell block is no heading)."""
    lines, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the file's headings: lower case, punctuation dropped,
    spaces to hyphens, repeats numbered."""
    seen: dict[str, int] = {}
    for line in prose_lines(path):
        match = HEADING.match(line)
        if not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(2).strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        if count:
            seen[f"{slug}-{count}"] = 1
    return set(seen)


def links(path: Path) -> list[tuple[str, str]]:
    """(text, target) of every Markdown link outside code blocks."""
    return [
        (m.group("text"), m.group("target"))
        for line in prose_lines(path)
        for m in LINK.finditer(line)
    ]


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
    """Each command and option is in the README's synopsis, and the command has a row
    in docs/operations.md."""
    assert f"`{command}" in README
    assert f"| `{command}" in OPERATIONS, f"{command} has no row in docs/operations.md"
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
    assert run_cachewarm("--version").stdout.startswith(f"cachewarm {cachewarm.__version__}\n")


def test_readme_is_a_front_door() -> None:
    lines = len(README.splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/"
    for doc in DOCS:
        assert f"](docs/{doc.name})" in README, f"README links nowhere to docs/{doc.name}"


@pytest.mark.parametrize("doc", [ROOT / "README.md", *DOCS], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(doc: Path) -> None:
    """Each relative link names a file or directory that exists, and each #anchor a
    heading of its Markdown file."""
    broken = []
    for text, target in links(doc):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        if not file.exists():
            broken.append(f"[{text}]({target}): no such file or directory")
        elif anchor and anchor not in anchors(file):
            broken.append(f"[{text}]({target}): no heading #{anchor} in {file.name}")
    assert not broken, f"{doc.name}: " + "; ".join(broken)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_named_test_exists(doc: Path) -> None:
    """A link whose text is a test function's name goes to the file that defines it."""
    for text, target in links(doc):
        name = text.strip("`")
        if not (re.fullmatch(r"test_\w+", name) and target.endswith(".py")):
            continue
        source = (doc.parent / target).read_text(encoding="utf-8")
        assert re.search(rf"^(async )?def {name}\(", source, re.MULTILINE), (
            f"{doc.name}: {name} is not defined in {target}"
        )


def test_every_guarantee_names_its_tests() -> None:
    text = (ROOT / "docs" / "guarantees.md").read_text(encoding="utf-8")
    sections = re.split(r"^## ", text, flags=re.MULTILINE)[1:]
    assert len(sections) >= 10
    for section in sections:
        title = section.splitlines()[0]
        assert re.search(r"\[`test_\w+`\]\(\.\./tests/", section), f"{title}: no test named"


def test_development_doc_covers_the_scripts() -> None:
    """Every option of scripts/test and scripts/bootstrap, and scripts/lock."""
    for script in ("test", "bootstrap"):
        source = (ROOT / "scripts" / script).read_text(encoding="utf-8")
        for option in set(re.findall(r"^\s+(--[a-z]+)[ |)]", source, re.MULTILINE)):
            assert f"scripts/{script} {option}" in DEVELOPMENT, f"scripts/{script} {option}"
    for needed in ("scripts/lock", "requirements/lock.txt", "CACHEWARM_LATEST", ".venv-latest"):
        assert needed in DEVELOPMENT, needed


def test_the_module_map_names_every_module_and_no_other() -> None:
    """docs/architecture.md's map is kept true: a module added, moved or removed shows."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    start, end = text.index("<!-- module-map: start"), text.index("<!-- module-map: end")
    listed = set(re.findall(r"^\s+([a-z_]+\.py)\b", text[start:end], re.MULTILINE))
    package = ROOT / "cachewarm"
    modules = {p.name for p in package.rglob("*.py")}
    assert listed == modules

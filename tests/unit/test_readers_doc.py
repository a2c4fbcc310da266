"""docs/readers.md shows the reader snippets exactly as the files the real-server tests run."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "readers.md"
# `<!-- path -->` on the line before a fenced block names the file the block shows.
INCLUDED = re.compile(r"^<!-- (\S+) -->\n```\w+\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def test_readers_doc_shows_every_snippet_verbatim() -> None:
    shown = dict(INCLUDED.findall(DOC.read_text(encoding="utf-8")))
    snippets = sorted(
        p.relative_to(ROOT).as_posix() for p in ROOT.glob("examples/readers/reader.*")
    )
    assert (
        sorted(shown)
        == snippets
        == [
            "examples/readers/reader.js",
            "examples/readers/reader.php",
            "examples/readers/reader.py",
        ]
    )
    for path, code in shown.items():
        assert code == (ROOT / path).read_text(encoding="utf-8"), (
            f"docs/readers.md differs from {path}"
        )

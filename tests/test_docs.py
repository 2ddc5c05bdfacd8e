"""The documentation: a short README with contents, docs/ complete, nothing pointing outside."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ("method.md", "outputs.md", "benchmarks.md", "analyses.md", "scaling.md",
        "architecture.md")


def test_readme_is_short_with_contents_and_the_quick_start():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) <= 15_000
    assert "**Contents:**" in readme[:2000]
    for command in ("python3.11 -m venv .venv && . .venv/bin/activate && pip install -e '.[dev]'",
                    "noisefind scan digits --noise symmetric:0.1", "python -m pytest -q"):
        assert command in readme


@pytest.mark.parametrize("name", DOCS)
def test_docs_exist(name):
    assert len((ROOT / "docs" / name).read_text()) > 1000


def test_nothing_points_outside_the_repository():
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
             *sorted((ROOT / "noisefind").glob("*.py"))]
    pattern = re.compile(r"METHOD\.md|INTERFACE\.md|ARCHITECTURE\.md|\.\./shared|METHOD's")
    found = [f"{f.name}: {m.group()}" for f in files for m in pattern.finditer(f.read_text())]
    assert not found


def test_relative_links_in_the_docs_resolve():
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for file in files:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", file.read_text()):
            if not (file.parent / target).exists():
                broken.append(f"{file.name} -> {target}")
    assert not broken

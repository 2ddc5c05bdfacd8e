"""The documentation: a short README with contents, docs/ complete, nothing pointing outside."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ("method.md", "outputs.md", "benchmarks.md", "analyses.md", "scaling.md",
        "architecture.md", "troubleshooting.md")


def test_readme_is_short_with_contents_and_the_quick_start():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) <= 15_000
    assert "**Contents:**" in readme[:2000]
    install = "pip install -c constraints.txt -e '.[dev]'"
    for command in (f"python3.11 -m venv .venv && . .venv/bin/activate && {install}",
                    "noisefind scan digits --noise symmetric:0.1", "python -m pytest -q"):
        assert command in readme
    ci = (ROOT / ".ci" / "run").read_text().replace("--quiet ", "")
    assert install in ci  # CI installs as the README says


def test_the_library_declares_ranges_and_ci_pins_exact_versions():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert not re.search(r'"(torch|torchvision)==', pyproject)
    pins = (ROOT / "constraints.txt").read_text()
    assert re.search(r"^torch==\S+$", pins, re.M) and re.search(r"^torchvision==\S+$", pins, re.M)


@pytest.mark.parametrize("name", DOCS)
def test_docs_exist(name):
    assert len((ROOT / "docs" / name).read_text()) > 1000


def test_nothing_points_outside_the_repository():
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
             *sorted((ROOT / "noisefind").rglob("*.py"))]
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

"""The README and the docs site without building it (`.ci/run` builds it with `mkdocs build
--strict`): the README stays short, its quick-start test line is the one CI runs, and every
relative link, image, README section and API module the pages name exists."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").rglob("*.md"))
README_MAX_LINES = 200  # issue 21: what it is, the quick start, one figure, where to go next

CODE = re.compile(r"^```.*?^```|`[^`\n]*`", re.M | re.S)  # fenced blocks, then inline code spans
LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")  # [text](target) and ![alt](target)
SNIPPET = re.compile(r'^--8<-- "([^":]+):([^"]+)"$', re.M)  # pymdownx.snippets: file + section
API = re.compile(r"^::: ([\w.]+)$", re.M)  # mkdocstrings: one module per line


def quick_start_lines() -> list[str]:
    text = README.read_text()
    block = re.search(r"^## Quick start\n.*?^```bash\n(.*?)^```", text, re.M | re.S)
    assert block, "README.md: no ```bash block under '## Quick start'"
    return block.group(1).splitlines()


def test_readme_is_short():
    n = len(README.read_text().splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines; move detail into docs/ (at most {README_MAX_LINES})"


def test_ci_runs_the_readme_test_line():
    lines = quick_start_lines()
    assert lines[0] == "pip install -e . && python scripts/score.py"
    test_line = next(line for line in lines if "pytest" in line)
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_line in ci, f".ci/run does not run the README's test line {test_line!r} as one line"
    assert any(re.search(r"mkdocs build --strict --site-dir ", line) for line in ci), ".ci/run: no strict docs build"


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_at_files(page):
    text = CODE.sub("", page.read_text())
    targets = [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:|#", t)]  # not a URL, not #anchor
    if page == README:  # the one figure, and the way into the docs
        assert {"docs/default_layer_curve.png", "docs/index.md"} <= set(targets), targets
    missing = [t for t in targets if not (page.parent / t.split("#", 1)[0]).exists()]
    assert not missing, f"{page.relative_to(ROOT)}: links to missing files {missing}"


def test_readme_has_every_section_the_docs_include():
    for page in PAGES:
        for name, section in SNIPPET.findall(page.read_text()):
            text = (ROOT / name).read_text()
            for edge in ("start", "end"):
                assert f"--8<-- [{edge}:{section}]" in text, f"{page.name} includes {name}:{section}: no {edge} marker"


def test_api_pages_name_modules_that_exist():
    named = [m for page in PAGES for m in API.findall(page.read_text())]
    assert "assocjax.ridge" in named
    for module in named:
        path = ROOT.joinpath(*module.split("."))
        assert path.with_suffix(".py").exists() or (path / "__init__.py").exists(), f"docs/api names {module}: no such module"

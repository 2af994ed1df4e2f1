"""The project's own docs hold what its code cites: a clone needs nothing outside the repository.

Every `docs/<page>.md` named in the source, the tests, the tools or the docs
exists; the sections the code cites in docs/runcomfy-api.md are there under
those names; and the page's links to its own sections lead somewhere.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CITED = re.compile(r"docs/([A-Za-z0-9_.-]+\.md)")
FOLDERS = ("bot", "cogs", "storage", "tests", "tools", "bench", "docs")


def texts() -> list[Path]:
    found = [ROOT / "README.md"]
    for folder in FOLDERS:
        found += [path for path in (ROOT / folder).rglob("*") if path.suffix in (".py", ".md", ".toml")]
    return found


def headings(page: str) -> list[str]:
    return [line.lstrip("#").strip() for line in page.splitlines() if line.startswith("#")]


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as dashes."""
    return re.sub(r"[^a-z0-9 _-]", "", heading.lower()).replace(" ", "-")


def test_every_docs_page_the_repository_cites_exists() -> None:
    missing = {
        f"docs/{name} (cited in {path.relative_to(ROOT)})"
        for path in texts()
        for name in CITED.findall(path.read_text(errors="replace"))
        if not (ROOT / "docs" / name).is_file()
    }
    assert not missing


def test_the_sections_the_code_cites_in_the_runcomfy_page_are_there() -> None:
    page = (ROOT / "docs" / "runcomfy-api.md").read_text()
    # bot/emulator_inputs.py cites "Errors"; bot/runcomfy.py and bot/runcomfy_models.py the open points;
    # bot/doctor_models.py the "client" evidence.
    assert {"Errors", "Open points", "How sure each fact is"} <= set(headings(page))
    for tag in ("**doc**", "**client**", "**open**"):
        assert f"- {tag}:" in page, tag
    anchors = {anchor(heading) for heading in headings(page)}
    assert set(re.findall(r"\]\(#([a-z0-9_-]+)\)", page)) <= anchors

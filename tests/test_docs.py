"""The project's own docs hold what its code cites: a clone needs nothing outside the repository.

Every `docs/<page>.md` named in the source, the tests, the tools or the docs
exists, and is named with its folder wherever it is not a link between pages;
the sections the code cites in docs/runcomfy-api.md and docs/discord-platform.md
are there under those names; and those pages' links to their own sections lead
somewhere.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.fakediscord.permissions import BOT_INVITE

ROOT = Path(__file__).resolve().parent.parent
CITED = re.compile(r"docs/([A-Za-z0-9_.-]+\.md)")
FOLDERS = ("bot", "cogs", "storage", "tests", "tools", "bench", "docs")
LINK = re.compile(r"\[[^\]]*\]\([^)]*\)")
# A citation of the Discord page: `docs/discord-platform.md, TAG` or `..., TAG, TAG`.
PLATFORM_CITATION = re.compile(r"docs/discord-platform\.md(?:, ([A-Z]{2,}(?:, [A-Z]{2,})*))?")
HEADING_TAGS = re.compile(r"\(([A-Z]{2,}(?:, [A-Z]{2,})*)\)$")


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
    page = (ROOT / "docs/runcomfy-api.md").read_text()
    # bot/emulator_inputs.py cites "Errors"; bot/runcomfy.py and bot/runcomfy_models.py the open points;
    # bot/doctor_models.py the "client" evidence.
    assert {"Errors", "Open points", "How sure each fact is"} <= set(headings(page))
    for tag in ("**doc**", "**client**", "**open**"):
        assert f"- {tag}:" in page, tag
    anchors = {anchor(heading) for heading in headings(page)}
    assert set(re.findall(r"\]\(#([a-z0-9_-]+)\)", page)) <= anchors


def test_every_docs_page_is_named_with_its_folder() -> None:
    """`docs/<page>.md` outside docs/, so the name leads somewhere from the repository's root (a bare
    page name in a comment once sent readers looking for a file the repository did not have);
    the pages in docs/ may name each other as siblings."""
    pages = [path.name for path in (ROOT / "docs").glob("*.md")]
    bare = re.compile(r"(?<![\w/.-])(" + "|".join(re.escape(page) for page in pages) + r")")
    found = {
        f"{name} in {path.relative_to(ROOT)}"
        for path in texts()
        if path.parent != ROOT / "docs"
        for name in bare.findall(path.read_text(errors="replace"))
    }
    assert not found


def test_the_links_between_docs_pages_lead_somewhere() -> None:
    broken = {
        f"{target} in {path.relative_to(ROOT)}"
        for path in (ROOT / "docs").glob("*.md")
        for link in LINK.findall(path.read_text())
        if (target := link.rsplit("](", 1)[1][:-1].split("#")[0]).endswith(".md")
        and "://" not in target
        and not (path.parent / target).is_file()
    }
    assert not broken


def test_the_sections_the_code_cites_in_the_discord_page_are_there() -> None:
    page = (ROOT / "docs/discord-platform.md").read_text()
    tags = {
        tag
        for heading in headings(page)
        if (match := HEADING_TAGS.search(heading))
        for tag in match.group(1).split(", ")
    }
    cited: dict[str, set[str]] = {}
    for path in texts():
        if path.parent == ROOT / "docs" or path == Path(__file__):
            continue  # the pages themselves, and this test naming the page it checks
        for match in PLATFORM_CITATION.finditer(path.read_text(errors="replace")):
            # A citation names its section by tag; "section 6" or nothing at all is not one.
            where = str(path.relative_to(ROOT))
            assert match.group(1), f"{where}: docs/discord-platform.md cited without a section tag"
            for tag in match.group(1).split(", "):
                cited.setdefault(tag, set()).add(where)
    assert {"INT", "MSG", "CMD", "RL", "GW", "PERM", "CODES", "COMP", "NONCE"} <= tags
    assert {"MSG", "RL", "PERM", "CODES", "COMP"} <= set(cited)
    assert {f"{tag} (cited in {sorted(where)})" for tag, where in cited.items() if tag not in tags} == set()
    anchors = {anchor(heading) for heading in headings(page)}
    assert set(re.findall(r"\]\(#([a-z0-9_-]+)\)", page)) <= anchors
    # The invite integer the page explains is the one the bot and the fake use.
    assert f"`permissions={BOT_INVITE}`" in page

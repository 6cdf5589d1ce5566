"""MkDocs hook: pages take sections of README.md instead of copying them, so the site and the README
tell the same tour.

A line `<!-- readme: Section title -->` in a page is replaced by that README section: its heading and
everything up to the next heading of the same or a higher level. `<!-- readme client/README.md: Title -->`
takes the section from another README of the repository. Links into docs/ are rewritten to
be relative to the page; a link to any other file of the repository fails the build, since the site
cannot show it."""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"^<!-- readme(?: ([\w./-]+))?: (.+?) -->$", re.M)
HEADING = re.compile(r"^(#{1,6}) (.+)$", re.M)
LINK = re.compile(r"\]\((?!https?://|#|mailto:)([^)\s]+)\)")


def readme_section(text: str, title: str) -> str:
    headings = list(HEADING.finditer(text))
    for i, heading in enumerate(headings):
        if heading.group(2).strip() != title:
            continue
        level = len(heading.group(1))
        end = next((h.start() for h in headings[i + 1 :] if len(h.group(1)) <= level), len(text))
        return text[heading.start() : end].rstrip() + "\n"
    raise ValueError(f"README.md has no section {title!r}")


def relink(section: str, page_path: str, readme: str = "README.md") -> str:
    """README links are relative to the README's folder; make them relative to the page in docs/."""
    page_dir = posixpath.dirname(page_path)

    def fix(match: re.Match[str]) -> str:
        target = posixpath.normpath(posixpath.join(posixpath.dirname(readme), match.group(1)))
        if not target.startswith("docs/"):
            raise ValueError(f"README section links to {target}, which is not part of the site")
        return f"]({posixpath.relpath(target.removeprefix('docs/'), page_dir or '.')})"

    return LINK.sub(fix, section)


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    if not MARKER.search(markdown):
        return markdown

    def section(match: re.Match[str]) -> str:
        readme = match.group(1) or "README.md"
        text = (ROOT / readme).read_text(encoding="utf-8")
        return relink(readme_section(text, match.group(2)), page.file.src_uri, readme)

    return MARKER.sub(section, markdown)

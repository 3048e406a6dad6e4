"""Every relative link in the Markdown pages resolves: to a file of the tree and, with an #anchor, to a heading of
that file, as GitHub names its anchors. No engine, no network: links to other sites are not followed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.common import ROOT

PAGES = sorted([ROOT / "README.md", ROOT / "BENCHMARKS.md", ROOT / "SECURITY.md", *(ROOT / "docs").glob("*.md")])
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")


def prose(text: str) -> list[str]:
    """The page's lines outside fenced and indented code blocks (where Markdown makes no links or headings)."""
    lines, fenced, previous_blank = [], False, True
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if fenced or (line.startswith("    ") and previous_blank and not line.lstrip().startswith(("-", "|"))):
            lines.append("")
            continue
        previous_blank = not line.strip() or (previous_blank and line.startswith("    "))
        lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text lowercased, punctuation dropped (but - and _), spaces as -."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading anchors by its text
    text = text.strip().lower()
    text = "".join(ch for ch in text if ch.isalnum() or ch in " -_")
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every anchor a page's headings give (a repeated heading's anchor gets -1, -2, ... as GitHub numbers it)."""
    seen: dict[str, int] = {}
    out = set()
    for line in prose(page.read_text()):
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(page: Path) -> list[str]:
    return [m.group(1) for m in LINK.finditer("\n".join(prose(page.read_text())))]  # link text may wrap


def broken(page: Path) -> list[str]:
    """The page's relative links that lead nowhere, each with why."""
    out = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:: not followed
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        shown = file.relative_to(ROOT) if file.is_relative_to(ROOT) else file
        if not file.exists():
            out.append(f"{target}: no file {shown}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            out.append(f"{target}: no heading with anchor #{anchor} in {shown}")
    return out


def test_the_anchor_of_a_heading_is_github_s():
    assert slug("Options (`-o` on the CLI, `driver_opts` in compose)") == "options--o-on-the-cli-driver_opts-in-compose"
    assert slug("User namespaces (`dockerd --userns-remap`)") == "user-namespaces-dockerd---userns-remap"
    assert slug("Round three (issue 15's burst lines)") == "round-three-issue-15s-burst-lines"


def test_a_broken_link_is_found(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n    # not a heading: code\n")
    page = tmp_path / "page.md"
    page.write_text("# Page\n\n[ok](other.md#other-page) [gone](missing.md) [bad](other.md#not-a-heading-code)\n"
                    "[self](#page) [web](https://example.org/x#y)\n\n    [in code](nowhere.md)\n")
    assert [b.split(":")[0] for b in broken(page)] == ["missing.md", "other.md#not-a-heading-code"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    assert links(page) or page.name == "SECURITY.md"
    assert broken(page) == []

"""The README and docs/ hold together: every relative link reaches its page, its
section (a GitHub heading anchor) or its file; long pages open with a table of
contents; the README and the two training scripts stay short; the README names
nothing outside the repository."""
import glob
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md"] + sorted(os.path.relpath(p, ROOT)
                               for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
SCRIPTS = ["kws_train.py", "forecast_train.py"]

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
# a pointer into docs/ written in a script's comment: docs/page.md#anchor
POINTER = re.compile(r"(docs/[\w.-]+\.md)(#[\w-]+)?")


def prose_lines(text):
    """The page's lines outside fenced code blocks and indented code (with their
    numbers): links and headings in code are not links and headings."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced and not line.startswith("    "):
            yield number, line


def slug(heading):
    """GitHub's anchor for a heading: its text without markup, lower case, every
    character but letters, digits, '_', '-' and spaces dropped, spaces made '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path):
    """Every heading anchor of a Markdown file, duplicates numbered as GitHub does."""
    seen, found = {}, set()
    with open(path, encoding="utf-8") as f:
        for _, line in prose_lines(f.read()):
            match = HEADING.match(line)
            if not match:
                continue
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def dead(page, target):
    """Why the relative link ``target`` on ``page`` is dead, or None."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
        return None
    path, _, anchor = target.partition("#")
    where = os.path.normpath(os.path.join(os.path.dirname(os.path.join(ROOT, page)),
                                          path)) if path else os.path.join(ROOT, page)
    if not where.startswith(ROOT + os.sep):
        return f"{target}: outside the repository"
    if not os.path.exists(where):
        return f"{target}: no such file"
    if anchor and where.endswith(".md") and anchor not in anchors(where):
        return f"{target}: no heading with the anchor #{anchor}"
    return None


def read(name):
    with open(os.path.join(ROOT, name), encoding="utf-8") as f:
        return f.read()


@pytest.mark.parametrize("page", PAGES)
def test_relative_links_reach_their_page_section_or_file(page):
    problems = [f"{page}:{number}: {why}"
                for number, line in prose_lines(read(page))
                for target in LINK.findall(line)
                for why in [dead(page, target)] if why]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_pointers_into_docs_are_alive(script):
    problems = [f"{script}: {path}{anchor}: {why}"
                for path, anchor in POINTER.findall(read(script))
                for why in [dead("README.md", path + anchor)] if why]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", [p for p in PAGES if p != "README.md"])
def test_a_long_page_opens_with_its_table_of_contents(page):
    text = read(page)
    lines = text.splitlines()
    if len(lines) <= 150:
        return
    sections = [slug(m.group(2)) for _, line in prose_lines(text)
                for m in [HEADING.match(line)] if m and len(m.group(1)) == 2]
    top = "\n".join(lines[:40])
    missing = [s for s in sections if f"(#{s})" not in top]
    assert not missing, f"{page} ({len(lines)} lines): its first 40 lines link no {missing}"


def test_readme_is_short_and_names_nothing_outside_the_repository():
    text = read("README.md")
    assert len(text.splitlines()) <= 250
    assert "../shared" not in text


@pytest.mark.parametrize("script", SCRIPTS)
def test_training_scripts_stay_thin(script):
    assert len(read(script).splitlines()) <= 120


def test_slug_is_githubs():
    assert slug("How it gets to 1.1-1.4 kB") == "how-it-gets-to-11-14-kb"
    assert slug("c: its input") == "c-its-input"
    assert slug("Listening on a stream: version e and `kws_detect.py`") == \
        "listening-on-a-stream-version-e-and-kws_detectpy"
    assert slug("**Masking**, distillation and copies") == "masking-distillation-and-copies"

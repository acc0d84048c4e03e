"""The documentation: README.md stays a short front door, and every link and command in it and in docs/ works."""

from __future__ import annotations

import contextlib
import io
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from worker.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
README_LIMIT = 12_000

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([\w+-]*)")
HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
INLINE_CODE = re.compile(r"(`+).*?\1")
LINK = re.compile(r"\[[^\]]*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
LINK_TEXT = re.compile(r"\[([^\]]*)\]\([^)]*\)")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:|^//")
HELP_COMMAND = re.compile(r"^ {4}([a-z][\w-]*)(?: {2,}|$)", re.MULTILINE)
MAKE_TARGET = re.compile(r"^([A-Za-z][\w-]*):", re.MULTILINE)


@dataclass(frozen=True)
class Line:
    page: Path
    number: int
    text: str
    fence: str | None  # the info string of the fenced block holding the line ("sh", "yaml", ""), None outside

    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.number}"


def lines(page: Path) -> list[Line]:
    """The page's lines, each with the fenced code block it is in, if any."""
    result: list[Line] = []
    opened: str | None = None
    info: str | None = None
    for number, text in enumerate(page.read_text().splitlines(), start=1):
        fence = FENCE.match(text)
        if opened is None and fence:
            opened, info = fence.group(1), fence.group(2)
            continue
        if opened is not None and fence and fence.group(1).startswith(opened) and not fence.group(2):
            opened = info = None
            continue
        result.append(Line(page, number, text, info if opened is not None else None))
    return result


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: link text kept, lower-case, punctuation but ``-`` removed, spaces to ``-``."""
    text = LINK_TEXT.sub(r"\1", heading)
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of the page's headings (outside code blocks); a repeated one gets ``-1``, ``-2``... as on GitHub."""
    seen: dict[str, int] = {}
    result: set[str] = set()
    for line in lines(page):
        heading = HEADING.match(line.text) if line.fence is None else None
        if heading is None:
            continue
        slug = anchor(heading.group(1))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return result


@dataclass(frozen=True)
class Link:
    line: Line
    target: str

    def resolved(self) -> tuple[Path, str]:
        """The file the link points to and its anchor ("" for none)."""
        path, _, fragment = self.target.partition("#")
        return ((self.line.page.parent / path).resolve() if path else self.line.page), fragment


def relative_links(page: Path) -> list[Link]:
    """Links of the page's prose (not in code) that point into the repository."""
    found: list[Link] = []
    for line in lines(page):
        if line.fence is not None:
            continue
        prose = INLINE_CODE.sub("", line.text)
        found.extend(Link(line, target) for target in LINK.findall(prose) if not SCHEME.match(target))
    return found


def shell_lines(prefix: str) -> list[Line]:
    """Lines of ``sh`` blocks, in every page, that start with ``prefix``."""
    return [line for page in PAGES for line in lines(page) if line.fence == "sh" and line.text.startswith(prefix)]


LINKS = [
    pytest.param(link, id=f"{link.line.where()} -> {link.target}") for page in PAGES for link in relative_links(page)
]
WORKER_COMMANDS = [pytest.param(line, id=line.where()) for line in shell_lines("python -m worker ")]
MAKE_COMMANDS = [pytest.param(line, id=line.where()) for line in shell_lines("make ")]


@pytest.fixture(scope="module")
def subcommands() -> set[str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0, f"python -m worker --help failed:\n{out.getvalue()}"
    found = set(HELP_COMMAND.findall(out.getvalue()))
    assert found, f"no subcommand found in the output of python -m worker --help:\n{out.getvalue()}"
    return found


ANCHOR_CASES = [
    ("Delivery: retries, timeouts, circuits, dead letters", "delivery-retries-timeouts-circuits-dead-letters"),
    ("Local hub (development and test tool)", "local-hub-development-and-test-tool"),
    ("`azureml_pipeline`", "azureml_pipeline"),
    ("Guard — topics", "guard--topics"),
    ("See [Replay](replay.md) first", "see-replay-first"),
]


@pytest.mark.parametrize(("heading", "expected"), ANCHOR_CASES)
def test_anchor_is_githubs(heading: str, expected: str) -> None:
    assert anchor(heading) == expected


def test_headings_in_code_blocks_have_no_anchor(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n```sh\n# a shell comment\n```\n\n## Title\n")
    assert anchors(page) == {"title", "title-1"}


def test_readme_is_a_short_front_door() -> None:
    size = len(README.read_bytes())
    assert size <= README_LIMIT, f"README.md is {size} bytes, more than {README_LIMIT}: move reference text to docs/"


@pytest.mark.parametrize("page", sorted(DOCS.glob("*.md")), ids=lambda page: page.name)
def test_readme_links_every_docs_page(page: Path) -> None:
    linked = {link.resolved()[0] for link in relative_links(README)}
    assert page.resolve() in linked, f"README.md does not link docs/{page.name}"


@pytest.mark.parametrize("link", LINKS)
def test_relative_link_resolves(link: Link) -> None:
    path, fragment = link.resolved()
    assert path.exists(), f"{link.line.where()}: link {link.target!r} points to a missing file"
    if fragment:
        assert path.suffix == ".md", f"{link.line.where()}: link {link.target!r} has an anchor into a non-Markdown file"
        assert fragment in anchors(path), (
            f"{link.line.where()}: link {link.target!r}: no heading of {path.relative_to(ROOT)} has the anchor "
            f"#{fragment}"
        )


@pytest.mark.parametrize("line", WORKER_COMMANDS)
def test_documented_worker_command_exists(line: Line, subcommands: set[str]) -> None:
    named = line.text.removeprefix("python -m worker ").split()[0]
    assert named in subcommands, (
        f"{line.where()}: 'python -m worker {named}' is not a subcommand (python -m worker --help lists "
        f"{', '.join(sorted(subcommands))})"
    )


@pytest.mark.parametrize("line", MAKE_COMMANDS)
def test_documented_make_target_exists(line: Line) -> None:
    targets = set(MAKE_TARGET.findall((ROOT / "Makefile").read_text()))
    named = line.text.removeprefix("make ").split()[0]
    assert named in targets, f"{line.where()}: 'make {named}' is not a target of the Makefile"

"""Teams cards through Microsoft's own Adaptive Cards renderer, and the pictures of the defaults in the docs.

``render_card`` opens ``scripts/card-renderer/render.html`` in headless Chromium (Debian's
``chromium``) with the card in its address: the ``adaptivecards`` npm package (``make setup``
installs it) parses, validates and renders it with a Teams host config, and the page reports the
parse and validation events (each a problem Teams would have with the card), the card's visible text,
and optionally a screenshot. The tests hold every default card to it; this command draws the
pictures of ``docs/images/`` from the same renderer, so they cannot drift from the code:

    python -m scripts.card_pictures [--out docs/images]
"""

from __future__ import annotations

import argparse
import base64
import html
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from scripts.chat_examples import EXAMPLES, STUDIO, card_of, examples
from worker.actions.chat.html import STYLE, slack_html

ROOT: Final = Path(__file__).resolve().parents[1]
PAGE: Final = ROOT / "scripts" / "card-renderer" / "render.html"
RENDERER: Final = ROOT / "node_modules" / "adaptivecards" / "dist" / "adaptivecards.min.js"
_RESULT: Final = re.compile(r'<script type="application/json" id="result">(.*?)</script>', re.DOTALL)
#: The Slack messages drawn for the docs.
SLACK_PICTURES: Final = ("run-failed", "digest")
#: The width of a Teams message column the pictures are drawn at (the card's 450 and the margins).
WIDTH: Final = 466


class RendererMissing(RuntimeError):
    """Chromium, or the adaptivecards package, is not on this machine."""


@dataclass(frozen=True)
class Rendered:
    #: Each problem the renderer found: ``{"phase", "event", "message"}``.
    events: list[dict[str, Any]]
    #: The card's visible text, whitespace collapsed.
    text: str
    #: Where the card ends on the page (pixels from the top).
    bottom: int


def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        raise RendererMissing("no chromium on this machine (Debian's package: chromium)")
    if not RENDERER.exists():
        raise RendererMissing(f"{RENDERER.relative_to(ROOT)} is missing: make setup installs it (npm ci)")
    return found


def render_card(card: Mapping[str, object], *, picture: Path | None = None) -> Rendered:
    """Render ``card`` (the Adaptive Card itself, not its envelope) as Teams would; with ``picture``,
    write a PNG of it there."""
    browser = chromium()
    encoded = base64.urlsafe_b64encode(orjson.dumps(card)).decode("ascii").rstrip("=")
    url = f"{PAGE.as_uri()}#{encoded}"
    with tempfile.TemporaryDirectory(prefix="card-renderer-") as profile:
        dom = _run(browser, profile, "--dump-dom", url).stdout
        found = _RESULT.search(dom)
        if found is None:
            raise RuntimeError(f"the card renderer reported nothing: {dom[-500:]}")
        result = orjson.loads(html.unescape(found.group(1)))
        if result["error"]:
            raise RuntimeError(f"the card renderer failed: {result['error']}")
        bottom = int(result["box"]["top"] + result["box"]["height"]) + 8
        if picture is not None:
            picture.parent.mkdir(parents=True, exist_ok=True)
            _run(browser, profile, f"--screenshot={picture}", f"--window-size={WIDTH},{bottom}", url)
            if not picture.exists():
                raise RuntimeError(f"chromium wrote no screenshot to {picture}")
    return Rendered(result["events"], " ".join(str(result["text"]).split()), bottom)


def _run(browser: str, profile: str, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        "--disable-extensions",
        "--allow-file-access-from-files",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)  # noqa: S603


def slack_picture(message: Mapping[str, object], picture: Path) -> None:
    """Draw a Slack message as the previews draw it (:mod:`worker.actions.chat.html`): there is no
    renderer of Slack's own to run offline."""
    browser = chromium()
    with tempfile.TemporaryDirectory(prefix="slack-picture-") as scratch:
        page = Path(scratch) / "message.html"
        page.write_text(
            f"<!DOCTYPE html><html><head><meta charset='utf-8'><style>{STYLE}"
            " body { margin: 8px; background: #f8f8f8; }"
            f"</style></head><body>{slack_html(message)}<script>document.title = "
            "String(document.body.scrollHeight)</script></body></html>"
        )
        profile = str(Path(scratch) / "profile")
        dom = _run(browser, profile, "--dump-dom", page.as_uri()).stdout
        height = re.search(r"<title>(\d+)</title>", dom)
        size = f"--window-size={WIDTH + 100},{int(height[1]) + 16 if height else 400}"
        picture.parent.mkdir(parents=True, exist_ok=True)
        _run(browser, profile, f"--screenshot={picture}", size, page.as_uri())
        if not picture.exists():
            raise RuntimeError(f"chromium wrote no screenshot to {picture}")


def pictures(out: Path) -> list[Path]:
    """The default message of each example notification, drawn into ``out``: what docs/rules.md shows
    (Teams cards by Microsoft's renderer, and a few Slack messages)."""
    written = []
    for name, planned in EXAMPLES.items():
        rendered = render_card(card_of(planned), picture=out / f"teams-{name}.png")
        if rendered.events:
            raise RuntimeError(f"the {name} card has problems: {rendered.events}")
        written.append(out / f"teams-{name}.png")
    slack = examples("slack")
    for name in SLACK_PICTURES:
        message = slack[name].spec.params.payload(slack[name], STUDIO)  # type: ignore[attr-defined]
        slack_picture(message, out / f"slack-{name}.png")
        written.append(out / f"slack-{name}.png")
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images", help="where the pictures go")
    for path in pictures(parser.parse_args().out):
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


if __name__ == "__main__":
    main()

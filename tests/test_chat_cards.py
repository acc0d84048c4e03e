"""Every default Teams card, parsed, validated and rendered by Microsoft's own Adaptive Cards renderer
(the ``adaptivecards`` npm package) in headless Chromium, as a Teams channel renders them."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.card_pictures import pictures, render_card
from scripts.chat_examples import EXAMPLES, card_of
from tests.pages import CHROMIUM, pixels

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (Debian's package: chromium)"),
]


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_every_default_card_renders_in_teams_renderer_without_a_problem(name: str) -> None:
    card = card_of(EXAMPLES[name])
    rendered = render_card(card)
    assert rendered.events == []  # no parse error, no warning: nothing Teams would drop or refuse
    title = card["body"][0]["items"][0]["text"]
    assert title in rendered.text
    for fact in next(block for block in card["body"] if block["type"] == "FactSet")["facts"]:
        assert f"{fact['title']} {fact['value']}" in rendered.text
    if "actions" in card:
        assert card["actions"][0]["title"] in rendered.text


def test_the_renderer_reports_what_teams_would_refuse() -> None:
    """The check above can fail: a card newer than Teams renders, and an element it does not know."""
    card = card_of(EXAMPLES["run-failed"])
    newer = render_card({**card, "version": "1.6"})
    assert [event["event"] for event in newer.events] == ["UnsupportedCardVersion"]
    unknown = render_card({**card, "body": [*card["body"], {"type": "FancyBlock"}]})
    assert [event["event"] for event in unknown.events] == ["UnknownElementType"]


def test_the_docs_pictures_are_drawn_from_the_renderer(tmp_path: Path) -> None:
    written = pictures(tmp_path)
    assert {path.name for path in written} >= {f"teams-{name}.png" for name in EXAMPLES}
    assert {path.name for path in written} > {f"teams-{name}.png" for name in EXAMPLES}  # and Slack's
    for path in written:
        assert len(set(pixels(path.read_bytes()))) > 10, path  # a message drawn, not a blank page
    shipped = Path(__file__).resolve().parents[1] / "docs" / "images"
    chat = [path.name for path in shipped.glob("*.png") if path.name.startswith(("teams-", "slack-"))]
    assert sorted(chat) == sorted(path.name for path in written)

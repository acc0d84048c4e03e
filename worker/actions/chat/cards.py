"""A notice as a Microsoft Teams message, within its limits. Pure.

An Adaptive Card, in the envelope a Workflows webhook takes.

A Teams channel takes messages through a Power Automate Workflows webhook, which accepts Adaptive
Cards only (an envelope of type ``message`` with one attachment of content type
``application/vnd.microsoft.card.adaptive``), renders card versions up to 1.5, and answers 202
before it posts anything: a card it cannot post fails silently, so the limits are checked here. A
message over 28 KB is shortened (long fact values cut with an ellipsis, a digest's last items
folded into its "and N more") or, when that is not enough, refused with the limit named
(:class:`~worker.errors.OverLimit`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Final

from worker.actions.chat.notice import Fact, Item, Notice, Tone
from worker.errors import OverLimit
from worker.jsontext import dumps

CONTENT_TYPE: Final = "application/vnd.microsoft.card.adaptive"
SCHEMA: Final = "http://adaptivecards.io/schemas/adaptive-card.json"
#: The newest card version Teams renders.
MAX_VERSION: Final = (1, 5)
VERSION: Final = "1.5"
#: The largest message a Workflows webhook posts, envelope included.
MAX_BYTES: Final = 28 * 1024
#: A fact's value longer than this is cut first, when a message is over the limit.
LONG_FACT: Final = 500
ELLIPSIS: Final = "…"

_STYLE: Final = {Tone.ATTENTION: "attention", Tone.WARNING: "warning", Tone.GOOD: "good", Tone.ACCENT: "accent"}


def card(notice: Notice) -> dict[str, object]:
    """The default card: the title on the tone's colour, the text, the facts with the workspace and
    the time, a digest's items, and a button to Azure ML studio."""
    body: list[object] = [
        {
            "type": "Container",
            "style": _STYLE[notice.tone],
            "bleed": True,
            "items": [{"type": "TextBlock", "text": notice.title, "weight": "Bolder", "size": "Medium", "wrap": True}],
        }
    ]
    if notice.text:
        body.append({"type": "TextBlock", "text": notice.text, "wrap": True})
    facts = [*notice.facts]
    if notice.workspace:
        facts.append(Fact("Workspace", notice.workspace))
    if notice.time and not notice.items:
        facts.append(Fact("Time", notice.time))
    if facts:
        body.append({"type": "FactSet", "facts": [{"title": f.name, "value": f.value} for f in facts]})
    items = [_item(item) for item in notice.items]
    if items:
        items[0] |= {"separator": True, "spacing": "Medium"}
    body += items
    if notice.more:
        body.append({"type": "TextBlock", "text": f"and {notice.more} more", "isSubtle": True, "wrap": True})
    out: dict[str, object] = {"$schema": SCHEMA, "type": "AdaptiveCard", "version": VERSION, "body": body}
    if notice.link is not None:
        out["actions"] = [{"type": "Action.OpenUrl", "title": notice.link.label, "url": notice.link.url}]
    out["msteams"] = {"width": "Full"}
    return out


def _item(item: Item) -> dict[str, object]:
    """A digest's event: its title and time, the whole of it a link to its studio page (no Markdown:
    a run id's underscores and asterisks show as they are)."""
    line: list[object] = [{"type": "TextBlock", "text": item.title, "wrap": True, "color": "Accent"}]
    if item.time:
        line.append({"type": "TextBlock", "text": item.time, "isSubtle": True, "size": "Small", "spacing": "None"})
    out: dict[str, object] = {"type": "Container", "spacing": "Small", "items": line}
    if item.link is not None:
        out["selectAction"] = {"type": "Action.OpenUrl", "title": item.link.label, "url": item.link.url}
    return out


def envelope(content: Mapping[str, object]) -> dict[str, object]:
    """The message a Workflows webhook takes, carrying one card."""
    return {"type": "message", "attachments": [{"contentType": CONTENT_TYPE, "contentUrl": None, "content": content}]}


def message(notice: Notice) -> bytes:
    """The default card for ``notice``, in its envelope, shortened to fit (see the module's docstring)."""
    body = dumps(envelope(card(notice)))
    if len(body) <= MAX_BYTES:
        return body
    notice = replace(notice, facts=tuple(Fact(f.name, shorten(f.value, LONG_FACT)) for f in notice.facts))
    if notice.text:
        notice = replace(notice, text=shorten(notice.text, LONG_FACT * 4))
    body = dumps(envelope(card(notice)))
    while len(body) > MAX_BYTES and notice.items:
        notice = replace(notice, items=notice.items[:-1], more=notice.more + 1)
        body = dumps(envelope(card(notice)))
    if len(body) > MAX_BYTES:
        raise OverLimit(
            f"the Teams card is {len(body):,} bytes even shortened, over the {MAX_BYTES:,} a Workflows webhook posts"
        )
    return body


def own_message(content: object) -> bytes:
    """A rule's own card (``card:``), rendered, in its envelope: refused when it is no Adaptive Card,
    declares a version Teams does not render, or is over the size limit. Never shortened."""
    if not isinstance(content, Mapping) or content.get("type") != "AdaptiveCard":
        raise OverLimit('the card is not an Adaptive Card (an object with "type": "AdaptiveCard")')
    problem = version_problem(content.get("version"))
    if problem:
        raise OverLimit(problem)
    body = dumps(envelope(content))
    if len(body) > MAX_BYTES:
        raise OverLimit(f"the Teams card is {len(body):,} bytes, over the {MAX_BYTES:,} a Workflows webhook posts")
    return body


def version_problem(version: object) -> str | None:
    """Why a card's ``version`` cannot go to Teams; None when it can."""
    if not isinstance(version, str):
        return f'the card declares no version ("version": "{VERSION}" at most, as a string)'
    parts = version.split(".")
    if len(parts) != 2 or not all(part.isdigit() for part in parts):
        return f"the card's version {version!r} is not a version such as {VERSION!r}"
    if (int(parts[0]), int(parts[1])) > MAX_VERSION:
        return f"the card's version {version} is above {VERSION}, the newest Teams renders"
    return None


def shorten(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, an ellipsis marking the cut."""
    return text if len(text) <= limit else text[: max(limit - 1, 0)].rstrip() + ELLIPSIS

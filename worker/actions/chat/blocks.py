"""A notice as a Slack message, within Slack's limits. Pure.

Block Kit blocks, with a ``text`` fallback (what notifications and screen readers show).

Slack refuses a message of more than 50 blocks, a section whose text is over 3,000 characters, a
field over 2,000, more than 10 fields, and a header over 150 characters. The default message keeps
within them, cutting a text that is too long with an ellipsis and folding a digest's items that do
not fit into its "and N more"; a rule's own blocks (``blocks:``) are checked, never changed, and
refused with the limit named (:class:`~worker.errors.OverLimit`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from worker.actions.chat.cards import shorten
from worker.actions.chat.notice import Notice, Tone
from worker.errors import OverLimit

MAX_BLOCKS: Final = 50
MAX_SECTION: Final = 3000
MAX_FIELD: Final = 2000
MAX_FIELDS: Final = 10
MAX_HEADER: Final = 150
MAX_BUTTON: Final = 75
#: Slack cuts the fallback text beyond this.
MAX_TEXT: Final = 40_000

_EMOJI: Final = {
    Tone.ATTENTION: ":rotating_light:",
    Tone.WARNING: ":warning:",
    Tone.GOOD: ":white_check_mark:",
    Tone.ACCENT: ":information_source:",
}


def message(notice: Notice) -> dict[str, object]:
    """The default message: a header with the title, the text, the facts as fields, the workspace and
    time as context, a digest's items, and a button to Azure ML studio."""
    blocks: list[dict[str, object]] = [
        {"type": "header", "text": _plain(shorten(f"{_EMOJI[notice.tone]} {notice.title}", MAX_HEADER))}
    ]
    if notice.text:
        blocks.append(_section(_escape(notice.text)))
    facts = [f"*{_escape(fact.name)}*\n{_escape(fact.value)}" for fact in notice.facts]
    if facts:
        fields = [{"type": "mrkdwn", "text": shorten(text, MAX_FIELD)} for text in facts[:MAX_FIELDS]]
        blocks.append({"type": "section", "fields": fields})
    context = [part for part in (notice.workspace, notice.time) if part]
    if context:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _escape(" · ".join(context))}]})
    # The items, a section of lines each, in as many sections as they need and the limit leaves room for.
    room = MAX_BLOCKS - len(blocks) - 2  # the "and N more" and the button
    lines = [_line(item.title, item.link.url if item.link else None, item.time) for item in notice.items]
    sections: list[list[str]] = []
    shown = 0
    for each in lines:
        line = shorten(each, MAX_SECTION)
        if not sections or len("\n".join([*sections[-1], line])) > MAX_SECTION:
            if len(sections) == room:
                break
            sections.append([])
        sections[-1].append(line)
        shown += 1
    blocks += [_section("\n".join(lines_of)) for lines_of in sections]
    more = notice.more + len(lines) - shown
    if more:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"and {more} more"}]})
    if notice.link is not None:
        button = {"type": "button", "text": _plain(shorten(notice.link.label, MAX_BUTTON)), "url": notice.link.url}
        blocks.append({"type": "actions", "elements": [button]})
    fallback = " · ".join(part for part in (notice.title, notice.workspace) if part)
    return {"text": shorten(fallback, MAX_TEXT), "blocks": blocks}


def own_message(blocks: object, text: str) -> dict[str, object]:
    """A rule's own blocks (``blocks:``), rendered, with the fallback ``text``: refused over Slack's limits."""
    if not isinstance(blocks, list) or not all(isinstance(block, Mapping) for block in blocks):
        raise OverLimit("blocks is not a list of Block Kit blocks (objects with a type)")
    problem = blocks_problem(blocks)
    if problem:
        raise OverLimit(problem)
    return {"text": shorten(text, MAX_TEXT), "blocks": blocks}


def blocks_problem(blocks: list[object]) -> str | None:
    """The first of Slack's limits ``blocks`` break; None when they keep within them."""
    if len(blocks) > MAX_BLOCKS:
        return f"{len(blocks)} blocks, over the {MAX_BLOCKS} Slack takes in a message"
    for number, block in enumerate(blocks, 1):
        if not isinstance(block, Mapping):
            continue
        text = block.get("text")
        value = text.get("text") if isinstance(text, Mapping) else None
        if block.get("type") == "section" and isinstance(value, str) and len(value) > MAX_SECTION:
            return f"block {number}: a section's text of {len(value):,} characters, over Slack's {MAX_SECTION:,}"
        if block.get("type") == "header" and isinstance(value, str) and len(value) > MAX_HEADER:
            return f"block {number}: a header of {len(value)} characters, over Slack's {MAX_HEADER}"
        fields = block.get("fields")
        if isinstance(fields, list) and len(fields) > MAX_FIELDS:
            return f"block {number}: {len(fields)} fields, over Slack's {MAX_FIELDS}"
    return None


def _line(title: str, url: str | None, time: str | None) -> str:
    shown = f"<{url}|{_escape(title)}>" if url else _escape(title)
    return f"• {shown}" + (f" · {time}" if time else "")


def _section(text: str) -> dict[str, object]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": shorten(text, MAX_SECTION)}}


def _plain(text: str) -> dict[str, object]:
    return {"type": "plain_text", "text": text, "emoji": True}


def _escape(text: str) -> str:
    """Text shown as it is in Slack's mrkdwn: its three control characters escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

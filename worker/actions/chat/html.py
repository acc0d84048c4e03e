"""Chat messages drawn in HTML, for previews: a Teams card and a Slack message as a person would see them.

The backtest page shows each planned ``teams`` and ``slack`` action's message this way, and the docs'
pictures of Slack messages are drawn from it. It draws what the default messages use (Adaptive
Cards' Container, TextBlock, FactSet and Action.OpenUrl; Block Kit's header, section, fields,
context, actions and divider); anything else is named, its JSON shown beside. No script, and no
link that loads or leaves: a button shows its URL when pointed at. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from html import escape
from typing import Final

#: The look of both, for a page that shows them.
STYLE: Final = """
.chat { max-width: 34rem; font: 14px/1.4 'Segoe UI', 'DejaVu Sans', sans-serif; color: #242424; }
.ac-card { background: #fff; border: 1px solid #e0e0e0; border-radius: 4px; overflow: hidden; }
.ac-container { padding: .5rem 1rem; }
.ac-container.attention { background: #fcf4f6; } .ac-container.warning { background: #fbf6d9; }
.ac-container.good { background: #e7f2da; } .ac-container.accent { background: #e2e2f6; }
.ac-body > * { margin: .5rem 1rem; } .ac-body > .ac-container { margin: 0; }
.ac-text.bolder { font-weight: 600; } .ac-text.medium { font-size: 15px; } .ac-text.subtle { color: #616161; }
.ac-text.small { font-size: 12px; } .ac-text.accent { color: #6264a7; }
table.ac-facts { border-collapse: collapse; } table.ac-facts th { text-align: left; padding: 0 1rem 0 0;
  vertical-align: top; font-weight: 600; white-space: nowrap; } table.ac-facts td { padding: 0; }
.ac-button, .sk-button { display: inline-block; border: 1px solid #c7c7c7; border-radius: 4px;
  padding: .2rem .8rem; margin: .5rem 1rem .8rem 0; color: #0f6cbd; font-weight: 600; }
.ac-unknown, .sk-unknown { color: #a4262c; font-style: italic; }
.sk-message { border-left: 4px solid #ddd; padding: .2rem .8rem; background: #fff; }
.sk-header { font-weight: 700; font-size: 17px; margin: .3rem 0; }
.sk-section { margin: .3rem 0; white-space: pre-wrap; } .sk-fields { display: grid;
  grid-template-columns: 1fr 1fr; gap: .3rem 1rem; margin: .3rem 0; white-space: pre-wrap; }
.sk-context { color: #616061; font-size: 12px; margin: .3rem 0; } .sk-link { color: #1264a3; }
.sk-emoji { display: inline-block; width: .8em; height: .8em; border-radius: 50%; margin-right: .3em; }
.sk-emoji.attention { background: #e01e5a; } .sk-emoji.warning { background: #ecb22e; }
.sk-emoji.good { background: #2eb67d; } .sk-emoji.accent { background: #36c5f0; }
"""


def preview(action_type: str, message: object) -> str | None:
    """The HTML of a planned action's ``message``; None for an action that has none."""
    if not isinstance(message, Mapping) or "error" in message:
        return None
    if action_type == "teams":
        attachments = message.get("attachments")
        card = attachments[0].get("content") if isinstance(attachments, list) and attachments else None
        return card_html(card) if isinstance(card, Mapping) else None
    if action_type == "slack":
        return slack_html(message)
    return None


def card_html(card: Mapping[str, object]) -> str:
    body = "".join(_element(item) for item in _list(card.get("body")))
    actions = "".join(_action(action) for action in _list(card.get("actions")))
    buttons = f'<div class="ac-actions" style="margin: 0 1rem">{actions}</div>' if actions else ""
    return f'<div class="chat"><div class="ac-card"><div class="ac-body">{body}</div>{buttons}</div></div>'


def _element(element: object) -> str:
    if not isinstance(element, Mapping):
        return ""
    kind = element.get("type")
    if kind == "TextBlock":
        classes = ["ac-text"]
        classes += [str(element.get(name, "")).lower() for name in ("weight", "size", "color")]
        classes += ["subtle"] if element.get("isSubtle") else []
        return f'<div class="{" ".join(c for c in classes if c)}">{escape(str(element.get("text", "")))}</div>'
    if kind == "FactSet":
        rows = "".join(
            f"<tr><th>{escape(str(fact.get('title', '')))}</th><td>{escape(str(fact.get('value', '')))}</td></tr>"
            for fact in _list(element.get("facts"))
            if isinstance(fact, Mapping)
        )
        return f'<table class="ac-facts">{rows}</table>'
    if kind == "Container":
        inner = "".join(_element(item) for item in _list(element.get("items")))
        select = element.get("selectAction")
        title = f' title="{escape(str(select.get("url", "")))}"' if isinstance(select, Mapping) else ""
        style = escape(str(element.get("style", "default")))
        return f'<div class="ac-container {style}"{title}>{inner}</div>'
    if kind == "ActionSet":
        return "".join(_action(action) for action in _list(element.get("actions")))
    return f'<div class="ac-unknown">{escape(str(kind))}: see the JSON</div>'


def _action(action: object) -> str:
    if not isinstance(action, Mapping):
        return ""
    url = escape(str(action.get("url", "")))
    return f'<span class="ac-button" title="{url}">{escape(str(action.get("title", "")))}</span>'


def slack_html(message: Mapping[str, object]) -> str:
    parts = []
    for block in _list(message.get("blocks")):
        if not isinstance(block, Mapping):
            continue
        kind = block.get("type")
        if kind == "header":
            parts.append(f'<div class="sk-header">{_emoji(escape(_text_of(block.get("text"))))}</div>')
        elif kind == "section":
            if "text" in block:
                parts.append(f'<div class="sk-section">{mrkdwn(_text_of(block.get("text")))}</div>')
            fields = "".join(f"<div>{mrkdwn(_text_of(field))}</div>" for field in _list(block.get("fields")))
            if fields:
                parts.append(f'<div class="sk-fields">{fields}</div>')
        elif kind == "context":
            texts = " ".join(mrkdwn(_text_of(element)) for element in _list(block.get("elements")))
            parts.append(f'<div class="sk-context">{texts}</div>')
        elif kind == "actions":
            for element in _list(block.get("elements")):
                if isinstance(element, Mapping):
                    url = escape(str(element.get("url", "")))
                    label = escape(_text_of(element.get("text")))
                    parts.append(f'<span class="sk-button" title="{url}">{label}</span>')
        elif kind == "divider":
            parts.append("<hr>")
        else:
            parts.append(f'<div class="sk-unknown">{escape(str(kind))}: see the JSON</div>')
    return f'<div class="chat"><div class="sk-message">{"".join(parts)}</div></div>'


_LINK: Final = re.compile(r"<([^|>]+)\|([^>]*)>")
_BOLD: Final = re.compile(r"\*([^*\n]+)\*")
#: The emoji the default headers use, drawn as a dot of their colour (no emoji font is needed).
_EMOJI: Final = {
    ":rotating_light:": "attention",
    ":warning:": "warning",
    ":white_check_mark:": "good",
    ":information_source:": "accent",
}


def mrkdwn(text: str) -> str:
    """Slack's ``mrkdwn`` as HTML: links (``<url|label>``, shown as their label), ``*bold*``, and its
    three escaped characters."""
    out, last = [], 0
    for found in _LINK.finditer(text):
        out.append(_plain(text[last : found.start()]))
        out.append(f'<span class="sk-link" title="{escape(_unescape(found[1]))}">{_plain(found[2])}</span>')
        last = found.end()
    out.append(_plain(text[last:]))
    return "".join(out)


def _plain(text: str) -> str:
    return _BOLD.sub(r"<b>\1</b>", escape(_unescape(text)))


def _unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _text_of(value: object) -> str:
    return str(value.get("text", "")) if isinstance(value, Mapping) else ""


def _emoji(html: str) -> str:
    for name, tone in _EMOJI.items():
        html = html.replace(name, f'<span class="sk-emoji {tone}" title="{name}"></span>')
    return html


def _list(value: object) -> list[object]:
    return value if isinstance(value, list) else []

"""What the chat actions take.

The webhook's URL (a secret: it carries its own signature), and the parts of the default message a
rule may change (``title``, ``text``, ``facts``, the digest's ``listed``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Self

from pydantic import Field, field_validator, model_validator

from worker.actions.base import ActionParams, PlannedAction
from worker.actions.chat.notice import Fact, Notice, notice
from worker.actions.secrets import Secret
from worker.actions.templates import Template, context_of
from worker.settings import insecure_url


class ChatParams(ActionParams):
    #: The webhook's URL, from the environment (``${env:NAME}``): https, or http to a loopback address.
    url: Secret
    #: Replace the default message's title, its line of text, and its facts (name: value template).
    title: Template | None = None
    text: Template | None = None
    facts: dict[str, Template] | None = None
    #: A digest's events listed, the rest counted ("and N more").
    listed: int = Field(10, ge=1, le=100)

    @field_validator("url")
    @classmethod
    def _https(cls, url: Secret) -> Secret:
        value = url.value
        if value.startswith("<") and value.endswith(">"):  # a placeholder: a dry run holds no secrets
            return url
        if insecure_url(value) is not None:
            # Never the URL itself: its query string is the webhook's signature.
            raise ValueError(f"{url}: the webhook URL must be https:// (plain http only to a loopback address)")
        return url

    def parts_replaced(self) -> bool:
        return self.title is not None or self.text is not None or self.facts is not None

    @model_validator(mode="after")
    def _one_message(self) -> Self:
        own = self.own_message_field()
        if own is not None and self.parts_replaced():
            raise ValueError(f"{own} replaces the whole message: title, text and facts change the default one")
        return self

    def own_message_field(self) -> str | None:
        """The name of the parameter holding the rule's own message, when it has one."""
        return None


def notice_for(params: ChatParams, action: PlannedAction, studio: str) -> Notice:
    """The default notice for ``action``, with the parts the rule replaces rendered in."""
    shown = notice(action, studio, listed=params.listed)
    if not params.parts_replaced():
        return shown
    context = context_of(action)
    if params.title is not None:
        shown = replace(shown, title=params.title.render(context))
    if params.text is not None:
        shown = replace(shown, text=params.text.render(context))
    if params.facts is not None:
        shown = replace(shown, facts=tuple(Fact(name, value.render(context)) for name, value in params.facts.items()))
    return shown

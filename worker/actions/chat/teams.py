"""The ``teams`` action: a message to a Microsoft Teams channel through its Workflows webhook.

With no ``card``, the default Adaptive Card for the event (:mod:`~worker.actions.chat.cards`); with
one, the rule's own card, a JSON template. A Workflows webhook answers 202 before it posts: a card it
cannot post (too large, a version Teams does not render) fails silently there, so it fails here
first, permanently (a dead letter naming the limit).
"""

from __future__ import annotations

from typing import Self

import orjson
from pydantic import model_validator

from worker.actions.base import PlannedAction
from worker.actions.chat import cards
from worker.actions.chat.params import ChatParams, notice_for
from worker.actions.clients import Clients, HttpRequest
from worker.actions.http import HttpExecutor, origin
from worker.actions.templates import JsonTemplate, context_of


class TeamsParams(ChatParams):
    #: Your own Adaptive Card (a JSON template): replaces the default one.
    card: JsonTemplate | None = None

    def own_message_field(self) -> str | None:
        return "card" if self.card is not None else None

    @model_validator(mode="after")
    def _static_card(self) -> Self:
        source = self.card.source if self.card is not None else None
        if isinstance(source, dict):
            if source.get("type") != "AdaptiveCard":
                raise ValueError('card: an Adaptive Card, an object with "type": "AdaptiveCard"')
            version = source.get("version")
            problem = cards.version_problem(version) if not (isinstance(version, str) and "{" in version) else None
            if problem:
                raise ValueError(f"card: {problem}")
        elif source is not None and not (isinstance(source, str) and "{" in source):
            raise ValueError('card: an Adaptive Card, an object with "type": "AdaptiveCard"')
        return self

    def body(self, action: PlannedAction, studio: str) -> bytes:
        """The message for ``action``, as posted (``studio``: where its links go)."""
        if self.card is not None:
            return cards.own_message(self.card.render(context_of(action)))
        return cards.message(notice_for(self, action, studio))

    def message_preview(self, action: PlannedAction, studio: str) -> object:
        return orjson.loads(self.body(action, studio))


class TeamsExecutor(HttpExecutor):
    def __init__(self, params: TeamsParams, clients: Clients) -> None:
        super().__init__(clients.http, origin(params.url.value))
        self._params = params
        self._studio = clients.azure.studio

    def body(self, action: PlannedAction) -> bytes:
        """The message, as posted."""
        return self._params.body(action, self._studio)

    async def request(self, action: PlannedAction) -> HttpRequest:
        return HttpRequest("POST", self._params.url.value, {"Content-Type": "application/json"}, self.body(action))

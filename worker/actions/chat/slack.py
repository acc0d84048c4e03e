"""The ``slack`` action: a message to a Slack channel through its incoming webhook.

With no ``blocks``, the default Block Kit message for the event (:mod:`~worker.actions.chat.blocks`);
with them, the rule's own (a JSON template), with the default title as the fallback ``text`` (or the
rule's ``text``). Slack answers 200 ``ok``; above about one message a second, 429 with
``Retry-After``, which the runner waits out before trying again; a refused payload (``invalid_blocks``)
is permanent.
"""

from __future__ import annotations

from typing import Self

from pydantic import model_validator

from worker.actions.base import PlannedAction
from worker.actions.chat import blocks
from worker.actions.chat.params import ChatParams, notice_for
from worker.actions.clients import Clients, HttpRequest
from worker.actions.http import HttpExecutor, origin
from worker.actions.templates import JsonTemplate, context_of
from worker.jsontext import dumps


class SlackParams(ChatParams):
    #: Your own Block Kit blocks (a JSON template): replace the default ones.
    blocks: JsonTemplate | None = None

    def own_message_field(self) -> str | None:
        return "blocks" if self.blocks is not None else None

    def parts_replaced(self) -> bool:  # with your own blocks, ``text`` is the fallback
        return self.title is not None or self.facts is not None or (self.blocks is None and self.text is not None)

    @model_validator(mode="after")
    def _static_blocks(self) -> Self:
        source = self.blocks.source if self.blocks is not None else None
        if isinstance(source, list):
            problem = blocks.blocks_problem(source)
            if problem:
                raise ValueError(f"blocks: {problem}")
        elif source is not None and not (isinstance(source, str) and "{" in source):
            raise ValueError("blocks: a list of Block Kit blocks")
        return self

    def payload(self, action: PlannedAction, studio: str) -> dict[str, object]:
        """The message for ``action``, as posted (``studio``: where its links go)."""
        if self.blocks is None:
            return blocks.message(notice_for(self, action, studio))
        context = context_of(action)
        fallback = self.text.render(context) if self.text is not None else notice_for(self, action, studio).title
        return blocks.own_message(self.blocks.render(context), fallback)

    def message_preview(self, action: PlannedAction, studio: str) -> object:
        return self.payload(action, studio)


class SlackExecutor(HttpExecutor):
    def __init__(self, params: SlackParams, clients: Clients) -> None:
        super().__init__(clients.http, origin(params.url.value))
        self._params = params
        self._studio = clients.azure.studio

    def payload(self, action: PlannedAction) -> dict[str, object]:
        """The message, as posted."""
        return self._params.payload(action, self._studio)

    async def request(self, action: PlannedAction) -> HttpRequest:
        body = dumps(self.payload(action))
        return HttpRequest("POST", self._params.url.value, {"Content-Type": "application/json"}, body)

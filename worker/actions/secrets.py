"""Secrets in rules files: references to the environment, ``${env:NAME}``, resolved once at start-up.

A secret parameter (an SMTP password, a token, an HMAC key, a connection string) takes only a
reference, never the value itself, so rules files can be committed. The reference is resolved when
the rules load; a variable that is not set is a problem of the rules file, named with its file and
line. The value is held in a :class:`Secret`, whose ``repr`` and ``str`` show the reference, not the
value, and is registered with the process's :data:`~worker.masking.MASKER` as it is resolved, so that
it is masked, in every form, wherever the worker writes (a remote error message may echo it back).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from pydantic import GetCoreSchemaHandler, ValidationInfo
from pydantic_core import core_schema

from worker.masking import MASKER

_REFERENCE: Final = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True, slots=True)
class Secret:
    """A secret value and the environment variable it came from."""

    name: str
    value: str = field(repr=False)

    def __str__(self) -> str:
        return f"${{env:{self.name}}}"

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.with_info_plain_validator_function(cls._validate)

    @classmethod
    def _validate(cls, raw: object, info: ValidationInfo) -> Secret:
        if isinstance(raw, Secret):
            return raw
        match = _REFERENCE.fullmatch(raw.strip()) if isinstance(raw, str) else None
        if match is None:
            raise ValueError(
                "a secret is given as a reference to an environment variable, such as ${env:SMTP_PASSWORD}; "
                "never write the value in a rules file"
            )
        name = match.group(1)
        context = info.context if isinstance(info.context, Mapping) else {}
        environment: Mapping[str, str] = context.get("env", os.environ)
        value = environment.get(name)
        if not value:
            raise ValueError(f"the environment variable {name} is not set (or is empty); set it before starting")
        if not isinstance(environment, Placeholders):
            MASKER.add(value)
        return cls(name, value)


class Placeholders(Mapping[str, str]):
    """An environment in which every variable holds a placeholder (``<NAME>``): for the commands that
    execute nothing (``explain``, dry runs), so that they need no secrets."""

    def __getitem__(self, name: str) -> str:
        return f"<{name}>"

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

"""JSON text out of the worker's own values: fast, and exact for integers beyond 64 bits."""

from __future__ import annotations

import json
from decimal import Decimal

import orjson


def dumps(value: object, *, indent: bool = False) -> bytes:
    """``value`` as UTF-8 JSON. Integers too large for orjson (which the decoder keeps exact) go
    through the standard library; decimals (from YAML) become numbers."""
    try:
        return orjson.dumps(value, default=_decimal, option=orjson.OPT_INDENT_2 if indent else 0)
    except orjson.JSONEncodeError:
        text = json.dumps(value, ensure_ascii=False, indent=2 if indent else None, default=_decimal_or_text)
        return text.encode()


def _decimal(value: object) -> object:
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def _decimal_or_text(value: object) -> object:
    return float(value) if isinstance(value, Decimal) else str(value)

"""What a peer's attach asks for, read from the frame's bytes.

proton's Python binding exposes neither a link's desired capabilities nor, conveniently, its
filter and properties; the hub reads them from the attach frame itself (:mod:`frames`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from worker.localhub import codec, frames

SELECTOR_FILTER: Final = "apache.org:selector-filter:string"
EPOCH: Final = "com.microsoft:epoch"
RUNTIME_METRIC: Final = "com.microsoft:enable-receiver-runtime-metric"


@dataclass(frozen=True, slots=True)
class LinkRequest:
    """What a peer's attach asked for, read from its bytes."""

    channel: int
    handle: int
    name: str
    source: str | None
    target: str | None
    selector: str | None
    epoch: int | None
    runtime_metric: bool


def link_request(frame: frames.Frame) -> LinkRequest:
    fields = frame.fields + [None] * (14 - len(frame.fields))
    source = _composite_fields(fields[5])
    target = _composite_fields(fields[6])
    filters = source[7] if len(source) > 7 and isinstance(source[7], dict) else {}
    selector = filters.get(SELECTOR_FILTER)
    if isinstance(selector, codec.Described):
        selector = selector.value
    desired = fields[12]
    capabilities = desired if isinstance(desired, list) else [desired]
    properties = fields[13] if isinstance(fields[13], dict) else {}
    epoch = properties.get(EPOCH)
    return LinkRequest(
        channel=frame.channel,
        handle=int(fields[1]) if isinstance(fields[1], int) else -1,
        name=str(fields[0]),
        source=_address(source),
        target=_address(target),
        selector=selector if isinstance(selector, str) else None,
        epoch=epoch if isinstance(epoch, int) else None,
        runtime_metric=RUNTIME_METRIC in capabilities,
    )


def _composite_fields(value: object) -> list[object]:
    if isinstance(value, codec.Described) and isinstance(value.value, list):
        return value.value
    return []


def _address(fields: list[object]) -> str | None:
    return fields[0] if fields and isinstance(fields[0], str) else None

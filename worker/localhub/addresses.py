"""Link addresses as the SDK writes them: ``[amqps://HOST[:PORT]/]HUB[/ConsumerGroups/CG][/Partitions/N]``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

CBS: Final = "$cbs"
MANAGEMENT: Final = "$management"


@dataclass(frozen=True, slots=True)
class Entity:
    """What a link address names: a hub, and maybe a consumer group and a partition."""

    hub: str
    consumer_group: str | None = None
    partition: str | None = None


def path_of(address: str) -> str:
    """The address without its scheme and host."""
    if "://" in address:
        address = address.split("://", 1)[1].partition("/")[2]
    return address.strip("/")


def parse_entity(address: str) -> Entity | None:
    """The entity a producer's target or a consumer's source names; None when the shape is unknown."""
    parts = path_of(address).split("/")
    hub, rest = parts[0], parts[1:]
    group = partition = None
    if len(rest) >= 2 and rest[0].casefold() == "consumergroups":
        group, rest = rest[1], rest[2:]
    if len(rest) == 2 and rest[0].casefold() == "partitions":
        partition, rest = rest[1], []
    if not hub or rest:
        return None
    return Entity(hub, group, partition)

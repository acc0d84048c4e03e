"""Blob container URLs, as replay sources and dead-letter lanes are given: split into their parts.

Host style ``https://ACCOUNT.blob.core.windows.net/CONTAINER[/PREFIX]``, or path style as
emulators serve it, ``http://127.0.0.1:10000/ACCOUNT/CONTAINER[/PREFIX]`` (path style when the host
is an IP address, ``localhost`` or a name without dots). A SAS token may follow in the query; it is
masked wherever the worker writes from then on. Pure: the clients are made where they are used.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import parse_qsl, unquote, urlsplit

from worker.errors import SourceError
from worker.masking import MASKER

_CONTAINER_NAME: Final = re.compile(r"^(?:[a-z0-9](?:-?[a-z0-9]){2,62}|\$root|\$logs)$")


@dataclass(frozen=True, slots=True)
class ContainerUrl:
    """A blob container source, split: ``account_url`` + ``container`` + blob name ``prefix``."""

    account_url: str
    container: str
    prefix: str = ""
    #: A SAS token from the URL's query, without the "?".
    sas_token: str | None = field(default=None, repr=False)

    @property
    def container_url(self) -> str:
        return f"{self.account_url}/{self.container}"


def parse_container_url(url: str) -> ContainerUrl:
    """Split a container URL (host or path style, see the module's docstring). Raises SourceError."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise SourceError(f"{url}: not a blob container URL (expected http:// or https://)")
    host = parts.hostname
    if not host:
        raise SourceError(f"{url}: not a blob container URL: it names no host")
    segments = [unquote(segment) for segment in parts.path.split("/")]
    segments = segments[1:] if segments and segments[0] == "" else segments
    base = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
    if _path_style(host):
        if not segments or not segments[0]:
            raise SourceError(f"{url}: names no storage account: expected {base}/ACCOUNT/CONTAINER[/PREFIX]")
        base = f"{base}/{segments[0]}"
        segments = segments[1:]
    if not segments or not segments[0]:
        raise SourceError(f"{url}: names no container: expected {base}/CONTAINER[/PREFIX]")
    container, prefix = segments[0], "/".join(segments[1:])
    if not _CONTAINER_NAME.match(container):
        raise SourceError(
            f"{url}: {container!r} is not a container name (3 to 63 lower-case letters, digits and single hyphens)"
        )
    if parts.query:
        MASKER.add(parts.query, *(value for name, value in parse_qsl(parts.query) if name.lower() == "sig"))
    return ContainerUrl(base, container, prefix, parts.query or None)


def _path_style(host: str) -> bool:
    if host == "localhost" or "." not in host:
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def check_account(location: ContainerUrl, client_url: str) -> None:
    """Raise SourceError unless a client made from a connection string (whose URL is ``client_url``)
    reaches ``location``'s container: a connection string names its own account, whatever the URL says."""
    url = client_url.partition("?")[0].rstrip("/")
    if url.lower() != location.container_url.lower():
        raise SourceError(
            f"{location.container_url}: the connection string is for another account ({url.rpartition('/')[0]}); "
            "give the connection string of this URL's account, or a SAS token in the URL"
        )

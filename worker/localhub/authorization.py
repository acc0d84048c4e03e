"""Shared access signatures, checked as Event Hubs checks them. Pure: tokens, keys and a clock in, verdicts out.

A client puts a token on ``$cbs`` for an audience (the hub's URI, or a consumer group's below it):
``SharedAccessSignature sr=<resource>&sig=<signature>&se=<expiry>&skn=<key name>``, fields in any
order and each URL-encoded. It is valid when the key name is one of the hub's keys, the signature
is base64(HMAC-SHA256(key, "<sr as sent>\\n<se>")) (the key's text as UTF-8, not its base64 bytes,
as the SDK signs), the expiry is in the future and the resource covers the audience. A valid token
grants its resource until it expires: links to entities under that resource may attach.

A resource covers a URI when, ignoring the scheme, the port, case and a trailing slash, it names
the same host and its path segments begin that URI's: a namespace-level token (``sb://host/``)
covers every hub, a hub's covers its partitions and consumer groups. A URI without a host (a
relative link address, a management request's ``name``) is in this hub's one namespace, whatever
host the token names.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final
from urllib.parse import unquote_plus

DEVELOPMENT_KEY_NAME: Final = "RootManageSharedAccessKey"
#: The local hub's default key. Public (it is printed in every connection string the hub prints
#: and written in its docs) and for local use only: it keeps a stray client off a hub on a
#: laptop no more than Azurite's well-known account key keeps one off its storage.
DEVELOPMENT_KEY: Final = "UZZdFpGsuSBMWNM/TRpD9n6nwvpH55DN7+yqq9Qb7q8="
#: The default keys of a local hub: key name -> key.
DEVELOPMENT_KEYS: Final[Mapping[str, str]] = {DEVELOPMENT_KEY_NAME: DEVELOPMENT_KEY}

SAS_TYPE: Final = "servicebus.windows.net:sastoken"
JWT_TYPE: Final = "jwt"
_PREFIX: Final = "SharedAccessSignature "
_FIELDS: Final = frozenset(("sr", "sig", "se", "skn"))


@dataclass(frozen=True, slots=True)
class SasToken:
    """A shared access signature's fields: ``resource`` as sent (URL-encoded, what is signed), the rest decoded."""

    resource: str
    signature: str
    expiry: int
    key_name: str

    @property
    def resource_uri(self) -> str:
        return unquote_plus(self.resource)


@dataclass(frozen=True, slots=True)
class Grant:
    """What a valid token grants: its resource (decoded) until its expiry (epoch seconds)."""

    resource: str
    expiry: int


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a token or a request is refused, in words for the client."""

    description: str


def parse_token(text: str) -> SasToken | Refusal:
    """The fields of ``SharedAccessSignature sr=..&sig=..&se=..&skn=..``, or why it is not one."""
    if not text.startswith(_PREFIX):
        return Refusal(f"MalformedToken: a shared access signature starts with {_PREFIX.strip()!r}")
    fields: dict[str, str] = {}
    for pair in text[len(_PREFIX) :].strip().split("&"):
        name, equals, value = pair.partition("=")
        if not equals or not value:
            return Refusal(f"MalformedToken: {pair!r} is not a name=value field")
        if name in fields:
            return Refusal(f"MalformedToken: the field {name!r} appears twice")
        fields[name] = value
    missing = sorted(_FIELDS - fields.keys())
    if missing:
        return Refusal(f"MalformedToken: the token lacks the field(s) {', '.join(missing)} (needs sr, sig, se, skn)")
    expiry = unquote_plus(fields["se"])
    if not expiry.isdecimal():
        return Refusal(f"MalformedToken: the expiry se={expiry!r} is not epoch seconds")
    return SasToken(fields["sr"], unquote_plus(fields["sig"]), int(expiry), unquote_plus(fields["skn"]))


def signature(key: str, resource: str, expiry: int) -> str:
    """The base64 HMAC-SHA256 a token for ``resource`` (as sent, URL-encoded) until ``expiry`` carries."""
    digest = hmac.new(key.encode("utf-8"), f"{resource}\n{expiry}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def verify(text: str, audience: str, keys: Mapping[str, str], now: float) -> Grant | Refusal:
    """Check a put-token's token against the hub's keys and the time ``now`` (epoch seconds), for ``audience``."""
    token = parse_token(text)
    if isinstance(token, Refusal):
        return token
    key = keys.get(token.key_name)
    if key is None:
        return Refusal(f"InvalidSignature: the shared access key name {token.key_name!r} is not one of this hub's keys")
    expected = signature(key, token.resource, token.expiry)
    if not hmac.compare_digest(expected.encode("ascii"), token.signature.encode("utf-8", "replace")):
        return Refusal(f"InvalidSignature: the token's signature does not match key {token.key_name!r}")
    if token.expiry <= now:
        return Refusal(f"ExpiredToken: the token expired at {_utc(token.expiry)}")
    if not covers(token.resource_uri, audience):
        return Refusal(
            f"InvalidAudience: the token's resource {token.resource_uri!r} does not cover the audience {audience!r}"
        )
    return Grant(token.resource_uri, token.expiry)


def refuse_token_type(token_type: str) -> Refusal | None:
    """Why a token of this type cannot be checked here; None for a shared access signature."""
    if token_type == SAS_TYPE:
        return None
    if token_type == JWT_TYPE:
        return Refusal(
            "UnsupportedTokenType: the local hub has no Microsoft Entra ID and cannot check a JWT; "
            "use a shared access signature (a connection string, AzureNamedKeyCredential or AzureSasCredential)"
        )
    return Refusal(f"UnsupportedTokenType: the token type {token_type!r} is not {SAS_TYPE!r}")


def covers(resource: str, uri: str) -> bool:
    """Whether a token for ``resource`` grants ``uri`` (see the module's docstring)."""
    granted_host, granted = _split(resource)
    host, path = _split(uri)
    if host is not None and granted_host != host:
        return False
    return path[: len(granted)] == granted


def authorized(grants: Iterable[Grant], uri: str, now: float) -> bool:
    """Whether one of these grants, unexpired at ``now`` (epoch seconds), covers ``uri``."""
    return any(grant.expiry > now and covers(grant.resource, uri) for grant in grants)


def unauthorized_link(claim: str, uri: str) -> str:
    """The service's words when a link to ``uri`` lacks ``claim`` (``Send`` or ``Listen``)."""
    return f"Unauthorized access. '{claim}' claim(s) are required to perform this operation. Resource: '{uri}'."


def _split(uri: str) -> tuple[str | None, tuple[str, ...]]:
    """(host without port, path segments), casefolded; host None for a URI without one."""
    host: str | None = None
    text = uri.strip()
    if "://" in text:
        authority, _, text = text.split("://", 1)[1].partition("/")
        authority = authority.rpartition("@")[2]
        end = authority.find("]") + 1  # an IPv6 address: [::1]:5672
        host = (authority[:end] if end else authority.partition(":")[0]).casefold()
    return host, tuple(segment.casefold() for segment in text.split("/") if segment)


def _utc(epoch_seconds: int) -> str:
    try:
        return datetime.fromtimestamp(epoch_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return str(epoch_seconds)

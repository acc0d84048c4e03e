"""Masking secrets in text: every known secret in every form it takes, and credentials by their shape.

The worker registers each secret it handles (a rules file's ``${env:NAME}`` values, the connection
strings of its settings, a SAS token in a URL, each Azure AD token it obtains) with the process's
:data:`MASKER`, and everything it writes for people passes through :meth:`Masker.mask`: log lines
(a structlog processor, the last step before rendering), action errors, dead letters, reports and
command output. A secret is masked as it was given, and in the forms it is sent or echoed in: URL
and JSON escaped, base64 (alone, and as the password of HTTP Basic authentication, with or without
a user). Credentials are also masked by their shape, known or not: the token of an
``Authorization: Bearer``/``Basic`` header, a JSON web token, a SAS signature (``sig=``), and the
key of a connection string (``AccountKey=``, ``SharedAccessKey=``, ``SharedAccessSignature=``,
``Password=``). Pure: no I/O.

Masking runs on every log line, so it is a linear scan, whatever the number of secrets: the known
forms are found with an Aho-Corasick automaton (pyahocorasick), and the shapes' regular expression
runs only on text that holds one of their words.
"""

from __future__ import annotations

import base64
import io
import json
import re
import threading
from collections.abc import Iterable
from typing import Any, Final, TextIO
from urllib.parse import quote, quote_plus

import ahocorasick

MASK: Final = "***"
#: Secrets shorter than this are not masked as substrings of other text (they would mask half of it).
MIN_LENGTH: Final = 4

#: Credentials by their shape: what is kept (the name) and what is masked (the value).
#: A backslash is part of a value, but not one escaping the quote that ends it (the rendered JSON
#: of a log line: ``\"``), which would be masked with the value and leave the line unparseable.
_SHAPES: Final = re.compile(
    r"""
    (?P<scheme>\b(?:Bearer|Basic|SharedAccessSignature)\s+)(?P<token>(?:[A-Za-z0-9._~+/=%&-]|\\\\|\\(?!["'])){16,})
    | (?P<jwt>\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*)
    | (?P<key>\b(?:AccountKey|SharedAccessKey|SharedAccessSignature|Password|pwd|sig)\s*=\s*)
    (?P<value>(?:[^;&\s"'<>,\\]|\\\\|\\(?!["']))+)
    """,
    re.IGNORECASE | re.VERBOSE,
)


#: The words of the shapes above, lower-cased: text without any of them has no credential by its shape.
_SHAPE_WORDS: Final = ("bearer", "basic", "sharedaccess", "eyj", "accountkey", "password", "pwd", "sig")


def _automaton(words: Iterable[str]) -> Any:
    """An Aho-Corasick automaton finding ``words``, each found with its length."""
    automaton = ahocorasick.Automaton()
    for word in words:
        automaton.add_word(word, len(word))
    automaton.make_automaton()
    return automaton


_SHAPE_FINDER: Final = _automaton(_SHAPE_WORDS)

#: The parts of a connection string that are secret.
_SECRET_PARTS: Final = frozenset({"accountkey", "sharedaccesskey", "sharedaccesssignature", "password"})


def _shape(match: re.Match[str]) -> str:
    if match["jwt"]:
        return MASK
    prefix = match["scheme"] or match["key"]
    return prefix + MASK


def forms(secret: str) -> set[str]:
    """``secret`` as it may appear in text: as given, escaped for URLs and JSON, and base64-encoded
    (alone, and as an HTTP Basic credential with an empty user)."""
    found = {secret, quote(secret, safe=""), quote_plus(secret)}
    escaped = json.dumps(secret)[1:-1]
    found |= {escaped, escaped.replace("/", "\\/")}
    raw = secret.encode()
    for encoded in (base64.b64encode(raw), base64.b64encode(b":" + raw)):
        text = encoded.decode("ascii")
        found |= {text, text.rstrip("="), text.replace("/", "\\/")}
    return {form for form in found if len(form) >= MIN_LENGTH}


class Masker:
    """The secrets known to this process, and the masking of text with them. Thread-safe."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._forms: set[str] = set()
        #: Replaced whole on each change, never changed in place: readers need no lock.
        self._finder: Any = None
        self._lock = threading.Lock()

    def add(self, *secrets: str) -> None:
        """Mask these from now on, in every form (:func:`forms`)."""
        with self._lock:
            new = [secret for secret in secrets if len(secret) >= MIN_LENGTH and secret not in self._secrets]
            if not new:
                return
            self._secrets.update(new)
            for secret in new:
                self._forms |= forms(secret)
            self._finder = _automaton(self._forms)

    def add_connection_string(self, text: str) -> None:
        """Mask a connection string, and each key and signature it holds on its own."""
        parts = (part.partition("=") for part in text.split(";"))
        self.add(text, *(value for name, _, value in parts if name.strip().lower() in _SECRET_PARTS and value))

    def add_all(self, secrets: Iterable[str]) -> None:
        self.add(*secrets)

    def known(self) -> frozenset[str]:
        """The secrets added so far (to hand to another process, which masks them too)."""
        with self._lock:
            return frozenset(self._secrets)

    def mask(self, text: str) -> str:
        """``text`` with every known secret, and every credential by its shape, replaced by ``***``."""
        finder = self._finder
        if finder is not None:
            parts: list[str] = []
            start = 0
            for end, length in finder.iter_long(text):  # the longest first, left to right, never overlapping
                parts += (text[start : end + 1 - length], MASK)
                start = end + 1
            if parts:
                text = "".join(parts) + text[start:]
        if next(_SHAPE_FINDER.iter(text.lower()), None) is not None:
            text = _SHAPES.sub(_shape, text)
        return text

    def mask_value(self, value: object) -> object:
        """:meth:`mask` applied to every string in ``value`` (nested lists, tuples and dicts, keys too)."""
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, dict):
            return {self.mask_value(key): self.mask_value(item) for key, item in value.items()}
        if type(value) is list:
            return [self.mask_value(item) for item in value]
        if type(value) is tuple:  # a plain one: a named tuple is a record, and stays as it is
            return tuple(self.mask_value(item) for item in value)
        return value


#: The secrets of this process.
MASKER: Final = Masker()


class MaskedText(io.TextIOBase):
    """A text stream that masks secrets (:data:`MASKER`) in what is written to it, into ``stream``."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        self.stream.write(MASKER.mask(text))
        return len(text)

    def flush(self) -> None:
        # Closing the wrapper flushes it, and the garbage collector closes it, perhaps after ``stream``
        # was closed (Python 3.13 reports what that raises); a closed stream has nothing to flush.
        if not self.stream.closed:
            self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

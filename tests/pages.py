"""HTML pages as a person would see them: read as text, opened in headless Chromium (Debian's
``chromium``), and the pixels of its screenshots."""

from __future__ import annotations

import html
import re
import shutil
import struct
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path

#: The browser, or None when this machine has none.
CHROMIUM = shutil.which("chromium")


def sections(page: str) -> dict[str, str]:
    """Each rule's section of the page, by the rule's name (as written in its heading)."""
    found = {}
    for part in page.split('<section class="rule"')[1:]:
        heading = re.search(r"<h2>(.*?)</h2>", part)
        assert heading is not None
        found[html.unescape(heading.group(1))] = part.split("</section>")[0]
    return found


def external_references(page: str) -> list[str]:
    """What in the page would load something from elsewhere (or run a script)."""
    patterns = (
        r"""\b(?:src|href|xlink:href|action|srcset|poster|data)\s*=\s*["']?\s*(?:[a-z][a-z0-9+.-]*:)?//""",
        r"<script\b",
        r"<link\b",
        r"<iframe\b|<object\b|<embed\b|<img\b",
        r"@import",
        r"""url\(\s*["']?\s*(?:[a-z][a-z0-9+.-]*:)?//""",
    )
    return [match.group(0) for pattern in patterns for match in re.finditer(pattern, page, re.IGNORECASE)]


def chromium(profile: Path, page: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--enable-logging=stderr",
        "--v=0",
        f"--user-data-dir={profile}",
        *args,
        page.as_uri(),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


def console_messages(stderr: str) -> list[str]:
    """What the page said on its console (errors, uncaught exceptions, failed loads), as Chromium
    logs it with ``--enable-logging=stderr``."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def pixels(png: bytes) -> Iterator[bytes]:
    """The pixels of an 8-bit RGB or RGBA PNG, as bytes of their colour (without alpha), row by row."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    position, chunks = 8, []
    width = height = channels = 0
    while position < len(png):
        length, kind = struct.unpack(">I4s", png[position : position + 8])
        body = png[position + 8 : position + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert (depth, interlace) == (8, 0)
            channels = {2: 3, 6: 4}[colour_type]
        elif kind == b"IDAT":
            chunks.append(body)
        position += 12 + length
    raw = zlib.decompress(b"".join(chunks))
    stride = width * channels
    previous = bytes(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, row = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 2:
            row = bytearray((a + b) & 255 for a, b in zip(row, previous, strict=True))
        elif kind:
            for i in range(stride):
                left = row[i - channels] if i >= channels else 0
                up = previous[i]
                if kind == 1:
                    row[i] = (row[i] + left) & 255
                elif kind == 3:
                    row[i] = (row[i] + ((left + up) >> 1)) & 255
                else:
                    corner = previous[i - channels] if i >= channels else 0
                    guess = left + up - corner
                    near_left, near_up, near_corner = abs(guess - left), abs(guess - up), abs(guess - corner)
                    if near_left <= near_up and near_left <= near_corner:
                        predicted = left
                    else:
                        predicted = up if near_up <= near_corner else corner
                    row[i] = (row[i] + predicted) & 255
        previous = bytes(row)
        for x in range(0, stride, channels):
            yield previous[x : x + 3]


def colour(hex_colour: str) -> bytes:
    return bytes.fromhex(hex_colour.removeprefix("#"))

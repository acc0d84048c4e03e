"""Which files a list of rules sources names, a fingerprint of what they hold, and when it has changed.

A source is a file, or a directory searched recursively for ``*.yaml`` / ``*.yml``, except rules
tests (``*.test.yaml`` / ``*.test.yml``, which ``worker test`` reads). Below a
directory, every path with a part that starts with ``.`` is skipped, and symlinks are followed. That
is how Kubernetes mounts a ConfigMap: each key is a visible symlink, ``rules.yaml ->
..data/rules.yaml``; ``..data`` is a symlink to the hidden directory of the current version,
``..2026_11_29_21_00_00.000000001/``, which holds the files. Read the visible links only, and each
file is read once, under the name the ConfigMap gives it.

An update writes a new hidden directory, points ``..data`` at it (an atomic rename), adds the links
of new keys, removes those of removed keys, and deletes the old directory. The visible paths stay as
they were, so a change shows only in what the files hold: :func:`fingerprint` compares that. Caught
between the rename and the links (a removed key's link dangling, a new key without one), a volume
is *midway*, and :class:`RulesWatch` waits for it to settle rather than reload half an update.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

SUFFIXES: Final = (".yaml", ".yml")
#: Rules tests (``worker test``), kept beside the rules they test: never rules themselves.
TEST_SUFFIXES: Final = (".test.yaml", ".test.yml")
#: The link, in a ConfigMap volume, to the directory of the version in force.
DATA: Final = "..data"


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """What the rules files of some sources hold, at one moment."""

    #: Each file's path, as listed, and a digest of its bytes (None: it could not be read).
    files: tuple[tuple[str, bytes | None], ...]
    #: False when a ConfigMap volume among the sources was caught midway through an update.
    settled: bool = True


class RulesWatch:
    """Decides, check after check, when the rules have changed enough to reload them (pure: the
    caller reads the fingerprints and keeps the time)."""

    def __init__(self, loaded: Fingerprint) -> None:
        """``loaded``: the fingerprint of the rules in force."""
        self._seen = loaded
        self._midway: Fingerprint | None = None

    def changed(self, now: Fingerprint) -> bool:
        """Whether to reload, given the fingerprint of this check: when it differs from the last one
        reloaded for, unless it is midway through an update (seen again unchanged at the next check,
        a midway state is taken as it is: a layout that only looks like an update)."""
        if now == self._seen:
            self._midway = None
            return False
        if not now.settled and now != self._midway:
            self._midway = now
            return False
        self._seen, self._midway = now, None
        return True


def paths_of(sources: Iterable[str | Path]) -> list[Path]:
    """Rules files from files and directories: a file as given; a directory's ``*.yaml`` / ``*.yml``
    at any depth, sorted, leaving out hidden paths and rules tests and following symlinks (see the
    module)."""
    return _listing(sources)[0]


def fingerprint(sources: Iterable[str | Path]) -> Fingerprint:
    """What the rules files of ``sources`` hold now; it differs whenever a file is added, removed or
    changed. It compares content read through each path, not the path or its link: a ConfigMap update
    swaps the directory behind links that stay the same. A file that vanishes between listing and
    reading (a key removed, an old version deleted) counts as absent, as a listing a moment later
    would have it."""
    paths, midway = _listing(sources)
    files: list[tuple[str, bytes | None]] = []
    for path in paths:
        digest: bytes | None
        try:
            digest = hashlib.blake2b(path.read_bytes(), digest_size=16).digest()
        except FileNotFoundError:
            continue
        except OSError:
            digest = None
        files.append((str(path), digest))
    return Fingerprint(tuple(files), settled=not midway)


def _listing(sources: Iterable[str | Path]) -> tuple[list[Path], bool]:
    """The rules files of ``sources``, and whether a ConfigMap volume among them is midway."""
    out: list[Path] = []
    midway = False
    for source in sources:
        path = Path(source)
        if path.is_dir():
            walk = _Walk()
            walk.directory(path)
            out.extend(sorted(walk.found))
            midway = midway or walk.midway
        else:
            out.append(path)
    return out, midway


class _Walk:
    """One directory's walk: the visible rules files below it, and whether a ConfigMap volume in it
    is midway through an update."""

    def __init__(self) -> None:
        self.found: list[Path] = []
        self.midway = False
        self._walked: set[tuple[int, int]] = set()

    def directory(self, directory: Path) -> None:
        """Walk ``directory``. One reached twice (two links to it, or a link to a parent) is walked
        once; one that vanishes or cannot be listed (an old version's, deleted mid-update) holds nothing."""
        try:
            stat = directory.stat()
            with os.scandir(directory) as scan:
                entries = list(scan)
        except OSError:
            return
        if (stat.st_dev, stat.st_ino) in self._walked:
            return
        self._walked.add((stat.st_dev, stat.st_ino))
        visible: set[str] = set()
        dangling = False
        for entry in entries:
            if entry.name.startswith("."):
                continue
            visible.add(entry.name)
            path = directory / entry.name
            try:
                if entry.is_dir():  # follows a symlink
                    self.directory(path)
                elif entry.is_file():
                    if path.suffix in SUFFIXES and not path.name.endswith(TEST_SUFFIXES):
                        self.found.append(path)
                elif entry.is_symlink():
                    dangling = True
            except OSError:
                continue
        if any(entry.name == DATA and entry.is_symlink() for entry in entries):
            self.midway = self.midway or _midway(directory, visible, dangling=dangling)


def _midway(volume: Path, visible: set[str], *, dangling: bool) -> bool:
    """Whether a ConfigMap volume is caught midway through an update: ``..data`` already points at
    the new version, but a removed key's link still dangles, or a new key has no link yet."""
    if dangling:
        return True
    try:
        keys = {name for name in os.listdir(volume / DATA) if not name.startswith(".")}
    except OSError:
        return True
    return not keys <= visible

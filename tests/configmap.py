"""A directory laid out as the kubelet mounts a ConfigMap volume, and updated as the kubelet updates it.

The files of a version live in a hidden directory named for it (``..2026_11_29_21_00_00.000000001``);
``..data`` links to the version in force; each key's first path part is a visible link into
``..data`` (``rules.yaml -> ..data/rules.yaml``, or ``team -> ..data/team`` for ``team/a.yaml``).
An update follows the kubelet's atomic writer, step by step: write the new version's directory, link
``..data_tmp`` to it, rename that over ``..data`` (atomic), add the links of new keys, remove those
of removed keys, delete the old version's directory.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

DATA = "..data"


class ConfigMapVolume:
    """A ConfigMap volume at ``root``, holding ``files`` (key path -> text)."""

    def __init__(self, root: Path, files: dict[str, str]) -> None:
        self.root = root
        self.versions = 0
        root.mkdir(parents=True, exist_ok=True)
        self.update(files)

    def update(self, files: dict[str, str]) -> None:
        """A whole update, as the kubelet makes it when the ConfigMap changes."""
        for _ in self.steps(files):
            pass

    def steps(self, files: dict[str, str]) -> Iterator[str]:
        """The update, one step at a time: after each, yields what was done."""
        self.versions += 1
        version = f"..2026_11_29_21_00_00.{self.versions:09d}"
        (self.root / version).mkdir()
        for key, text in files.items():
            path = self.root / version / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        yield "written"
        data = self.root / DATA
        old = os.readlink(data) if data.is_symlink() else None
        (self.root / "..data_tmp").symlink_to(version)
        yield "linked ..data_tmp"
        os.replace(self.root / "..data_tmp", data)
        yield "renamed over ..data"
        names = {key.split("/")[0] for key in files}
        for name in sorted(names):
            link = self.root / name
            if not link.is_symlink():
                link.symlink_to(f"{DATA}/{name}")
        yield "linked new keys"
        for link in sorted(self.root.iterdir()):
            if not link.name.startswith(".") and link.name not in names:
                link.unlink()
        yield "unlinked removed keys"
        if old is not None:
            shutil.rmtree(self.root / old)
        yield "removed the old version"

    def hidden(self) -> list[Path]:
        """The version directories present (one, between updates)."""
        return sorted(p for p in self.root.iterdir() if p.name.startswith("..") and not p.is_symlink())

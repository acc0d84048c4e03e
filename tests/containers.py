"""A container engine for the tests: the docker client against the engine DOCKER_HOST names
(scripts/container-engine.sh starts one), and a directory laid out as Kubernetes mounts a ConfigMap."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final

#: The hidden directory the kubelet writes a ConfigMap's files to, named for when it wrote them.
CONFIGMAP_STAMP: Final = "..2026_11_30_00_00_00.000000001"


class EngineError(RuntimeError):
    """A docker command failed."""


@dataclass(frozen=True)
class Engine:
    """The docker client, talking to an engine that answered."""

    client: str
    server_version: str

    @classmethod
    def find(cls) -> Engine | str:
        """The engine DOCKER_HOST names (or the client's default), or why there is none to use."""
        host = os.environ.get("DOCKER_HOST") or "the client's default socket (DOCKER_HOST is unset)"
        client = shutil.which("docker")
        if client is None:
            return "no docker client on the PATH (scripts/container-engine.sh start installs one, and an engine)"
        try:
            done = subprocess.run(
                [client, "version", "--format", "{{.Server.Version}}"],
                capture_output=True,
                text=True,
                timeout=20,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return f"the container engine at {host} did not answer within 20 s"
        if done.returncode != 0:
            reason = done.stderr.strip().splitlines()[-1:] or ["no answer"]
            return f"no container engine answers at {host} ({reason[0]}): start one with scripts/container-engine.sh"
        return cls(client, done.stdout.strip())

    def run(self, *args: str, timeout: float = 60) -> str:
        """Run a docker command to its end; its output, or EngineError with what it printed."""
        done = subprocess.run([self.client, *args], capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise EngineError(f"docker {' '.join(args[:2])} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        return done.stdout

    async def arun(self, *args: str, env: dict[str, str] | None = None, within: float = 90, merge: bool = False) -> str:
        """:meth:`run`, without blocking the event loop (servers of the test may run on it); ``merge``:
        its standard error in the output too (``docker logs`` passes the container's on); ``within``: the
        seconds it may take."""
        process = await asyncio.create_subprocess_exec(
            self.client,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT if merge else asyncio.subprocess.PIPE,
            env=env,
        )
        async with asyncio.timeout(within):
            out, err = await process.communicate()
        if process.returncode != 0:
            raise EngineError(
                f"docker {' '.join(args[:2])} failed ({process.returncode}):\n{(err or out).decode()[-3000:]}"
            )
        return out.decode()


def configmap_volume(directory: Path, files: dict[str, str]) -> Path:
    """``directory`` laid out as the kubelet mounts a ConfigMap holding ``files``: the files in a
    hidden, time-stamped directory, ``..data`` a link to it, and each file a link through ``..data``."""
    stamp = directory / CONFIGMAP_STAMP
    stamp.mkdir(parents=True)
    for name, text in files.items():
        (stamp / name).write_text(text)
    (directory / "..data").symlink_to(CONFIGMAP_STAMP)
    for name in files:
        (directory / name).symlink_to(f"..data/{name}")
    return directory

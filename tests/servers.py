"""Real servers for the tests, started as subprocesses on free loopback ports."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[1]
AZURITE_BLOB: Final = ROOT / "node_modules" / ".bin" / "azurite-blob"

#: Azurite's well-known development account (public, the same in every installation).
ACCOUNT: Final = "devstoreaccount1"
ACCOUNT_KEY: Final = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class ServerError(RuntimeError):
    """A test server is missing or did not start."""


@dataclass(frozen=True)
class Azurite:
    """A running Azurite blob service."""

    process: subprocess.Popen[bytes]
    port: int

    @property
    def account_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={self.account_url};"
        )


def free_port() -> int:
    """A loopback TCP port nobody listens on (at the time of asking)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_azurite(location: Path, *, timeout: float = 30.0, executable: Path = AZURITE_BLOB) -> Azurite:
    """Start Azurite's blob service on a free loopback port, keeping its data in ``location``."""
    if not executable.exists():
        raise ServerError(
            "Azurite is not installed (node_modules/.bin/azurite-blob is missing): "
            "run `make setup` (or `npm ci`) at the project root; `make test` does it too"
        )
    location.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = (location / "azurite.log").open("wb")
    process = subprocess.Popen(
        [
            str(executable),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--location",
            str(location),
            "--disableTelemetry",
            "--silent",
            "--skipApiVersionCheck",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    server = Azurite(process, port)
    deadline = time.monotonic() + timeout
    while not _accepts(port):
        if process.poll() is not None or time.monotonic() > deadline:
            stop(server)
            output = (location / "azurite.log").read_text(errors="replace")[-2000:]
            raise ServerError(f"Azurite did not start on port {port} (exit code {process.returncode}):\n{output}")
        time.sleep(0.05)
    return server


def stop(server: Azurite, *, timeout: float = 10.0) -> None:
    """Stop a server started here, killing it if it does not exit in time."""
    process = server.process
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


def _accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False

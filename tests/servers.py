"""Real servers for the tests, started as subprocesses on free loopback ports."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
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
    """A running Azurite blob service, behind the test bed's strict layer (tests/storage_bed.py) on
    ``port``; Azurite itself answers on ``upstream_port``."""

    process: subprocess.Popen[bytes]
    port: int
    #: The strict layer in front of Azurite (None: Azurite answers on ``port`` itself).
    bed: subprocess.Popen[bytes] | None = None
    upstream_port: int | None = None

    @property
    def plain_connection_string(self) -> str:
        """Azurite's own, without the strict layer (to show what it gets wrong)."""
        return self.connection_string.replace(f":{self.port}/", f":{self.upstream_port or self.port}/")

    @property
    def account_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={self.account_url};"
        )


#: The local hub the conformance tests use: its event hub, partitions and consumer groups.
HUB_NAME: Final = "ml-events"
HUB_PARTITIONS: Final = 4
HUB_CONSUMER_GROUPS: Final = ("$Default", "audit")


@dataclass(frozen=True)
class HubServer:
    """A running local hub (``python -m worker localhub``) in a subprocess."""

    process: subprocess.Popen[bytes]
    port: int
    #: The line the hub printed: the connection string to use.
    connection_string: str


def free_port() -> int:
    """A loopback TCP port nobody listens on (at the time of asking)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_azurite(
    location: Path,
    *,
    timeout: float = 30.0,
    executable: Path = AZURITE_BLOB,
    port: int | None = None,
    strict: bool = True,
) -> Azurite:
    """Start Azurite's blob service on a free loopback port (or ``port``: to start it again after stopping
    it, on the same data), keeping its data in ``location``; behind the strict layer of
    tests/storage_bed.py unless ``strict`` is off."""
    if not executable.exists():
        raise ServerError(
            "Azurite is not installed (node_modules/.bin/azurite-blob is missing): "
            "run `make setup` (or `npm ci`) at the project root; `make test` does it too"
        )
    location.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    upstream = free_port() if strict else port
    log = (location / "azurite.log").open("ab")
    process = subprocess.Popen(
        [
            str(executable),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(upstream),
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
    plain = Azurite(process, upstream)
    _wait_until_accepting(plain, "Azurite", location / "azurite.log", timeout=timeout)
    if not strict:
        return plain
    bed_log = (location / "storage-bed.log").open("ab")
    bed = subprocess.Popen(
        [sys.executable, "-m", "tests.storage_bed", "--port", str(port), "--upstream", str(upstream)],
        cwd=ROOT,
        stdout=bed_log,
        stderr=subprocess.STDOUT,
    )
    bed_log.close()
    server = Azurite(process, port, bed, upstream)
    _wait_until_accepting(server, "the storage bed", location / "storage-bed.log", timeout=timeout, process=bed)
    return server


def start_localhub(
    location: Path, *, timeout: float = 30.0, retention_events: int = 100_000, options: Sequence[str] = ()
) -> HubServer:
    """Start the local hub on a free loopback port, with more command ``options``; its log goes to ``location``."""
    location.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [sys.executable, "-m", "worker", "localhub", "--port", str(port), "--eventhub", HUB_NAME]
    command += ["--partitions", str(HUB_PARTITIONS), "--retention-events", str(retention_events)]
    for group in HUB_CONSUMER_GROUPS[1:]:
        command += ["--consumer-group", group]
    command += options
    log = (location / "localhub.log").open("wb")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, cwd=ROOT)
    log.close()
    assert process.stdout is not None
    line = process.stdout.readline().decode().strip()  # printed once listening; EOF if it died
    server = HubServer(process, port, line)
    _wait_until_accepting(server, "the local hub", location / "localhub.log", timeout=timeout)
    return server


def _wait_until_accepting(
    server: Azurite | HubServer,
    name: str,
    log: Path,
    *,
    timeout: float,
    process: subprocess.Popen[bytes] | None = None,
) -> None:
    """Return once the server accepts connections; stop it and raise ServerError if it (or ``process``,
    what answers on its port) dies or takes too long."""
    process, port = process or server.process, server.port
    deadline = time.monotonic() + timeout
    while not _accepts(port):
        if process.poll() is not None or time.monotonic() > deadline:
            stop(server)
            output = log.read_text(errors="replace")[-2000:]
            raise ServerError(f"{name} did not start on port {port} (exit code {process.returncode}):\n{output}")
        time.sleep(0.05)


def stop(server: Azurite | HubServer, *, timeout: float = 10.0) -> None:
    """Stop a server started here (the strict layer first, then Azurite), killing it if it does not exit
    in time."""
    if isinstance(server, Azurite) and server.bed is not None:
        _stop(server.bed, timeout)
    _stop(server.process, timeout)


def _stop(process: subprocess.Popen[bytes], timeout: float) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
    if process.stdout is not None:
        process.stdout.close()


def _accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False

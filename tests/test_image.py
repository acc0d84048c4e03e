"""The container image, built and run as deploy/ runs it: a read-only root with a writable working
directory, no capabilities, the rules mounted as a ConfigMap is; against the local hub and Azurite.

Skipped where no container engine answers (DOCKER_HOST): scripts/container-engine.sh starts one.
"""

from __future__ import annotations

import fcntl
import os
import uuid
from pathlib import Path

import aiohttp
import pytest

from tests.containers import Engine, EngineError, configmap_volume
from tests.live import checkpoints, events, ids_of, local_hub, owners, send, wait_for
from tests.servers import ROOT, Azurite, free_port
from tests.targets import HttpTarget

# The first build of a test run may download every dependency; later ones take the engine's cache.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900), pytest.mark.usefixtures("sdk_garbage")]

TAG = "azureml-events-worker:test"
#: The image's working directory, the one place it may write.
WORKDIR = "/var/lib/worker"
#: A rule acting on every event with a webhook to the test's target, the event's id in the path.
RULES = """
rules:
  - name: every-event
    filter: {}
    actions:
      - type: webhook
        url: "URL/events/{{ id }}"
"""

#: Run in the image: which modules the worker loads have no bytecode that Python can use as it is.
BYTECODE_CHECK = """
import importlib.util, os, sys
import worker.cli, worker.live.run, worker.live.child
for module in list(sys.modules.values()):
    source = getattr(getattr(module, "__spec__", None), "origin", None) or ""
    if not source.endswith(".py"):
        continue
    cached = importlib.util.cache_from_source(source)
    if not os.path.exists(cached):
        print("missing", source)
        continue
    with open(cached, "rb") as pyc:
        header = pyc.read(16)
    flags = int.from_bytes(header[4:8], "little")
    mtime = int.from_bytes(header[8:12], "little")
    if flags & 1 and flags & 2:
        print("checked", source)
    elif not flags & 1 and mtime != int(os.stat(source).st_mtime) & 0xFFFFFFFF:
        print("stale", source)
print(len(sys.modules), "modules")
"""
INSTALLERS_CHECK = "import importlib.util as u; print([m for m in ('pip', 'setuptools', 'wheel') if u.find_spec(m)])"


LOCAL_HUB_CHECK = (
    "import importlib.util as u; print([u.find_spec(m) for m in ('worker.localhub', 'proton', 'wsproto')])"
)


@pytest.fixture(scope="module")
def engine() -> Engine:
    found = Engine.find()
    if isinstance(found, str):
        pytest.skip(found)
    return found


@pytest.fixture(scope="module")
def image(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The image, built from the checkout (pip reaches the package index through the host's network).

    One build at a time, whichever test process asks (the folder above the process's own temporary
    one is the run's, pytest-xdist's workers included): the next build finds every layer cached."""
    lock = tmp_path_factory.getbasetemp().parent / "image-build.lock"
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        engine.run("build", "--network", "host", "--force-rm", "--tag", TAG, str(ROOT), timeout=840)
    return TAG


def test_the_image_runs_from_compiled_code_and_holds_no_installer(engine: Engine, image: str) -> None:
    def python(interpreter: str, code: str) -> str:
        run = ["run", "--rm", "--read-only", "--network", "none", "--cap-drop", "ALL"]
        return engine.run(*run, "--entrypoint", interpreter, image, "-c", code).strip()

    report = python("python", BYTECODE_CHECK).splitlines()
    assert report[:-1] == []  # every module the worker loads, the standard library's too
    assert int(report[-1].split()[0]) > 500
    # Neither the worker's environment nor the interpreter under it keeps pip, setuptools or wheel.
    assert python("python", INSTALLERS_CHECK) == "[]"
    assert python("/usr/local/bin/python", INSTALLERS_CHECK) == "[]"
    config = engine.run("image", "inspect", "--format", "{{.Config.WorkingDir}} {{.Config.User}}", image).split()
    assert config == [WORKDIR, "10001:10001"]
    # The local hub, a development and test tool, is left out with its dependencies, and says so.
    assert python("python", LOCAL_HUB_CHECK) == "[None, None, None]"
    with pytest.raises(EngineError, match=r"(?s)failed \(2\).*the local hub is not installed here"):
        engine.run("run", "--rm", "--read-only", "--network", "none", image, "localhub")


async def test_the_image_runs_read_only_acts_checkpoints_and_stops_on_sigterm(
    engine: Engine, image: str, azurite: Azurite, http_target: HttpTarget, tmp_path: Path
) -> None:
    rules = configmap_volume(tmp_path / "rules", {"rules.yaml": RULES.replace("URL", http_target.url)})
    work = tmp_path / "work"
    work.mkdir()
    work.chmod(0o777)  # the image's user (uid 10001) writes there
    name = f"azml-image-{uuid.uuid4().hex[:8]}"
    container = f"image-{uuid.uuid4().hex[:12]}"
    port = free_port()  # not the image's 8080: the health check must follow WORKER_HTTP_PORT
    async with local_hub("image") as hub:
        settings = {
            "WORKER_EVENTHUB_CONNECTION_STRING": hub.connection_string(),
            "WORKER_STORAGE_CONNECTION_STRING": azurite.connection_string,
            "WORKER_CHECKPOINT_CONTAINER": container,
            "WORKER_HTTP_HOST": "127.0.0.1",
            "WORKER_HTTP_PORT": str(port),
            "WORKER_LOAD_BALANCING_INTERVAL": "1",
            "WORKER_CHECKPOINT_INTERVAL": "0.5",
            "WORKER_REORDER_WINDOW": "0.5",
            "WORKER_MAX_WAIT": "0.2",
            "WORKER_LATE_POLICY": "process",
        }
        # Named only: their values (secrets among them) reach docker through its environment, not its arguments.
        passed = [arg for variable in settings for arg in ("--env", variable)]
        await engine.arun(
            *("run", "--detach", "--name", name, "--network", "host"),
            *("--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"),
            *("--volume", f"{work}:{WORKDIR}", "--volume", f"{rules}:/etc/worker/rules:ro"),
            *("--health-interval", "1s", *passed, image),
            env={**os.environ, **settings},
        )
        stopped = False
        try:
            await wait_for(lambda: _answers(port, "/readyz"), 60, "the worker in the container to be ready")

            sent = events(200, seed=21)
            report = await send(hub, sent)

            async def acted() -> bool:
                return {received.path.rpartition("/")[2] for received in http_target.requests} == ids_of(sent)

            await wait_for(acted, 60, "a webhook for every event sent")
            namespace = f"127.0.0.1:{hub.port}"
            expected = {p: n - 1 for p, n in report.by_partition.items() if n}

            async def checkpointed() -> bool:
                return await checkpoints(azurite, container, namespace, "image") == expected

            await wait_for(checkpointed, 60, "each partition's checkpoint at its last event")

            async def healthy() -> bool:
                state = await engine.arun("inspect", "--format", "{{.State.Health.Status}}", name)
                return state.strip() == "healthy"

            await wait_for(healthy, 30, "the image's health check to pass on WORKER_HTTP_PORT")

            await engine.arun("stop", "--time", "60", name)  # SIGTERM, the image's STOPSIGNAL
            stopped = True
            state = await engine.arun("inspect", "--format", "{{.State.ExitCode}} {{.State.OOMKilled}}", name)
            assert state.split() == ["0", "false"]
            released = await owners(azurite, container, namespace, "image")
            assert set(released) == set(expected)
            assert set(released.values()) == {""}
            assert len(http_target.requests) == len(ids_of(sent))  # nothing acted on twice
        finally:
            logs = await _logs(engine, name)
            await engine.arun("rm", "--force", name)
            print(f"the worker's log (stopped: {stopped}):\n{logs}")  # shown when the test fails


async def _answers(port: int, path: str) -> bool:
    try:
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}{path}") as response:
            return response.status == 200
    except aiohttp.ClientConnectionError:
        return False


async def _logs(engine: Engine, name: str) -> str:
    try:
        return (await engine.arun("logs", "--tail", "200", name, merge=True))[-20_000:]
    except EngineError as error:
        return f"(no log: {error})"

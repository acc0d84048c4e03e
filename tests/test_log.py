"""One log stream: the worker's events and the libraries' logging records, rendered alike, secrets masked."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import uuid
import warnings
from pathlib import Path

import orjson
import pytest
import structlog

from tests.live import RULES, Actions, events, local_hub, send, start_worker, stop_worker, wait_for, worker_env
from tests.servers import ROOT, Azurite, free_port
from worker.cli import main
from worker.log import configure, log_loop_exception

#: A connection string's key, masked by its shape wherever it shows.
KEY = "c2VjcmV0LWtleS1vZi10aGUtaHVi"
CONNECTION_STRING = f"Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=listen;SharedAccessKey={KEY}"
#: A console line without its colours: time, [level], event, [logger].
CONSOLE_LINE = re.compile(r"^\S+Z \[(?P<level>\w+)\s*\] (?P<event>.+?)\s+\[(?P<logger>[\w.]+)\]")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def lines(text: str) -> list[dict[str, object]]:
    """Every line of ``text`` as a JSON object: fails on the first line that is not one."""
    out = []
    for line in text.splitlines():
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            pytest.fail(f"not a JSON line: {line!r}")
        assert isinstance(entry, dict), line
        out.append(entry)
    return out


def test_a_library_record_is_one_json_line_naming_its_logger_with_secrets_masked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure("info", "json")
    logging.getLogger("azure.eventhub._pyamqp").warning("connection to %s failed", CONNECTION_STRING)
    [entry] = lines(capsys.readouterr().err)
    assert entry["level"] == "warning"
    assert entry["logger"] == "azure.eventhub._pyamqp"
    assert entry["event"] == f"connection to {CONNECTION_STRING.replace(KEY, '***')} failed"
    assert isinstance(entry["timestamp"], str)
    assert entry["timestamp"].endswith("Z")


def test_the_workers_own_events_name_their_logger(capsys: pytest.CaptureFixture[str]) -> None:
    configure("info", "json")
    structlog.get_logger("worker.receiver").info("receiver.started", eventhub="ml-events")
    [entry] = lines(capsys.readouterr().err)
    assert entry == {
        "event": "receiver.started",
        "eventhub": "ml-events",
        "level": "info",
        "logger": "worker.receiver",
        "timestamp": entry["timestamp"],
    }


def test_a_library_records_traceback_stays_inside_its_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    configure("info", "json")

    def divide() -> float:
        return 1 / len(f"SharedAccessKey={KEY}".split("=")[2:])

    try:
        divide()
    except ZeroDivisionError:
        logging.getLogger("asyncio").exception("Task exception was never retrieved")
    err = capsys.readouterr().err
    [entry] = lines(err)
    assert entry["level"] == "error"
    assert entry["logger"] == "asyncio"
    assert entry["event"] == "Task exception was never retrieved"
    assert isinstance(entry["exception"], str)
    assert entry["exception"].startswith("Traceback (most recent call last):")
    assert "ZeroDivisionError" in entry["exception"]
    assert "SharedAccessKey=***" in entry["exception"]  # the traceback's source line, masked
    assert KEY not in err


@pytest.mark.parametrize(
    ("library_level", "shown"),
    [
        (None, ["warning"]),  # the default
        ("info", ["info", "warning"]),
        ("error", []),
    ],
)
def test_libraries_log_from_warning_unless_raised(
    capsys: pytest.CaptureFixture[str], library_level: str | None, shown: list[str]
) -> None:
    if library_level is None:
        configure("debug", "json")
    else:
        configure("debug", "json", library_level)
    for name in ("azure.eventhub", "uamqp", "aiohttp.client"):
        logging.getLogger(name).info("chatty")
        logging.getLogger(name).warning("worth knowing")
    structlog.get_logger("worker.run").debug("worker.detail")  # the worker's own level is its own
    entries = lines(capsys.readouterr().err)
    library = [entry for entry in entries if not str(entry["logger"]).startswith("worker.")]
    assert sorted({str(entry["level"]) for entry in library}) == shown
    assert len(library) == 3 * len(shown)
    assert [entry["event"] for entry in entries if entry["logger"] == "worker.run"] == ["worker.detail"]


def test_the_workers_level_does_not_hold_back_a_raised_library_level(capsys: pytest.CaptureFixture[str]) -> None:
    configure("warning", "json", "info")
    logging.getLogger("azure.eventhub").info("claimed partition 0")
    structlog.get_logger("worker.run").info("worker.started")
    assert [(e["logger"], e["event"]) for e in lines(capsys.readouterr().err)] == [
        ("azure.eventhub", "claimed partition 0")
    ]


def test_console_lines_render_library_records_as_the_workers_own(capsys: pytest.CaptureFixture[str]) -> None:
    configure("info", "console")
    structlog.get_logger("worker.run").warning("dead_letters.local", directory="dead-letters")
    logging.getLogger("azure.eventhub").warning("ownership of %s lost; SharedAccessKey=%s", "0", KEY)
    err = capsys.readouterr().err
    first, second = (CONSOLE_LINE.match(ANSI.sub("", line)) for line in err.splitlines())
    assert first is not None
    assert second is not None
    assert first.group("level", "event", "logger") == ("warning", "dead_letters.local", "worker.run")
    assert second.group("level", "event", "logger") == (
        "warning",
        "ownership of 0 lost; SharedAccessKey=***",
        "azure.eventhub",
    )
    assert KEY not in err


def test_pythons_warnings_are_records_too(capsys: pytest.CaptureFixture[str]) -> None:
    configure("info", "json")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("a deprecated option", UserWarning, stacklevel=1)
    [entry] = lines(capsys.readouterr().err)
    assert entry["logger"] == "py.warnings"
    assert entry["level"] == "warning"
    assert "UserWarning: a deprecated option" in str(entry["event"])


def test_configuring_again_replaces_the_handler(capsys: pytest.CaptureFixture[str]) -> None:
    configure("info", "console")
    configure("info", "json")
    logging.getLogger("azure.eventhub").warning("once")
    assert [e["event"] for e in lines(capsys.readouterr().err)] == ["once"]


async def test_an_exception_no_one_retrieved_is_a_log_event(capsys: pytest.CaptureFixture[str]) -> None:
    configure("info", "json")
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(log_loop_exception)
    done = asyncio.Event()

    def fail() -> None:
        raise RuntimeError("a callback failed")

    try:
        loop.call_soon(fail)
        loop.call_soon(done.set)  # callbacks run in order: by then, fail() has raised and been handled
        await done.wait()
    finally:
        loop.set_exception_handler(None)
    [entry] = lines(capsys.readouterr().err)
    assert entry["event"] == "loop.exception"
    assert entry["logger"] == "worker.log"
    assert entry["level"] == "error"
    assert str(entry["message"]).startswith("Exception in callback")
    assert "RuntimeError: a callback failed" in str(entry["exception"])


def test_invalid_settings_end_the_run_with_a_log_event_in_the_format_asked_for(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.upper().startswith("WORKER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("WORKER_LOG_FORMAT", "json")
    assert main(["run", "--max-wait", "soon"]) == 2
    entries = lines(capsys.readouterr().err)
    last = entries[-1]
    assert (last["event"], last["level"], last["logger"], last["kind"]) == (
        "worker.failed",
        "error",
        "worker.cli",
        "settings",
    )
    assert isinstance(last["problems"], list)
    assert any(
        str(p).startswith("WORKER_MAX_WAIT (--max-wait): Input should be a valid number") for p in last["problems"]
    )


def test_invalid_rules_end_the_run_with_a_log_event(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - name: no-actions\n    filter: {}\n")
    args = ["run", "--eventhub-connection-string", CONNECTION_STRING + ";EntityPath=hub", "--log-format", "json"]
    args += ["--checkpoint-dir", str(tmp_path / "checkpoints"), "--rules", str(rules), "--http-port", "0"]
    assert main(args) == 2
    last = lines(capsys.readouterr().err)[-1]
    assert (last["event"], last["kind"]) == ("worker.failed", "rules")
    assert "no-actions" in str(last["error"])


# --- a real worker, its stderr read back ---------------------------------------------------------


def read_log(cwd: Path) -> list[dict[str, object]]:
    return lines((cwd / "worker.log").read_text())


@pytest.mark.integration
@pytest.mark.usefixtures("sdk_garbage")
@pytest.mark.timeout(180)
@pytest.mark.parametrize("library_level", ["info", None])
async def test_a_live_worker_writes_nothing_but_json_lines(
    tmp_path: Path, azurite: Azurite, library_level: str | None
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    cwd = tmp_path / "worker"
    name = f"log-{uuid.uuid4().hex[:8]}"
    settings = {} if library_level is None else {"library_log_level": library_level}
    async with local_hub(name) as hub:
        published = events(40, seed=11, duplicates=0)
        process = await start_worker(worker_env(hub, azurite, name, rules, **settings), cwd)
        try:
            await send(hub, published)

            async def acted() -> bool:
                return len(Actions.read(cwd / "actions.jsonl").per_event) == len(published)

            await wait_for(acted, 60, "the worker to act on every event")
        finally:
            assert await stop_worker(process) == 0
    entries = read_log(cwd)  # every line is a JSON object...
    for entry in entries:
        assert {"level", "logger", "event", "timestamp"} <= entry.keys(), entry
    loggers = {str(entry["logger"]) for entry in entries}
    assert {"worker.run", "worker.childprocess", "worker.inprocess"} <= loggers  # the pipeline process logs too
    sdk_info = [e for e in entries if str(e["logger"]).startswith("azure.") and e["level"] == "info"]
    if library_level == "info":
        assert sdk_info  # ...the SDK's records among them
    else:
        assert sdk_info == []  # at the default level, the SDK's chatter is left out
    assert entries[-1]["event"] == "worker.stopped"


@pytest.mark.integration
@pytest.mark.usefixtures("sdk_garbage")
@pytest.mark.timeout(120)
async def test_a_worker_whose_hub_does_not_answer_ends_on_a_json_line_saying_so(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    cwd = tmp_path / "worker"
    hub = (
        f"Endpoint=sb://127.0.0.1:{free_port()}/;SharedAccessKeyName=k;SharedAccessKey={KEY};EntityPath=hub;"
        "UseDevelopmentEmulator=true"
    )
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("WORKER_")}
    env.update(
        WORKER_EVENTHUB_CONNECTION_STRING=hub,
        WORKER_CHECKPOINT_DIR=str(tmp_path / "checkpoints"),
        WORKER_RULES=str(rules),
        WORKER_LOG_FORMAT="json",
        WORKER_HTTP_PORT="0",
        PYTHONPATH=str(ROOT),
    )
    process = await start_worker(env, cwd)
    try:
        async with asyncio.timeout(90):  # the SDK tries a few times first
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert code == 1
    entries = read_log(cwd)
    for entry in entries:
        assert {"level", "logger", "event", "timestamp"} <= entry.keys(), entry
    last = entries[-1]
    assert (last["event"], last["level"], last["kind"]) == ("worker.failed", "error", "hub"), last
    assert "the Event Hub or the checkpoint store failed" in str(last["error"])
    assert KEY not in (cwd / "worker.log").read_text()

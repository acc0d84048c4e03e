"""What traces cost: ``worker run`` on a steady stream, untraced, traced with every span sampled, and 1 in 10.

Events are published at 1,000 a second (``--rate``) for 30 seconds (``--seconds``) to a fresh local
hub for each run; one rule acts on every event with a webhook to a local HTTP target, so that a
traced event makes every kind of span: the event's, its attempt's and its request's (and the Event
Hubs SDK's own, through azure-core). Tracing on means ``OTEL_EXPORTER_OTLP_ENDPOINT`` naming a local
OTLP/HTTP collector (this process, counting the spans it is sent) and ``OTEL_TRACES_SAMPLER``
``always_on`` (or ``parentbased_traceidratio`` at 0.1: the spans of one event in ten). Printed: the
CPU per event of each of the worker's processes (the receiving process and the pipeline process,
read from /proc over the stream, from just before its first event to its last event's outcome),
untraced and traced, and what tracing adds per event; and the spans the collector received. The
runs share this machine's noise, so the difference is what is quoted; ``--rounds`` alternates them.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from bench.bench_worker import bodies, local_hub, outcomes, pipeline_process, scrape, stream, wait_acting, worker_env
from bench.processes import cpu_seconds
from tests.servers import free_port

RULES = """\
rules:
  - name: every-event
    filter: {}
    actions:
      - type: webhook
        url: "URL/hook"
"""


class Servers:
    """The webhook target and the OTLP collector, on an event loop of their own in a thread."""

    def __init__(self) -> None:
        self.target_port, self.collector_port = free_port(), free_port()
        self.requests = 0
        self.spans = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _hook(self, request: web.Request) -> web.Response:
        await request.read()
        self.requests += 1
        return web.Response(status=204)

    async def _traces(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        export = ExportTraceServiceRequest.FromString(body)
        self.spans += sum(len(scope.spans) for rs in export.resource_spans for scope in rs.scope_spans)
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(), content_type="application/x-protobuf"
        )

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        for port, route, handler in (
            (self.target_port, "/hook", self._hook),
            (self.collector_port, "/v1/traces", self._traces),
        ):
            app = web.Application(client_max_size=64 * 1024**2)
            app.router.add_post(route, handler)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(30)


@contextmanager
def servers() -> Iterator[Servers]:
    running = Servers()
    running.start()
    yield running  # the thread is a daemon: it ends with the benchmark


#: The runs of a round: a name, and the sampler (None: untraced).
CONFIGS: tuple[tuple[str, dict[str, str] | None], ...] = (
    ("untraced", None),
    ("every span", {"OTEL_TRACES_SAMPLER": "always_on"}),
    ("1 event in 10", {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}),
)


def run_once(
    servers: Servers, sampler: dict[str, str] | None, rate: int, seconds: int, partitions: int, work: Path
) -> tuple[float, float]:
    """CPU seconds per event of the receiving and the pipeline process, over one stream."""
    rules = work / "rules.yaml"
    rules.write_text(RULES.replace("URL", f"http://127.0.0.1:{servers.target_port}"))
    count = rate * seconds
    deliveries = bodies(count, seed=11)
    extra = {"WORKER_LOG_LEVEL": "warning", "WORKER_REORDER_WINDOW": "0.5"}
    if sampler is not None:
        extra |= {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{servers.collector_port}", **sampler}
    port = free_port()
    with local_hub(work.name, partitions, count * 2) as connection:
        env = worker_env(connection, work, rules, port, **extra)
        with (work / "worker.log").open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "worker", "run"], env=env, cwd=work, stdout=log, stderr=log
            )
        try:
            wait_acting(port, partitions)
            child = pipeline_process(process.pid)
            before = cpu_seconds(process.pid), cpu_seconds(child)
            requests = servers.requests
            asyncio.run(stream(connection, deliveries, rate))
            while outcomes(scrape(port)) < count or servers.requests - requests < count:
                time.sleep(0.05)
            after = cpu_seconds(process.pid), cpu_seconds(child)
        finally:
            process.terminate()
            process.wait(60)
    return (after[0] - before[0]) / count, (after[1] - before[1]) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=1000, help="events per second")
    parser.add_argument("--seconds", type=int, default=30, help="length of each stream")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2, help="untraced and traced runs, alternated")
    args = parser.parse_args()
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in CONFIGS}
    count = args.rate * args.seconds
    with servers() as running, tempfile.TemporaryDirectory() as scratch:
        for n in range(args.rounds):
            for index, (name, sampler) in enumerate(CONFIGS):
                (work := Path(scratch) / f"run-{n}-{index}").mkdir()
                spans = running.spans
                runs[name].append(run_once(running, sampler, args.rate, args.seconds, args.partitions, work))
                if sampler is not None:
                    print(f"  round {n + 1}, {name}: {running.spans - spans:,} spans received for {count:,} events")
    print(
        f"traces at {args.rate:,} events/s for {args.seconds} s on {args.partitions} partitions, one webhook per "
        f"event ({args.rounds} rounds, medians): CPU per event"
    )
    off = [statistics.median(run[index] for run in runs["untraced"]) for index in (0, 1)]
    for name, _ in CONFIGS:
        cells = []
        for index, process in enumerate(("receiving", "pipeline")):
            value = statistics.median(run[index] for run in runs[name])
            extra = f" (+{(value - off[index]) * 1e6:5.1f} µs, {value / off[index]:.2f}x)" if name != "untraced" else ""
            cells.append(f"{process} {value * 1e6:6.1f} µs{extra}")
        print(f"  {name:<14} " + ", ".join(cells))


if __name__ == "__main__":
    main()

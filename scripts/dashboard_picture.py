"""The picture of the Grafana dashboard in docs/monitoring.md, from a real run.

    python -m scripts.dashboard_picture [--seconds 240] [--out docs/images/dashboard.png]

Runs two workers (``worker run`` subprocesses, one consumer group) on a local hub of 4 partitions
with a stream of Azure ML events and a burst, acting through webhooks on a local target that fails
now and then (retries, dead letters) and on one that is down (an open circuit); Debian's
``prometheus`` scrapes them every 2 s. Then every panel of ``deploy/monitoring/dashboard.json`` is
drawn with its own queries, run against that Prometheus over the run, laid out as the dashboard lays
it out, and Chromium takes the picture. Grafana draws the same queries; this draws them without it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import html
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

import aiohttp
from aiohttp import web

from scripts.monitoring import DASHBOARD, ROOT
from tests.servers import free_port
from worker.localhub.hub import LocalHub
from worker.localhub.store import HubSpec
from worker.sending import mlevents
from worker.sending.publish import plan, publish

#: Prometheus's scrape interval here, and the rate window standing in for Grafana's ``$__rate_interval``.
SCRAPE: Final = 2
RATE_WINDOW: Final = "20s"
#: Grafana's dark theme, near enough.
STYLE: Final = """
body{margin:0;background:#111217;font:12px Inter,Helvetica,Arial,sans-serif;color:#ccccdc}
.board{display:grid;grid-template-columns:repeat(24,1fr);grid-auto-rows:30px;gap:8px;padding:12px;width:1576px}
.row{font-size:15px;font-weight:600;color:#fff;align-self:end}
.panel{background:#181b1f;border:1px solid #2c3235;border-radius:2px;padding:6px 8px;overflow:hidden;
  display:flex;flex-direction:column}
.title{font-weight:600;color:#fff;margin-bottom:4px}
.stat{display:flex;gap:18px;align-items:baseline;flex:1} .stat b{font-size:30px;color:#73bf69}
.legend{display:flex;flex-wrap:wrap;gap:2px 10px;font-size:11px}
.legend i{display:inline-block;width:10px;height:3px;margin-right:4px;vertical-align:middle}
svg{flex:1}
"""
COLOURS: Final = ("#7eb26d", "#eab839", "#6ed0e0", "#ef843c", "#e24d42", "#1f78c1", "#ba43a9", "#705da0")

RULES: Final = """
rules:
  - name: tell-the-team
    filter: {{}}
    actions:
      - type: webhook
        url: http://127.0.0.1:{flaky}/hook
        retry: {{attempts: 3, first_delay: 0.5, max_delay: 2}}
  - name: trigger-deployment
    filter:
      includedEventTypes: [Microsoft.MachineLearningServices.ModelDeployed]
    actions:
      - type: webhook
        url: http://127.0.0.1:{down}/deploy
        retry: {{attempts: 4, first_delay: 1, max_delay: 5}}
"""


@contextlib.asynccontextmanager
async def _flaky_target() -> AsyncIterator[int]:
    """A webhook target: one request in six answered 503 (retried), one in twenty-five 400 (dead letter)."""
    seen = 0

    async def hook(request: web.Request) -> web.Response:
        nonlocal seen
        seen += 1
        this = seen
        await request.read()
        await asyncio.sleep(0.05)
        if this % 25 == 0:
            return web.Response(status=400, text="refused")
        return web.Response(status=503 if this % 6 == 0 else 200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield port
    finally:
        await runner.cleanup()


def _prometheus(root: Path, targets: list[int]) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("prometheus")
    if binary is None:
        raise SystemExit("no prometheus on this machine (Debian's package: prometheus)")
    port = free_port()
    config = root / "prometheus.yml"
    config.write_text(
        json.dumps(
            {
                "global": {"scrape_interval": f"{SCRAPE}s", "evaluation_interval": f"{SCRAPE}s"},
                "scrape_configs": [
                    {
                        "job_name": "azureml-events-worker",
                        "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in targets]}],
                    }
                ],
            }
        )
    )
    log = (root / "prometheus.log").open("wb")
    process = subprocess.Popen(  # noqa: S603 - Debian's prometheus, with our own arguments
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={root / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return process, port


async def run(seconds: float, root: Path) -> tuple[subprocess.Popen[bytes], int, float, float]:
    """The run: Prometheus (still running: stop it) and its port, and the run's start and end (epoch
    seconds)."""
    async with LocalHub([HubSpec("ml-events", 4, ("$Default",))]) as hub, _flaky_target() as flaky:
        rules = root / "rules.yaml"
        rules.write_text(RULES.format(flaky=flaky, down=free_port()))
        ports = [free_port(), free_port()]
        env = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_")}
        env.update(
            WORKER_EVENTHUB_CONNECTION_STRING=hub.connection_string(),
            WORKER_CHECKPOINT_DIR=str(root / "checkpoints"),
            WORKER_RULES=str(rules),
            WORKER_LOAD_BALANCING_INTERVAL="2",
            WORKER_REORDER_WINDOW="1",
            WORKER_CHECKPOINT_INTERVAL="2",
            WORKER_STALL_TIMEOUT="8",  # the lag read every 2 s
            WORKER_PREFETCH="100",  # a backlog stays in the hub, where the lag shows it
            WORKER_BATCH_SIZE="50",
            WORKER_DEAD_LETTERS=str(root / "dead-letters"),
            WORKER_LOG_FORMAT="json",
            WORKER_HTTP_HOST="127.0.0.1",
            PYTHONPATH=str(ROOT),
        )
        prometheus, prometheus_port = _prometheus(root, ports)
        workers = []
        start = time.time()
        try:
            for n, port in enumerate(ports):
                (root / f"w{n}").mkdir()
                with (root / f"w{n}" / "worker.log").open("wb") as log:
                    workers.append(
                        await asyncio.create_subprocess_exec(
                            sys.executable,
                            "-m",
                            "worker",
                            "run",
                            env={**env, "WORKER_HTTP_PORT": str(port)},
                            cwd=root / f"w{n}",
                            stdout=log,
                            stderr=subprocess.STDOUT,
                        )
                    )
                await asyncio.sleep(seconds / 8)  # the second joins the first: a partition moves
            await _stream(hub, seconds - seconds / 8)
            end = time.time()
        finally:
            for worker in workers:
                worker.terminate()
            for worker in workers:
                await worker.wait()
        return prometheus, prometheus_port, start, end


async def _stream(hub: LocalHub, seconds: float) -> None:
    """Events at 15 a second, with a burst of 6,000 a third of the way in."""
    generated = mlevents.generate(int(seconds * 15) + 6000, mlevents.Options(seed=7))
    deliveries = list(mlevents.deliveries(generated, shuffle=10, duplicates=0.02, seed=7))
    burst_at, sent, started = seconds / 3, 0, time.monotonic()
    burst = deliveries[:6000]
    steady = deliveries[6000:]
    while (elapsed := time.monotonic() - started) < seconds:
        if burst and elapsed >= burst_at:
            await publish(hub.connection_string(), plan(burst, "subject"))
            burst = []
        due = int(elapsed * 15)
        if due > sent:
            await publish(hub.connection_string(), plan(steady[sent:due], "subject"))
            sent = due
        await asyncio.sleep(0.2)


async def _series(prometheus: int, start: float, end: float) -> dict[str, list[tuple[str, list[list[Any]]]]]:
    """Each query of the dashboard, over the run: its series, by legend."""
    board = json.loads(DASHBOARD.read_text())
    out: dict[str, list[tuple[str, list[list[Any]]]]] = {}
    async with aiohttp.ClientSession(f"http://127.0.0.1:{prometheus}") as http:
        for panel in board["panels"]:
            for target in panel.get("targets", ()):
                query = target["expr"].replace('"$job"', '".+"').replace("$__rate_interval", RATE_WINDOW)
                params = {"query": query, "start": str(start), "end": str(end), "step": str(SCRAPE)}
                async with http.get("/api/v1/query_range", params=params) as response:
                    answer = await response.json()
                if answer.get("status") != "success":
                    raise SystemExit(f"{panel['title']}: {query}: {answer}")
                for result in answer["data"]["result"]:
                    legend = target["legendFormat"]
                    for name, value in result["metric"].items():
                        legend = legend.replace("{{" + name + "}}", value)
                    out.setdefault(target["expr"], []).append((legend, result["values"]))
    return out


def page(series: dict[str, list[tuple[str, list[list[Any]]]]], start: float, end: float) -> str:
    """The dashboard as a page: its rows and panels where its grid puts them."""
    board = json.loads(DASHBOARD.read_text())
    cells = []
    for panel in board["panels"]:
        grid = panel["gridPos"]
        place = f"grid-column:{grid['x'] + 1}/span {grid['w']};grid-row:{grid['y'] + 1}/span {grid['h']}"
        title = html.escape(panel["title"])
        if panel["type"] == "row":
            cells.append(f'<div class="row" style="{place}">{title}</div>')
            continue
        unit = panel["fieldConfig"]["defaults"]["unit"]
        lines = [(legend, values) for t in panel["targets"] for legend, values in series.get(t["expr"], [])]
        body = _stat(lines, unit) if panel["type"] == "stat" else _chart(lines, unit, start, end)
        cells.append(f'<div class="panel" style="{place}"><div class="title">{title}</div>{body}</div>')
    board_html = "".join(cells)
    return f"<!doctype html><html><head><meta charset='utf-8'><style>{STYLE}</style></head><body>" + (
        f'<div class="board">{board_html}</div></body></html>'
    )


def height(board: dict[str, Any]) -> int:
    """The page's height in pixels: the grid's rows of 30 px with gaps of 8, and the padding."""
    rows = max(int(panel["gridPos"]["y"]) + int(panel["gridPos"]["h"]) for panel in board["panels"])
    return rows * 38 + 24


def _stat(lines: list[tuple[str, list[list[Any]]]], unit: str) -> str:
    shown = [
        f"<div><b>{_value(float(values[-1][1]), unit)}</b> {html.escape(legend)}</div>" for legend, values in lines
    ]
    return f'<div class="stat">{"".join(shown) or "<div><b>0</b></div>"}</div>'


def _chart(lines: list[tuple[str, list[list[Any]]]], unit: str, start: float, end: float) -> str:
    width, height = 600, 170
    points = [float(v) for _, values in lines for _, v in values if v not in ("NaN", "+Inf", "-Inf")]
    top = max(points, default=1.0) or 1.0

    def x(t: float) -> float:
        return 60 + (t - start) / (end - start) * (width - 65)

    def y(v: float) -> float:
        return height - 15 - v / top * (height - 25)

    paths, legend = [], []
    for n, (name, values) in enumerate(lines[: len(COLOURS)]):
        colour = COLOURS[n % len(COLOURS)]
        xy = [f"{x(float(t)):.1f},{y(float(v)):.1f}" for t, v in values if v not in ("NaN", "+Inf", "-Inf")]
        paths.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{" ".join(xy)}"/>')
        legend.append(f'<span><i style="background:{colour}"></i>{html.escape(name)}</span>')
    axis = "".join(
        f'<text x="56" y="{y(top * f) + 4:.0f}" text-anchor="end" fill="#8e8e8e" font-size="10">'
        f"{_value(top * f, unit)}</text>"
        f'<line x1="60" x2="{width}" y1="{y(top * f):.0f}" y2="{y(top * f):.0f}" stroke="#2c3235"/>'
        for f in (0, 0.5, 1)
    )
    minutes = "".join(
        f'<text x="{x(start + m * 60):.0f}" y="{height - 2}" fill="#8e8e8e" font-size="10">{m}m</text>'
        for m in range(int((end - start) // 60) + 1)
    )
    return (
        f'<svg viewBox="0 0 {width} {height}" preserveAspectRatio="none">{axis}{minutes}{"".join(paths)}</svg>'
        f'<div class="legend">{"".join(legend)}</div>'
    )


def _value(value: float, unit: str) -> str:
    if unit == "bytes":
        return f"{value / 2**20:.0f} MiB"
    if unit == "percentunit":
        return f"{value * 100:.0f}%"
    if unit == "s":
        if value < 1:
            return f"{value * 1000:.0f} ms"
        return f"{value:.1f} s" if value < 100 else f"{value / 60:.0f} min"
    if unit == "ops":
        return f"{value:.1f}/s"
    return f"{value:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=240.0, help="how long the run lasts")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "dashboard.png")
    args = parser.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("no chromium on this machine (Debian's package: chromium)")
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        prometheus, port, start, end = asyncio.run(run(args.seconds, root))
        try:
            series = asyncio.run(_series(port, start, end))
        finally:
            prometheus.terminate()
            prometheus.wait(60)
        drawn = root / "dashboard.html"
        drawn.write_text(page(series, start, end))
        subprocess.run(  # noqa: S603 - Debian's chromium, on our own page
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--no-first-run",
                "--disable-background-networking",
                f"--user-data-dir={root / 'profile'}",
                f"--screenshot={args.out}",
                f"--window-size=1600,{height(json.loads(DASHBOARD.read_text()))}",
                drawn.as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

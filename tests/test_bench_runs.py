"""The benchmarks run: each of the in-process ones, on tiny inputs, prints its figures and exits 0.

A benchmark is not a test of speed (its figures are read, never asserted), but one that fails to run
hides what it measures: ``make bench`` once stopped at its first step, a record that gained a field.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("module", "args", "printed"),
    [
        ("bench.bench_records", ["--count", "200", "--repeat", "1"], "saved per matched event"),
        (
            "bench.bench_rules",
            ["--events", "300", "--repeat", "1", "--stream", "300", "--rounds", "1"],
            "remembering / plain",
        ),
        (
            "bench.bench_replay",
            ["--events", "1000", "--large", "2000", "--repeat", "1", "--parallel-events", "2000"],
            "all cores / one process",
        ),
        pytest.param(
            "bench.bench_start",
            ["--rounds", "1", "--joins", "1", "--scale", "1", "--interval", "1", "--events", "300", "--rate", "100"],
            "every worker acting after",
            marks=pytest.mark.timeout(400),  # workers started and stopped, a dozen times
        ),
        pytest.param(
            "bench.bench_tracing",
            ["--rounds", "1", "--seconds", "2", "--rate", "200", "--partitions", "2"],
            "1 event in 10",
            marks=pytest.mark.timeout(400),  # three workers, one after the other
        ),
    ],
    ids=["records", "rules", "replay", "start", "tracing"],
)
def test_a_benchmark_runs_to_its_last_figure(module: str, args: list[str], printed: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, check=False, timeout=390
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert printed in done.stdout

"""The live worker benchmark's readings: processes read from /proc, its marks, the events handed on."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from bench.bench_worker import Marks, received_messages, summed
from bench.processes import child_pid, cpu_seconds, rss_bytes


def test_cpu_seconds_follow_the_process_clock() -> None:
    start, clock = cpu_seconds(os.getpid()), time.process_time()
    while time.process_time() - clock < 0.3:
        sum(range(10_000))
    assert cpu_seconds(os.getpid()) - start >= 0.2  # /proc counts in clock ticks (10 ms)


def test_rss_grows_with_memory_touched() -> None:
    before = rss_bytes(os.getpid())
    block = bytearray(b"x") * (64 * 2**20)  # every page written
    assert rss_bytes(os.getpid()) - before >= 48 * 2**20
    del block


@pytest.mark.integration
def test_child_pid_finds_the_child_running_a_module() -> None:
    child = subprocess.Popen([sys.executable, "-m", "timeit", "-n", "1", "-r", "1", "input()"], stdin=subprocess.PIPE)
    try:
        assert child_pid(os.getpid(), "timeit") == child.pid
        assert child_pid(os.getpid(), "worker.live.child") is None
    finally:
        child.communicate(b"\n", timeout=30)


def test_marks_measure_the_stretch_between_ten_and_ninety_percent() -> None:
    cpu = iter([(1.0,), (2.0,), (10.0,), (11.0,)])
    marks = Marks(1000, lambda: next(cpu))
    for done, now in ((50, 0.0), (120, 1.0), (500, 2.0), (920, 5.0), (1000, 6.0)):
        marks.update(done, now)
    assert marks.stretch() == 800  # as counted when each mark was seen passed: 120 to 920
    assert marks.sustained() == 200.0
    assert marks.whole() == 1000 / 6.0
    assert marks.cpu_per_event() == ((10.0 - 2.0) / 800,)


def test_marks_seen_passed_at_once_measure_nothing() -> None:
    marks = Marks(1000)
    marks.update(950, 1.0)
    with pytest.raises(SystemExit, match="longer stream"):
        marks.sustained()


PAGE = """\
# HELP azml_worker_messages_received_total Messages received from the hub
# TYPE azml_worker_messages_received_total counter
azml_worker_messages_received_total{partition="0"} 120.0
azml_worker_messages_received_total{partition="1"} 300.0
"""


def test_received_sums_the_messages_every_partition_received() -> None:
    assert received_messages(summed(PAGE)) == 420.0
    assert received_messages(summed("")) == 0.0

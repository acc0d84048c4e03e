"""Bad input, fuzzed: any message body ends in counted outcomes, any rules file loads or fails with a
clear error. The checks are the fuzz targets' (fuzz/targets.py); here hypothesis drives them, and
the coverage-guided runs (atheris) are run briefly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz.targets import ROOT, check_body, check_rules, rules_seeds

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)
#: An envelope's names, so that drawn objects look like events often enough to reach the rules.
NAMES = [
    "id",
    "eventType",
    "subject",
    "eventTime",
    "topic",
    "data",
    "dataVersion",
    "specversion",
    "type",
    "source",
    "time",
]
ENVELOPES = st.dictionaries(st.sampled_from(NAMES), JSON | st.text(max_size=40), max_size=len(NAMES))
EVENT_TYPES = st.sampled_from(
    [f"Microsoft.MachineLearningServices.{name}" for name in ("RunCompleted", "RunStatusChanged", "ModelRegistered")]
)


@given(st.binary(max_size=300))
def test_any_bytes_end_in_counted_outcomes(body: bytes) -> None:
    check_body(body)


@given(st.lists(ENVELOPES, max_size=4) | ENVELOPES)
def test_any_json_shaped_like_events_ends_in_counted_outcomes(document: object) -> None:
    check_body(json.dumps(document).encode())  # integers beyond 64 bits too, which orjson cannot write


@given(
    st.builds(
        lambda t, d: [{"id": "e", "eventType": t, "subject": "s", "eventTime": "2026-11-01T09:00:00Z", "data": d}],
        EVENT_TYPES,
        JSON,
    )
)
def test_events_with_any_data_are_evaluated_and_counted(document: object) -> None:
    check_body(json.dumps(document).encode())  # integers beyond 64 bits too, which orjson cannot write


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=200)
@given(st.data())
def test_any_rules_file_loads_or_fails_with_problems_naming_it(tmp_path: Path, data: st.DataObject) -> None:
    seed = data.draw(st.sampled_from(list(rules_seeds())))
    cut = data.draw(st.integers(0, len(seed)))
    insert = data.draw(
        st.binary(max_size=8) | st.sampled_from([b"\n  - ", b": [", b"{{ ", b"*", b"&a ", b"\t", b"!!python/object "])
    )
    check_rules(seed[:cut] + insert + seed[cut + data.draw(st.integers(0, 20)) :], tmp_path / "rules.yaml")


@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_text_as_a_rules_file_loads_or_fails_with_problems_naming_it(
    tmp_path_factory: pytest.TempPathFactory, text: bytes
) -> None:
    check_rules(text, tmp_path_factory.mktemp("rules") / "rules.yaml")


@pytest.mark.integration
@pytest.mark.parametrize(("target", "runs"), [("bodies", 30_000), ("rules", 3_000)])
def test_a_short_coverage_guided_run_finds_nothing(tmp_path: Path, target: str, runs: int) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fuzz.run", target, f"-runs={runs}", f"-artifact_prefix={tmp_path}/"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Done {runs} runs" in done.stderr

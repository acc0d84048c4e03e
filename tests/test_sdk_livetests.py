"""The azure-eventhub SDK's own live tests, written against Azure, pass against the local hub.

Every test of the pinned source distribution's ``tests/livetest`` runs, each against a local hub of
its own (:mod:`tests.sdk_livetests.conftest_template`), except those listed in ``EXCLUDED`` with their
reasons: the management plane, a Storage account, the fault injector, TLS certificates or a long idle,
which a local hub does not stand in for. Nothing fails, nothing else is skipped.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.sdk_livetests import conftest_template, suite

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
#: The tests mostly wait on the SDK's own sleeps and timeouts (a third of them 30 s or more, the
#: longest 70 s), not on the CPU: 32 side by side take under 3 minutes (8 took more than 8).
WORKERS = 32


def _function(test: str) -> str:
    return test.rsplit("::", 1)[-1].split("[", 1)[0]


@pytest.mark.sdk_livetests
@pytest.mark.timeout(2400)
def test_the_sdks_own_live_tests_pass_against_the_local_hub(
    tmp_path: Path, request: pytest.FixtureRequest, record_property: Callable[[str, object], None]
) -> None:
    store = getattr(request.config, "cache", None)  # None when pytest runs without its cache
    cache = store.mkdir("sdk-livetests") if store is not None else tmp_path
    try:
        sdist = suite.fetch(cache)
    except suite.SuiteError as exc:
        pytest.fail(str(exc))
    root = suite.unpack(sdist, tmp_path)
    report = tmp_path / "report.xml"
    done = suite.run(root, report, "-n", str(WORKERS), timeout=2100)
    assert report.exists(), done.stdout[-5000:] + done.stderr[-5000:]
    outcomes = suite.outcomes(report)
    counts = Counter(outcome.result for outcome in outcomes)
    failures = [f"{o.test}: {o.detail[:300]}" for o in outcomes if o.result in ("failed", "error")]
    assert not failures, "\n".join(failures) + "\n" + done.stdout[-8000:]
    # Every skip is one of ours, with its reason; every exclusion still names a test of the suite.
    skipped = [o for o in outcomes if o.result == "skipped"]
    assert [o.test for o in skipped if not o.detail.startswith("excluded: ")] == []
    functions = {_function(o.test) for o in outcomes}
    assert set(conftest_template.EXCLUDED) <= functions
    excluded_by_fixture = {_function(o.test) for o in skipped} - set(conftest_template.EXCLUDED)
    # The session's summary prints it (tests/conftest.py); a property reaches it from an xdist worker too.
    record_property(
        suite.SUMMARY,
        [
            f"azure-eventhub {suite.VERSION} live tests against the local hub: {counts['passed']} passed, "
            f"{counts['skipped']} excluded, {len(failures)} failed, of {len(outcomes)}",
            *(f"  excluded {name}: {reason}" for name, reason in sorted(conftest_template.EXCLUDED.items())),
            *(f"  excluded {name}: {_fixture_reason(skipped, name)}" for name in sorted(excluded_by_fixture)),
        ],
    )
    assert counts["passed"] >= len(outcomes) - counts["skipped"]


def _fixture_reason(skipped: list[suite.Outcome], name: str) -> str:
    detail = next(o.detail for o in skipped if _function(o.test) == name)
    return re.sub(r"^excluded: ", "", detail.splitlines()[0])


def test_the_docs_list_every_exclusion() -> None:
    text = (ROOT / "docs" / "local-hub.md").read_text()
    listed = set(re.findall(r"^\| `(test_\w+)` \|", text, flags=re.MULTILINE))
    assert listed == set(conftest_template.EXCLUDED)

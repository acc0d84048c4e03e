"""The fuzz targets' checks: what must hold for any input, shared by the coverage-guided runs (atheris)
and the property tests of the suite (hypothesis).

- :func:`check_body`: any message body goes through one partition's core without raising, and every
  event read ends in exactly one counted outcome (the counts add up).
- :func:`check_rules`: any rules file loads into a table or fails with a :class:`~worker.errors.RulesError`
  whose every problem names the file; nothing else is raised.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from worker.actions.secrets import Placeholders
from worker.core.partition import PartitionCore
from worker.core.rules import RulesTable
from worker.errors import Problem, RulesError
from worker.events import Message, Position
from worker.rulefiles.loading import load_rules
from worker.sending import mlevents
from worker.settings import CoreSettings

ROOT = Path(__file__).resolve().parents[1]
RULES_FILES = (ROOT / "rules" / "examples.yaml", ROOT / "rules" / "default.yaml")
#: The example scenarios, loaded once: what bodies are evaluated against.
TABLE: RulesTable = load_rules(list(RULES_FILES), env=Placeholders())


def check_body(body: bytes) -> None:
    core = PartitionCore("0", TABLE, CoreSettings(window=0))
    released = core.receive(Message(body, Position("0", "0", 0, None)))
    released += core.release_all()
    for work in released:
        core.finish(work)
    counts = core.counts()
    problems = counts.check()
    assert not problems, (body[:200], problems)
    assert core.open_messages == 0, body[:200]  # every event finished: the checkpoint passes the message


def check_rules(text: bytes, path: Path) -> None:
    path.write_bytes(text)
    problems: tuple[Problem, ...] = ()
    try:
        load_rules([path], env=Placeholders())
    except RulesError as exc:
        problems = exc.problems
        if not problems:
            raise AssertionError(f"a RulesError without problems for {text[:200]!r}") from exc
    assert all(problem.file == str(path) for problem in problems), (text[:200], problems)


def body_seeds(count: int = 64) -> Iterator[bytes]:
    """Real-looking bodies: Event Grid and CloudEvents Azure ML events, as Event Grid delivers them."""
    schemas: tuple[Literal["eventgrid", "cloudevents"], ...] = ("eventgrid", "cloudevents")
    for schema in schemas:
        options = mlevents.Options(seed=11, schema=schema)
        yield from mlevents.bodies(count // 2, options)


def rules_seeds() -> Iterator[bytes]:
    for path in RULES_FILES:
        yield path.read_bytes()

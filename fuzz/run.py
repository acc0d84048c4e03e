"""Coverage-guided fuzzing (atheris, libFuzzer) of the worker's input edges: message bodies and rules files.

    python -m fuzz.run bodies [LIBFUZZER_OPTIONS...] [CORPUS_DIR...]
    python -m fuzz.run rules  [LIBFUZZER_OPTIONS...] [CORPUS_DIR...]

Without a corpus directory, a new one is seeded (generated Azure ML events, or the shipped rules
files); ``-runs=N`` bounds a run, ``-max_total_time=S`` too. A failing input stops the run and is
written as ``crash-*`` by libFuzzer. The checks are those of :mod:`fuzz.targets`.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["worker"]):
    from fuzz import targets


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] not in ("bodies", "rules"):
        raise SystemExit(__doc__)
    kind, options = argv[1], argv[2:]
    work = Path(tempfile.mkdtemp(prefix=f"fuzz-{kind}-"))
    if not any(not option.startswith("-") for option in options):
        corpus = work / "corpus"
        corpus.mkdir()
        seeds = targets.body_seeds() if kind == "bodies" else targets.rules_seeds()
        for number, seed in enumerate(seeds):
            (corpus / f"seed-{number}").write_bytes(seed)
        options.append(str(corpus))
    rules = work / "rules.yaml"

    def one(data: bytes) -> None:
        if kind == "bodies":
            targets.check_body(data)
        else:
            targets.check_rules(data, rules)

    atheris.Setup([argv[0], *options], one)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)

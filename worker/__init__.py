"""azureml-events-worker: turns Azure Machine Learning events, read from Event Hubs, into actions.

An event comes from the Event Hub (:mod:`worker.live`) or from Capture files (:mod:`worker.replay`),
goes through one partition's pure core (:mod:`worker.core`: decode, guard, dedupe, reorder,
evaluate the rules, count), and the :mod:`worker.driver` runs the actions it matched
(:mod:`worker.actions`; their I/O in :mod:`worker.actions.delivery`); the live worker then
checkpoints (:mod:`worker.checkpoints`). Around them: rules files (:mod:`worker.rulefiles`), the
operators' commands (:mod:`worker.admin`), sending events (:mod:`worker.sending`) and the
development hub (:mod:`worker.localhub`, not in the image). At the top: the command line, the
records and settings every room shares, errors and logging.

The rooms, what each may use, and how an event moves through them: docs/architecture.md; the import
contracts in ``pyproject.toml`` hold them (``lint-imports``).
"""

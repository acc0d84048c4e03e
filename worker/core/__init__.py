"""The pure core: one partition's pipeline without I/O. Messages in; work, outcomes and positions out.

:mod:`~worker.core.decoding` turns bodies into events; :mod:`~worker.core.partition` guards them
(foreign topics, unhandled types, duplicates, with :mod:`~worker.core.bounded`), reorders them per
subject (:mod:`~worker.core.ordering`), evaluates the rules table (:mod:`~worker.core.rules`,
:mod:`~worker.core.filters`), hands rules that remember to :mod:`~worker.core.remember` (what they
act on: :mod:`~worker.core.memos`), counts every event's one outcome
(:mod:`~worker.core.accounting`) and moves the checkpoint position (:mod:`~worker.core.positions`);
:mod:`~worker.core.state` is what it saves beside a checkpoint.

May use: the records and helpers at the package's top (events, keys, errors, settings, moments,
jsontext, masking) and the pure part of :mod:`worker.actions` (what an action is, its templates).
Never: a network, storage, SDK or process library, asyncio, logging, a clock, or anything of the
live worker, replay or the actions' delivery. Time comes in as an argument; what happened goes out
as values. Checked by the import contracts in ``pyproject.toml``.
"""

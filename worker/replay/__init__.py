"""Replay (``worker replay``): Event Hubs Capture files, or dead letters, through the same pipeline.

:mod:`~worker.replay.sources` plans what to read (local files, blob containers, dead-letter lanes),
:mod:`~worker.replay.capture` reads Capture's Avro files into messages, :mod:`~worker.replay.run`
drives each partition's core with the events' enqueued times as the only clock, and
:mod:`~worker.replay.pool` spreads partitions over processes. A dry run can keep what each rule
would have done, :mod:`~worker.replay.backtest`, and render it as one page,
:mod:`~worker.replay.backtest_page`.

May use: the core, the driver, the actions (both parts), the rules files, and the Storage SDK (for
blob sources). Never the live worker, its checkpoints, or the development hub.
"""

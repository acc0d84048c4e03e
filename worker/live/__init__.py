"""The live worker (``worker run``): the Event Hub in, actions and checkpoints out, for as long as it runs.

:mod:`~worker.live.receiver` is the SDK's consumer client, balancing partitions through the
checkpoint store (watched by :mod:`~worker.live.claims`, which holds a partition just claimed until
it settles); it hands each owned partition's messages across the seam,
:mod:`~worker.live.handoff`, to a host: :mod:`~worker.live.inprocess`, or
:mod:`~worker.live.childprocess` and the pipeline process :mod:`~worker.live.child`. There each
partition is a :mod:`~worker.live.partition` task driving the core and deciding when to checkpoint.
:mod:`~worker.live.run` is the worker's lifetime; :mod:`~worker.live.metrics` and
:mod:`~worker.live.health` are what operators scrape.

May use: the core, the driver, the actions (both parts), the checkpoint stores, the rules files,
and the Event Hubs, Storage and identity SDKs. Never the development hub, replay or the operators'
commands.
"""

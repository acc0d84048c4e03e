"""The operators' commands: ``checkpoints show`` and ``reset``, ``dead-letters list`` and ``show``.

:mod:`~worker.admin.checkpoints` reads a consumer group's checkpoints, claims and the hub's
partitions, and moves checkpoints; :mod:`~worker.admin.dead_letters` sums up a dead-letter lane.

May use: the checkpoint stores, replay's sources (a lane is listed as capture files are), the
dead-letter lanes, and the Event Hubs and Storage SDKs. Nothing in the worker imports them but
the command line.
"""

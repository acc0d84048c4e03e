"""Checkpoints: where a consumer group stands in Blob Storage, per partition, and who it is for.

:mod:`~worker.checkpoints.store` writes and reads each partition's checkpoint with the pipeline
state beside it, in the layout the SDK and KEDA read (one compare-and-swap, forward only), and
resets it; :mod:`~worker.checkpoints.standing` (pure) says where a consumer group stands and where
a reset moves it; :mod:`~worker.checkpoints.marks` (pure) says whether a consumer group belongs to
workers that act or to shadow runs; :mod:`~worker.checkpoints.balance` (pure) reads from the
ownership records whether a peer is expected to take a partition, and when a claim has settled.

May use: the core's saved state, the records at the package's top, and the Storage SDK. Used by the
live worker and by the operators' ``checkpoints`` command.
"""

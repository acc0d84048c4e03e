"""Delivering actions: the I/O part of :mod:`worker.actions`, loaded only to run them.

:mod:`~worker.actions.delivery.runner` runs each planned action through its executor (attempts,
timeouts, retries, circuits, per-target limits) to completion or to a dead-letter lane,
:mod:`~worker.actions.delivery.deadletters` (a directory or a blob container);
:mod:`~worker.actions.delivery.services` holds the clients the executors share:
:mod:`~worker.actions.delivery.http_client` (aiohttp), :mod:`~worker.actions.delivery.smtp_client`
(aiosmtplib), :mod:`~worker.actions.delivery.hub_client` (Event Hubs producers) and
:mod:`~worker.actions.delivery.tokens` (azure-identity).

May use: the pure part of the actions, the records at the package's top, and the network, Storage,
Event Hubs and identity libraries. Knows nothing of the worker that calls it.
"""

"""A local Event Hubs-compatible hub: AMQP 1.0 as the azure-eventhub SDK speaks it. A development and test tool.

Modules: ``codec`` and ``frames`` (AMQP bytes), ``messages`` (sections, batches, the hub's
annotations), ``store`` (bounded partition logs, selectors),
``addresses``, ``links`` (what an attach asks for), ``management`` (the management and token
nodes), ``authorization`` (shared access signatures, the keys), ``server`` (proton driven from
asyncio), ``websocket`` (AMQP over WebSocket, sans-IO, on the same port), ``hub``
(:class:`LocalHub`), ``serve`` (the command), ``demo`` (the live worker on an in-process hub).
May use: everything below the command line (the demo runs the live worker on it), python-qpid-proton
and wsproto; only this package imports proton, and only ``server`` and ``hub`` need it. Nothing the
container image ships imports it: the image leaves it out, and the command line loads it only for
``localhub`` and ``demo``.
"""

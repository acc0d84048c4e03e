"""A local Event Hubs-compatible hub: AMQP 1.0 as the azure-eventhub SDK speaks it. A development and test tool.

Modules: ``codec`` and ``frames`` (AMQP bytes), ``messages`` (sections, batches, the hub's
annotations), ``store`` (bounded partition logs, selectors),
``addresses``, ``links`` (what an attach asks for), ``management`` (the management and token
nodes), ``authorization`` (shared access signatures, the keys), ``server`` (proton driven from
asyncio), ``websocket`` (AMQP over WebSocket, sans-IO, on the same port), ``hub``
(:class:`LocalHub`), ``serve`` (the command).
Only this package imports proton, and only ``server`` and ``hub`` need it.
"""

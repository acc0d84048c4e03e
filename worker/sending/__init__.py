"""Sending events to an Event Hub as Event Grid delivers them (``worker send``), and the events to send.

:mod:`~worker.sending.publish` publishes to a hub, local or in Azure; :mod:`~worker.sending.placement`
is where a keyed event lands, as the service places it (the local hub places events with it too);
:mod:`~worker.sending.mlevents` generates realistic Azure ML events (the demo, the benchmarks and
the tests use them).

May use: the records at the package's top and the Event Hubs SDK. Ships in the image, unlike the
development hub: ``send`` publishes to Azure as well.
"""
